"""Server settings: limits and security, with safe defaults.

A token is required whenever the server binds beyond loopback: a speech model
on an open port is a free compute service and a microphone sink for anyone who
finds it. ``check()`` enforces that before anything listens.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lws_core.errors import ConfigError


class ServeSettings(BaseModel):
    """Everything `lws serve` can tune; the CLI maps its options onto these fields."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    token: str | None = Field(None, description="Shared secret; required when binding beyond loopback.")
    allowed_origins: list[str] = Field(default_factory=list, description="Extra allowed Origins (the server's own is always allowed).")
    max_sessions: int = Field(256, ge=1, description="Concurrent engine sessions (a safety cap: measured capacity refuses first).")
    max_connections: int = Field(320, ge=1, description="Open WebSockets, including ones still before `hello`.")
    max_session_s: float = Field(1800.0, gt=0, description="Wall-clock length limit of one session.")
    max_frame_bytes: int = Field(256 * 1024, ge=1024, description="Largest accepted frame; bigger ones get `too_large` and are dropped.")
    transport_max_bytes: int = Field(4 * 1024 * 1024, ge=4096, description="Hard WebSocket message limit (close 1009 above it).")
    hello_timeout_s: float = Field(10.0, gt=0)
    workers: int = Field(1, ge=1, description="Threads for session set-up and tear-down (units run on the batching engine thread).")
    batch: bool = Field(True, description="Advance every ready session in one batched engine step (False: one session at a time).")
    max_batch: int = Field(256, ge=1, description="Most sessions advanced in one batched step.")
    continuous_batching: bool = Field(
        False,
        description="Iteration-level batching: a ready unit joins the shared batch at the next model call instead of "
        "waiting for the running round (a speaking unit's ~40 calls) to end. Needs batch.",
    )
    target_utilization: float = Field(
        0.95, gt=0, le=1.0,
        description="Admission refuses when the cost model predicts the engine thread busier than this. 0.95 since "
        "stop 59 (0.85 before): on the AMD Zen 4 VM, 0.85 refused 11-23 of 192 sessions that the server held with "
        "admission off; 0.95 refused 1, 1 and 17 below it and stayed under the latency bound in three ramps of three, and "
        "1.0 went over it (benchmarks/results/serve.md, stop 59).",
    )
    measured_admission: bool = Field(True, description="Refuse sessions the measured capacity cannot keep real time for (else max_sessions only).")
    max_backlog_s: float = Field(8.0, gt=0, description="A session whose unprocessed audio exceeds this is closed (1013).")
    compression: bool = Field(
        False,
        description="Offer permessage-deflate on the WebSocket. Off by default: PCM16 speech barely compresses, and "
        "deflating every 100 ms frame costs CPU on both ends (benchmarks/results/serve.md, stop 33).",
    )
    warmup: bool = Field(True, description="Run one unit, then one batched round, at start-up: loads kernels and gives the first capacity estimate.")
    warmup_batch: int = Field(
        16,
        ge=1,
        description="Sessions in the start-up batched round (capped by max_sessions). 16 busiest units keep `lws serve` "
        "ready within 3 s on the tiny model; live rounds then refine the fit.",
    )
    warmup_speak_share: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of the warm-up's sessions whose units cost the most a unit can (speak, both text budgets "
        "full); the rest listen to silence. 1.0: the first capacity estimate holds for any model, and live rounds "
        "raise it to the real mix; lower admits more at start-up on the bet that fewer units speak.",
    )

    warmup_spoken: bool = Field(
        True,
        description="Time the warm-up's speaking units at the text this model itself writes and says in its busiest "
        "unit while it answers a spoken question at start-up (about 0.2 s more), not at both budgets full. Why on: "
        "with both budgets full the first estimate sits at a third to a half of capacity, and a ramp was refused "
        "sessions below capacity (at 128 clients in 7 ramps of 7; with this, every session of 64-128 clients in 6 of 6). "
        "The price: its estimate sits near capacity, so a burst at a load the machine does not always hold (192-224 "
        "clients on 2 cores) was admitted whole or nearly, past half a unit of p95 latency, in 4 levels of 12 (2 of 14 with the budgets full), until the "
        "served load lowered the trust (benchmarks/results/serve.md, stops 50-51). Needs the speech synthesizer; "
        "without one, or when the model says nothing, the budgets stay full.",
    )

    @classmethod
    def from_options(cls, **values: object) -> ServeSettings:
        """Validate user-given values; a bad one is a one-line ConfigError naming the option."""
        try:
            return cls(**values).check()
        except ValidationError as e:
            err = e.errors()[0]
            name = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else "settings"
            raise ConfigError(f"{name}: {err['msg']} (got {err.get('input')!r})") from None

    def check(self) -> ServeSettings:
        if not self.token and not is_loopback(self.host):
            raise ConfigError(f"--host {self.host} is beyond loopback: refusing to start without --token (or LWS_SERVE_TOKEN)")
        if self.max_frame_bytes > self.transport_max_bytes:
            raise ConfigError("max_frame_bytes must not exceed transport_max_bytes")
        return self


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname that may resolve anywhere: treat as public

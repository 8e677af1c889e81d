"""The server's Prometheus metrics, through ``prometheus_client``, added up over ``lws serve --processes N``.

Why the library: its exposition is the reference one, and its multiprocess mode is what N server processes need.
Each process writes its values to memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR`` (set by the supervisor
before it spawns them), and whichever process answers a scrape reads every process's files: counters and
session gauges are sums over the processes, the recent-unit quantiles (RTF, unit latency) are the slowest
process's. Without the variable (one process) the metrics live in a registry of the server's own, so several
servers in one Python process (the tests) never share them.

The names are those of the hand-written exposition this replaces (``lws_units_total``, ``lws_rtf{quantile=...}``,
``lws_active_sessions`` ...), so dashboards keep working; counters also get prometheus_client's ``_created``.
"""

from __future__ import annotations

import math
import os

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client import multiprocess as _mp

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# server gauges that add up over processes (capacity, queues, counts); the others (costs, RTF, means) take the
# slowest process's value
SUMMED_EXTRAS = frozenset(
    {"capacity_sessions", "admission_limit_sessions", "max_sessions", "engine_queue", "engine_rounds", "engine_batched_forwards", "engine_block_attention_forwards"}
)


def multiprocess_dir() -> str | None:
    """The shared folder of ``lws serve --processes N``'s metrics, when this is one of its processes."""
    return os.environ.get(MULTIPROC_ENV) or None


class PromMetrics:
    """prometheus_client metrics of one server (see the module doc)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.shared = multiprocess_dir() is not None
        r = self.registry
        self.active = Gauge("lws_active_sessions", "Engine sessions now streaming.", registry=r, multiprocess_mode="livesum")
        self.connections = Gauge("lws_open_connections", "Open WebSocket connections.", registry=r, multiprocess_mode="livesum")
        self.sessions = Counter("lws_sessions", "Sessions admitted since start.", registry=r)
        self.units = Counter("lws_units", "Audio units processed.", registry=r)
        self.audio_in = Counter("lws_audio_in_seconds", "User audio processed (s).", registry=r)
        self.audio_out = Counter("lws_audio_out_seconds", "Speech audio sent (s).", registry=r)
        self.rtf = Gauge("lws_rtf", "Compute time per unit / unit length, recent units (slowest process).", ["quantile"],
                         registry=r, multiprocess_mode="livemax")
        self.latency = Gauge("lws_unit_latency_seconds", "Last sample of a unit received -> its events sent, recent units "
                             "(slowest process).", ["quantile"], registry=r, multiprocess_mode="livemax")
        self.refusals = Counter("lws_refusals", "Connections refused, all reasons.", registry=r)
        self.refusals_by = Counter("lws_refusals_by_reason", "Connections refused, by reason.", ["reason"], registry=r)
        self.errors = Counter("lws_errors", "Error events sent, by code.", ["code"], registry=r)
        self.handoffs = Counter("lws_connections_handed_off", "New connections passed to the server process with the "
                                "most room (lws serve --processes N).", registry=r)
        self._extra: dict[str, Gauge] = {}

    def quantiles(self, rtf: dict[str, float | None], latency_s: dict[str, float | None]) -> None:
        """Set the recent-unit quantile gauges (keys "0.5", "0.95"); None (nothing measured yet) as NaN, except when
        shared, where a NaN would poison the maximum over processes (a process with no unit yet is left out)."""
        for gauge, values in ((self.rtf, rtf), (self.latency, latency_s)):
            for q, v in values.items():
                if v is not None or not self.shared:
                    gauge.labels(quantile=q).set(float("nan") if v is None else v)

    def extras(self, values: dict[str, float]) -> None:
        """Server gauges (capacity, cost model, queues: ``Server._gauges``), made on first sight."""
        for name, v in values.items():
            g = self._extra.get(name)
            if g is None:
                mode = "livesum" if name in SUMMED_EXTRAS else "livemax"
                g = self._extra[name] = Gauge(f"lws_{name}", name.replace("_", " ") + ".", registry=self.registry, multiprocess_mode=mode)
            if not (self.shared and math.isnan(v)):
                g.set(v)

    def exposition(self) -> bytes:
        """The text exposition: this process's registry, or every server process's values when shared."""
        if not self.shared:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        _mp.MultiProcessCollector(merged)
        return generate_latest(merged)


def process_gone(pid: int) -> None:
    """Drop a finished server process's live gauges from the shared folder (its counters stay counted)."""
    if multiprocess_dir() is not None:
        _mp.mark_process_dead(pid)

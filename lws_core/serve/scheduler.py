"""Engine scheduling, admission control and metrics.

Engine steps are CPU/GPU bound and release the GIL inside torch, so they run on
a small thread pool while the event loop keeps every socket responsive. Each
session submits at most one unit at a time (its next unit waits for the
previous one), so the pool's FIFO queue is round-robin across sessions and
earliest-deadline-first within the pool: no session can starve another by
sending audio faster.

Admission uses *measured* capacity: the recent compute time per unit divided by
the unit length is the real-time factor of one session; N sessions on W
workers need N * RTF / W of the machine. A new session is refused (close 1013)
when that would pass ``target_utilization``, or when ``max_sessions`` is
reached. The estimate comes from the warm-up step and then from live traffic,
so it tracks whatever else the machine is doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


class Metrics:
    """Counters and recent per-unit figures; read by /metrics and /healthz. Thread-safe."""

    def __init__(self, window: int = 2000) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.active_sessions = 0
        self.open_connections = 0
        self.sessions_total = 0
        self.units_total = 0
        self.audio_in_s = 0.0
        self.audio_out_s = 0.0
        self.refusals: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._rtf: deque[float] = deque(maxlen=window)
        self._latency: deque[float] = deque(maxlen=window)

    def unit(self, compute_s: float, unit_s: float, latency_s: float, speech_s: float) -> None:
        with self._lock:
            self.units_total += 1
            self.audio_in_s += unit_s
            self.audio_out_s += speech_s
            self._rtf.append(compute_s / unit_s)
            self._latency.append(latency_s)

    def refuse(self, reason: str) -> None:
        with self._lock:
            self.refusals[reason] += 1

    def error(self, code: str) -> None:
        with self._lock:
            self.errors[code] += 1

    @staticmethod
    def _pct(values: deque[float], q: float) -> float | None:
        return float(np.percentile(np.fromiter(values, float), q)) if values else None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "uptime_s": round(time.time() - self.started, 1),
                "active_sessions": self.active_sessions,
                "open_connections": self.open_connections,
                "sessions_total": self.sessions_total,
                "units_total": self.units_total,
                "audio_in_s": round(self.audio_in_s, 2),
                "audio_out_s": round(self.audio_out_s, 2),
                "rtf_p50": self._pct(self._rtf, 50),
                "rtf_p95": self._pct(self._rtf, 95),
                "unit_latency_ms_p50": _ms(self._pct(self._latency, 50)),
                "unit_latency_ms_p95": _ms(self._pct(self._latency, 95)),
                "refusals": dict(self.refusals),
                "refusals_total": sum(self.refusals.values()),
                "errors": dict(self.errors),
            }

    def prometheus(self, extra: dict[str, float]) -> str:
        """Prometheus text exposition format (version 0.0.4)."""
        s = self.snapshot()
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, value: float | None, labels: str = "") -> None:
            if f"# TYPE lws_{name} " not in "\n".join(lines):
                lines.append(f"# HELP lws_{name} {help_}")
                lines.append(f"# TYPE lws_{name} {kind}")
            lines.append(f"lws_{name}{labels} {'NaN' if value is None else value}")

        metric("active_sessions", "gauge", "Engine sessions now streaming.", s["active_sessions"])
        metric("open_connections", "gauge", "Open WebSocket connections.", s["open_connections"])
        metric("sessions_total", "counter", "Sessions admitted since start.", s["sessions_total"])
        metric("units_total", "counter", "Audio units processed.", s["units_total"])
        metric("audio_in_seconds_total", "counter", "User audio processed (s).", s["audio_in_s"])
        metric("audio_out_seconds_total", "counter", "Speech audio sent (s).", s["audio_out_s"])
        for q in ("50", "95"):
            metric("rtf", "gauge", "Compute time per unit / unit length, recent units.", s[f"rtf_p{q}"], f'{{quantile="0.{q}"}}')
        for q in ("50", "95"):
            v = s[f"unit_latency_ms_p{q}"]
            metric("unit_latency_seconds", "gauge", "Last sample of a unit received -> its events sent.", None if v is None else v / 1000, f'{{quantile="0.{q}"}}')
        metric("refusals_total", "counter", "Connections refused, all reasons.", s["refusals_total"])
        for reason, n in sorted(s["refusals"].items()):
            metric("refusals_by_reason_total", "counter", "Connections refused, by reason.", n, f'{{reason="{reason}"}}')
        for code, n in sorted(s["errors"].items()):
            metric("errors_total", "counter", "Error events sent, by code.", n, f'{{code="{code}"}}')
        for k, v in extra.items():
            metric(k, "gauge", k.replace("_", " ") + ".", v)
        return "\n".join(lines) + "\n"


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


class Scheduler:
    """A worker pool for engine calls plus the capacity estimate used for admission."""

    def __init__(self, workers: int, unit_s: float, target_utilization: float, alpha: float = 0.1) -> None:
        self.workers = workers
        self.unit_s = unit_s
        self.target = target_utilization
        self.alpha = alpha
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lws-engine")
        self._rtf_ema: float | None = None
        self._queued = 0
        self._lock = threading.Lock()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        with self._lock:
            self._queued += 1
        try:
            return await loop.run_in_executor(self._pool, fn, *args)
        finally:
            with self._lock:
                self._queued -= 1

    def submit(self, fn: Callable[[], object]) -> None:
        """Fire and forget on the pool (FIFO: after anything already queued); ignored after shutdown."""
        with contextlib.suppress(RuntimeError):
            self._pool.submit(fn)

    def observe(self, compute_s: float) -> None:
        """Feed the compute time of one unit (measured inside the worker, so queueing is excluded)."""
        rtf = compute_s / self.unit_s
        with self._lock:
            self._rtf_ema = rtf if self._rtf_ema is None else (1 - self.alpha) * self._rtf_ema + self.alpha * rtf

    @property
    def rtf(self) -> float | None:
        return self._rtf_ema

    @property
    def queued(self) -> int:
        return self._queued

    def utilization(self, sessions: int) -> float:
        """Predicted share of the workers that ``sessions`` real-time sessions need."""
        if self._rtf_ema is None:
            return 0.0
        return sessions * self._rtf_ema / self.workers

    def capacity(self) -> int | None:
        """Sessions that fit under the target utilization (None before any measurement)."""
        if not self._rtf_ema:
            return None
        return int(self.target * self.workers / self._rtf_ema)

    def admits(self, active: int) -> bool:
        """The first session is always admitted (a slow machine still serves one user, just late)."""
        return active == 0 or self._rtf_ema is None or self.utilization(active + 1) <= self.target

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

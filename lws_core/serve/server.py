"""The realtime server: one Engine, one StreamingSession per WebSocket, the web page, health and metrics.

Per connection two tasks run: the *receiver* validates frames, turns PCM16 at the
client's rate into 16 kHz units and queues them; the *processor* feeds units to
the engine through the shared :class:`Scheduler` and sends the events. Splitting
them keeps pings, errors and limits responsive while a unit is computing, and
lets the receiver measure how far behind the engine a session is.

Nothing a client sends is ever used as a path: the only files served are the
packaged page under ``static/`` (Starlette's StaticFiles, which refuses
traversal), and the model directory is fixed at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.websockets import WebSocketDisconnect, WebSocketState

from lws_core.errors import LWSError
from lws_core.serve import protocol as P
from lws_core.serve.render import render_markdown
from lws_core.serve.scheduler import Batcher, Metrics, Scheduler
from lws_core.serve.settings import ServeSettings

STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; media-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class _Closed(Exception):
    """Raised inside a connection to end it with a close code after an error event."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class _Work:
    kind: str  # "unit" | "reset" | "end"
    audio: np.ndarray | None = None
    arrived: float = 0.0


@dataclass
class _Conn:
    """One connection's streaming state (touched only from the event loop)."""

    id: str
    ws: WebSocket
    sample_rate: int
    system: str | None
    started: float
    queue: asyncio.Queue[_Work] = field(default_factory=asyncio.Queue)
    carry: bytes = b""
    pending: list[np.ndarray] = field(default_factory=list)
    pending_n: int = 0
    resampler: Any = None
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    units_queued: int = 0
    session: Any = None  # the engine's StreamingSession


class LWSServer:
    """Build with an :class:`~lws_core.engine.Engine` and settings; ``app`` is the ASGI application."""

    def __init__(self, engine, settings: ServeSettings | None = None, model_name: str = "") -> None:  # noqa: ANN001 - Engine
        self.engine = engine
        self.settings = settings or ServeSettings()
        spec = engine.model.spec
        self.unit_s: float = spec.unit_s
        self.unit_samples: int = spec.unit_samples
        self.sample_rate: int = spec.sample_rate
        self.model_name = model_name or spec.preset
        self.metrics = Metrics()
        self.metrics.gauges = self._gauges
        self.scheduler = Scheduler(self.settings.workers, self.unit_s, self.settings.target_utilization)
        # ``lws serve --processes N``: the processes' mean admission limit, each admitting at most that (set by
        # lws_core.serve.processes; Balancer.mean_limit says why); None for one process
        self.share_limit: Callable[[], float] | None = None
        # (write, say) tokens of the warm-up's speaking units when sized to the model's own (ServeSettings.warmup_spoken)
        self.warmup_tokens: tuple[int, int] | None = None
        self.batcher = Batcher(
            engine, self.scheduler, self.settings.max_batch, batch=self.settings.batch,
            continuous=self.settings.continuous_batching,
        )
        self.app = self._build_app()

    # -- HTTP ------------------------------------------------------------------------------
    def _build_app(self) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            if self.settings.warmup:
                await self.scheduler.run(self._warmup)
            self.metrics.refresh()  # capacity and costs known: in the shared metrics before any unit or scrape
            yield
            self.batcher.shutdown()
            self.scheduler.shutdown()

        app = FastAPI(title="LWS realtime server", version=P.PROTOCOL_VERSION, lifespan=lifespan, docs_url=None, redoc_url=None)

        @app.get("/", include_in_schema=False)
        async def index() -> Response:
            return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})

        @app.get("/healthz")
        async def healthz() -> JSONResponse:
            return JSONResponse(
                {
                    "status": "ok",
                    "protocol": P.PROTOCOL_VERSION,
                    "model": self.model_name,
                    "unit_s": self.unit_s,
                    "active_sessions": self.metrics.active_sessions,
                    "max_sessions": self.settings.max_sessions,
                    "capacity_sessions": self.scheduler.capacity(),
                    "auth": bool(self.settings.token),
                }
            )

        @app.get("/metrics")
        async def metrics(format: str = "prometheus") -> Response:  # noqa: A002 - query parameter name
            if format == "json":  # NaN (no RTF measured yet: no warm-up, no unit) is not JSON: null
                extra = self._gauges()
                # ``pid``: which process answered (``lws serve --processes N``: each answers for itself)
                return JSONResponse(
                    {**self.metrics.snapshot(), "pid": os.getpid(), **{k: v if math.isfinite(v) else None for k, v in extra.items()}}
                )
            return PlainTextResponse(self.metrics.prometheus(), media_type="text/plain; version=0.0.4")

        @app.websocket("/ws")
        async def ws_endpoint(ws: WebSocket) -> None:
            await self._handle(ws)

        app.mount("/static", StaticFiles(directory=STATIC), name="static")
        return app

    def own_limit(self) -> float:
        """The most sessions this server would hold now by its own limits and, with measured admission, what its
        scheduler admits."""
        s = self.settings
        cap = self.scheduler.limit() if s.measured_admission else None
        return float(min(s.max_sessions, s.max_connections, cap if cap is not None else math.inf))

    def session_limit(self) -> float:
        """:meth:`own_limit`, and with ``lws serve --processes N`` and measured admission at most the processes'
        mean (:meth:`.balance.Balancer.mean_limit`); new connections are balanced by it (:mod:`.balance`)."""
        share = self.share_limit() if self.share_limit is not None and self.settings.measured_admission else math.inf
        return min(self.own_limit(), share)

    def _gauges(self) -> dict[str, float]:
        cap = self.scheduler.capacity()
        return {
            "capacity_sessions": float(min(cap, self.settings.max_sessions)) if cap is not None else float(self.settings.max_sessions),
            "max_sessions": float(self.settings.max_sessions),
            "engine_rtf_ema": self.scheduler.rtf if self.scheduler.rtf is not None else float("nan"),
            "admission_limit_sessions": self.session_limit(),
            "admission_latency_excess_s": self.scheduler.latency_excess,
            "admission_proven_sessions": float(self.scheduler.proven),
            "admission_trusted_sessions": float(self.scheduler.trusted()),
            "engine_queue": float(self.scheduler.queued + self.batcher.queued),
            "engine_rounds": float(self.batcher.rounds),
            "engine_batch_mean": float(sum(self.batcher.round_sizes) / len(self.batcher.round_sizes)) if self.batcher.round_sizes else float("nan"),
            **self._cost_gauges(),
            **self._attention_gauges(),
        }

    def _attention_gauges(self) -> dict[str, float]:
        """How many of the fused path's multi-session forwards attended over pool blocks (docs/engine.md)."""
        fast = self.engine.fast_path
        if fast is None:
            return {}
        return {"engine_batched_forwards": float(fast.batched_forwards), "engine_block_attention_forwards": float(fast.pooled_rounds)}

    def _cost_gauges(self) -> dict[str, float]:
        cm = self.scheduler.cost_model
        if cm is None:
            return {"engine_round_fixed_s": float("nan"), "engine_round_per_session_s": float("nan"), "engine_slowdown": float("nan")}
        w, s = self.warmup_tokens or (float("nan"), float("nan"))  # nan: both budgets full
        return {"engine_round_fixed_s": cm[0], "engine_round_per_session_s": cm[1], "engine_slowdown": cm[2],
                "warmup_write_tokens": float(w), "warmup_say_tokens": float(s)}

    def _warmup(self) -> None:
        """One unit alone (loads kernels), then a timed round of 1 unit and one of ``warmup_batch`` units:
        the admission's cost model (see :mod:`lws_core.serve.scheduler`).

        ``warmup_speak_share`` of the sessions (and the lone one, when above 0) decode the busiest unit
        there is (:class:`~lws_core.engine.policies.BusiestUnit`), the rest listen to silence. With
        ``warmup_spoken`` that unit writes and says as many tokens as the model's own busiest unit on a spoken
        question (:func:`~lws_core.engine.policies.busiest_spoken_unit`), not both budgets full. Why:
        clients that arrive together are all admitted on this first estimate, before a live round of the
        real model has rescaled it; an estimate from silent units let a talkative model take more sessions
        than it kept within half a unit (benchmarks/results/serve.md, stop 38). Each round is timed once
        (twice took `lws serve` past its 3 s start-up goal); live rounds correct a one-off stall."""
        from lws_core.engine.policies import BusiestUnit, busiest_spoken_unit

        silence = np.zeros(self.unit_samples, dtype=np.float32)
        share = self.settings.warmup_speak_share
        busy = None
        if share > 0:
            self.warmup_tokens = busiest_spoken_unit(self.engine) if self.settings.warmup_spoken else None
            busy = BusiestUnit(self.engine, *(self.warmup_tokens or (None, None)))
        with self.engine.session(policy=busy) as sess:
            sess.step(silence)
        n = min(self.settings.warmup_batch, self.settings.max_sessions) if self.settings.batch else 1
        speakers = max(1, round(share * n)) if share > 0 else 0

        def timed(count: int) -> float:
            sessions = [self.engine.session(policy=busy if i < speakers else None) for i in range(count)]
            try:
                t0 = time.perf_counter()
                self.engine.step_many([(s, silence) for s in sessions])
                return time.perf_counter() - t0
            finally:
                for s in sessions:
                    s.close()

        one = timed(1)
        many = timed(n) if n > 1 else one
        self.scheduler.set_cost_model(one, many, n)

    # -- WebSocket -------------------------------------------------------------------------
    async def _handle(self, ws: WebSocket) -> None:
        s, m = self.settings, self.metrics
        offered = ws.scope.get("subprotocols") or []
        await ws.accept(subprotocol=P.PROTOCOL_VERSION if P.PROTOCOL_VERSION in offered else None)
        if m.open_connections >= s.max_connections:
            m.refuse("connections")
            await self._close(ws, P.CLOSE_TRY_AGAIN, "busy", f"server has {s.max_connections} open connections; try again later")
            return
        m.open_connections += 1
        conn: _Conn | None = None
        try:
            if not self._origin_ok(ws):
                m.refuse("origin")
                raise _Closed(P.CLOSE_POLICY, "origin")
            pre_token = self._request_token(ws)
            if s.token and pre_token is not None and not _same(pre_token, s.token):
                m.refuse("unauthorized")
                raise _Closed(P.CLOSE_POLICY, "unauthorized")
            conn = await self._hello(ws, authed=not s.token or pre_token is not None)
            await self._stream(conn)
        except _Closed as c:
            await self._close(ws, c.code, c.reason, P.ERRORS.get(c.reason, c.reason))
        except WebSocketDisconnect:
            pass
        finally:
            m.open_connections -= 1
            if conn is not None:
                m.active_sessions -= 1

    def _origin_ok(self, ws: WebSocket) -> bool:
        """Browsers always send Origin; allow our own host and the configured ones. Non-browser clients send none."""
        origin = ws.headers.get("origin")
        if origin is None or "*" in self.settings.allowed_origins:
            return True
        if origin.rstrip("/") in {o.rstrip("/") for o in self.settings.allowed_origins}:
            return True
        return urlsplit(origin).netloc.lower() == ws.headers.get("host", "").lower()

    @staticmethod
    def _request_token(ws: WebSocket) -> str | None:
        auth = ws.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return ws.query_params.get("token")

    async def _hello(self, ws: WebSocket, authed: bool) -> _Conn:
        """Wait for a valid hello (errors on bad ones), authenticate, admit, open the engine session."""
        s, m = self.settings, self.metrics
        deadline = time.monotonic() + s.hello_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Closed(P.CLOSE_PROTOCOL, "hello_timeout")
            try:
                msg = await asyncio.wait_for(ws.receive(), remaining)
            except TimeoutError:
                raise _Closed(P.CLOSE_PROTOCOL, "hello_timeout") from None
            if msg["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(msg.get("code", 1000))
            try:
                payload = msg.get("bytes")
                if payload is not None:  # the size limit first: the same frame gets the same error before and after hello
                    if len(payload) > s.max_frame_bytes:
                        raise P.ProtocolError("too_large", f"binary frame of {len(payload)} bytes over max_frame_bytes={s.max_frame_bytes}")
                    raise P.ProtocolError("not_ready", "send a hello before audio")
                data = P.parse_text(msg.get("text") or "")
                if data["type"] == "ping":
                    await self._send_json(ws, None, {"type": "pong", "t": data.get("t")})
                    continue
                if data["type"] != "hello":
                    raise P.ProtocolError("not_ready", f"{data['type']!r} before hello")
                hello = P.parse_hello(data)
            except P.ProtocolError as e:
                m.error(e.code)
                await self._send_json(ws, None, e.event())
                continue
            if s.token and not authed and (hello.token is None or not _same(hello.token, s.token)):
                m.refuse("unauthorized")
                raise _Closed(P.CLOSE_POLICY, "unauthorized")
            if m.active_sessions >= s.max_sessions:
                m.refuse("max_sessions")
                raise _Closed(P.CLOSE_TRY_AGAIN, "busy")
            if s.measured_admission and (
                not self.scheduler.admits(m.active_sessions)
                or (m.active_sessions and self.share_limit is not None and m.active_sessions + 1 > self.share_limit())
            ):
                m.refuse("capacity")
                raise _Closed(P.CLOSE_TRY_AGAIN, "busy")
            m.active_sessions += 1  # no await since the checks: admission is atomic on the event loop
            try:
                sess = await self.scheduler.run(self.engine.session, hello.system)
            except LWSError as e:
                m.active_sessions -= 1
                m.error("bad_message")
                await self._send_json(ws, None, P.error_event("bad_message", f"hello.system: {e}"))
                continue
            except BaseException:
                m.active_sessions -= 1
                raise
            m.sessions_total += 1
            conn = _Conn(uuid.uuid4().hex[:12], ws, hello.sample_rate, hello.system, time.monotonic())
            conn.session = sess
            if hello.sample_rate != self.sample_rate:
                conn.resampler = _resampler(hello.sample_rate, self.sample_rate)
            await self._send_json(ws, conn, self._ready(conn))
            return conn

    def _ready(self, conn: _Conn) -> dict[str, Any]:
        s = self.settings
        return {
            "type": "ready",
            "version": P.PROTOCOL_VERSION,
            "session": conn.id,
            "model": self.model_name,
            "unit_s": self.unit_s,
            "input_sample_rate": conn.sample_rate,
            "output_sample_rate": P.OUTPUT_SAMPLE_RATE,
            "audio_format": "pcm16le",
            "limits": {
                "max_frame_bytes": s.max_frame_bytes,
                "max_session_s": s.max_session_s,
                "max_backlog_s": s.max_backlog_s,
            },
        }

    async def _stream(self, conn: _Conn) -> None:
        processor = asyncio.create_task(self._process(conn))
        receiver = asyncio.create_task(self._receive(conn))
        try:
            done, _ = await asyncio.wait({processor, receiver}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # re-raise _Closed / disconnects
            if processor in done:  # `end` handled: normal close
                await self._close(conn.ws, P.CLOSE_NORMAL, "", "")
        finally:
            for t in (processor, receiver):
                t.cancel()
            for t in (processor, receiver):
                with contextlib.suppress(BaseException):
                    await t
            # a cancelled step may still be running in a worker: close after it, on the pool, never under it
            self.scheduler.submit(conn.session.close)

    async def _receive(self, conn: _Conn) -> None:
        s, m = self.settings, self.metrics
        while True:
            remaining = s.max_session_s - (time.monotonic() - conn.started)
            if remaining <= 0:
                raise _Closed(P.CLOSE_POLICY, "session_limit")
            try:
                msg = await asyncio.wait_for(conn.ws.receive(), remaining)
            except TimeoutError:
                raise _Closed(P.CLOSE_POLICY, "session_limit") from None
            if msg["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(msg.get("code", 1000))
            try:
                payload = msg.get("bytes")
                if payload is not None:
                    if len(payload) > s.max_frame_bytes:
                        raise P.ProtocolError("too_large", f"binary frame of {len(payload)} bytes over max_frame_bytes={s.max_frame_bytes}")
                    self._audio(conn, payload)
                    if conn.units_queued * self.unit_s > s.max_backlog_s:
                        m.refuse("behind")
                        raise _Closed(P.CLOSE_TRY_AGAIN, "behind")
                    continue
                data = P.parse_text(msg.get("text") or "")
                kind = data["type"]
                if kind == "ping":
                    await self._send_json(conn.ws, conn, {"type": "pong", "t": data.get("t")})
                elif kind == "reset":
                    conn.carry, conn.pending, conn.pending_n = b"", [], 0
                    if conn.resampler is not None:
                        conn.resampler = _resampler(conn.sample_rate, self.sample_rate)
                    conn.queue.put_nowait(_Work("reset"))
                elif kind == "end":
                    self._flush(conn)
                    conn.queue.put_nowait(_Work("end"))
                    await asyncio.Event().wait()  # the processor finishes the queue and ends the connection
                elif kind == "hello":
                    raise P.ProtocolError("already_ready", "session already started; send reset to start over")
                else:
                    raise P.ProtocolError("unknown_type", f"unknown message type {kind[:40]!r}")
            except P.ProtocolError as e:
                m.error(e.code)
                await self._send_json(conn.ws, conn, e.event())

    def _audio(self, conn: _Conn, payload: bytes) -> None:
        """PCM16 bytes at the client's rate -> queued 16 kHz units (any frame size; odd bytes carried)."""
        data = conn.carry + payload
        even = len(data) - len(data) % 2
        conn.carry = data[even:]
        if even == 0:
            return
        audio = np.frombuffer(data[:even], dtype="<i2").astype(np.float32) / 32768.0
        if conn.resampler is not None:
            audio = conn.resampler.resample_chunk(audio)
        self._push(conn, audio)

    def _push(self, conn: _Conn, audio: np.ndarray) -> None:
        if audio.size:
            conn.pending.append(audio)
            conn.pending_n += audio.size
        n = self.unit_samples
        while conn.pending_n >= n:
            buf = np.concatenate(conn.pending)
            unit, rest = buf[:n], buf[n:]
            conn.pending, conn.pending_n = ([rest] if rest.size else []), rest.size
            conn.units_queued += 1
            conn.queue.put_nowait(_Work("unit", unit, time.monotonic()))

    def _flush(self, conn: _Conn) -> None:
        """On `end`: the resampler's tail and a last partial unit (zero-padded by the engine)."""
        if conn.resampler is not None:
            self._push(conn, conn.resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        if conn.pending_n:
            buf = np.concatenate(conn.pending)
            conn.pending, conn.pending_n = [], 0
            conn.units_queued += 1
            conn.queue.put_nowait(_Work("unit", buf, time.monotonic()))

    async def _process(self, conn: _Conn) -> None:
        state: str | None = None
        units = 0
        while True:
            work = await conn.queue.get()
            if work.kind == "end":
                await self._send_json(conn.ws, conn, {"type": "end", "units": units, "written_chars": len(conn.session.document)})
                return
            if work.kind == "reset":
                await self.scheduler.run(conn.session.close)
                conn.session = await self.scheduler.run(self.engine.session, conn.system)
                state, units = None, 0
                await self._send_json(conn.ws, conn, {"type": "reset"})
                continue
            try:
                out = await self.batcher.step(conn.session, work.audio)
            except Exception as e:  # a bug in the engine: end this session only, never the server
                self.metrics.error("engine")
                raise _Closed(P.CLOSE_INTERNAL, "engine") from e
            conn.units_queued -= 1
            units += 1
            await self._send_unit(conn, out, work, state)
            state = out.state

    async def _send_unit(self, conn: _Conn, out, work: _Work, prev_state: str | None) -> None:  # noqa: ANN001 - UnitOutput
        from lws_core.audio import pcm16_bytes

        compute_s = out.timings.get("total_ms", 0.0) / 1000  # the unit's wall time inside its batched round
        speech_s = out.speech.size / self.sample_rate
        # state first: the page stops playback the moment the model yields, before anything else arrives
        if out.state != prev_state or out.barge_in:
            await self._send_json(conn.ws, conn, {"type": "state", "index": out.index, "state": out.state, "barge_in": out.barge_in})
        if out.write:
            doc: str = conn.session.document
            await self._send_json(conn.ws, conn, {"type": "write", "index": out.index, "text": out.write})
            await self._send_json(conn.ws, conn, {"type": "document", "index": out.index, "chars": len(doc), "html": render_markdown(doc)})
        if out.say:
            await self._send_json(conn.ws, conn, {"type": "say", "index": out.index, "text": out.say, "spoken": out.state == "speak"})
        latency_s = time.monotonic() - work.arrived
        await self._send_json(
            conn.ws,
            conn,
            {
                "type": "unit",
                "index": out.index,
                "state": out.state,
                "eot": out.eot,
                "forced": out.forced,
                "barge_in": out.barge_in,
                "speech_s": round(speech_s, 3),
                "words": [{"text": w.text, "start": round(w.start, 3), "end": round(w.end, 3)} for w in out.speech_words],
                "timings": {k: round(v, 2) for k, v in out.timings.items()},
                "latency_ms": round(latency_s * 1000, 1),
                "backlog_units": conn.units_queued,
            },
        )
        if out.speech.size:
            async with conn.send_lock:
                await conn.ws.send_bytes(P.pack_audio(out.index, pcm16_bytes(out.speech)))
        self.metrics.unit(compute_s, self.unit_s, latency_s, speech_s)
        self.scheduler.observe_latency(latency_s, self.metrics.active_sessions)

    async def _send_json(self, ws: WebSocket, conn: _Conn | None, event: dict[str, Any]) -> None:
        if conn is None:
            await ws.send_json(event)
            return
        async with conn.send_lock:
            await ws.send_json(event)

    async def _close(self, ws: WebSocket, code: int, reason: str, message: str) -> None:
        if ws.client_state != WebSocketState.CONNECTED or ws.application_state != WebSocketState.CONNECTED:
            return
        with contextlib.suppress(Exception):
            if reason:
                self.metrics.error(reason)
                await ws.send_json(P.error_event(reason, message, fatal=True))
            await ws.close(code=code, reason=reason[:120])


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _resampler(from_sr: int, to_sr: int):  # noqa: ANN202 - soxr.ResampleStream
    """Streaming resampler: chunk boundaries leave no clicks (a one-shot resample per frame would)."""
    import soxr

    return soxr.ResampleStream(from_sr, to_sr, 1, dtype="float32")


def create_app(engine, settings: ServeSettings | None = None, model_name: str = "") -> FastAPI:  # noqa: ANN001 - Engine
    """The ASGI app for an already-loaded engine (tests and embedding use this; the CLI calls it too)."""
    server = LWSServer(engine, settings, model_name)
    app = server.app
    app.state.lws = server
    return app


def uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    """The transport settings of ``uvicorn.run`` / ``uvicorn.Config`` for these settings (the tests' server
    takes the same ones)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "ws_max_size": settings.transport_max_bytes,
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        "ws_per_message_deflate": settings.compression,  # off: a client that offers deflate is answered without it
    }


def run_server(engine, settings: ServeSettings, model_name: str = "") -> None:  # noqa: ANN001 - Engine
    """Serve until interrupted (uvicorn, one process: the model is loaded once)."""
    import uvicorn

    settings.check()
    app = create_app(engine, settings, model_name)
    uvicorn.run(app, **uvicorn_options(settings), log_level="info", access_log=False)

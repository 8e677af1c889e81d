"""`lws serve --processes N`: N server processes on one port, each with its own engine.

Why processes: one engine thread runs a batched round in Python for every ready session, and that Python
holds the GIL, so one server process uses about one core however many it has (benchmarks/results/serve.md:
67-75 real-time sessions on a 2-core machine, one core busy). Sessions are independent, so N processes each
serving their own sessions use N cores; the model (a few MB for the tiny presets) is loaded once per process.

Why not uvicorn's own ``workers``: its workers share one listening socket, and which idle worker wins an
``accept`` is up to the scheduler, so a burst can land on one process. Here every process binds its own socket
with ``SO_REUSEPORT`` and the kernel spreads new connections over them by their address hash, evenly for many
clients. uvicorn has no such option (0.54), so the small supervisor below is ours: start the processes, stop
them all on a signal or when one of them dies.

Limits (``max_sessions``, ``max_connections``) are totals: each process gets its share, rounded up. Each process
measures its own capacity and refuses past it. ``/metrics`` (Prometheus text) adds up every process's figures,
whichever process answers (prometheus_client's multiprocess mode over a folder this supervisor makes:
:mod:`lws_core.serve.prom`); ``/healthz`` and ``/metrics?format=json`` answer for the process that takes the request.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from lws_core.environ import temporary_env
from lws_core.errors import InputError
from lws_core.serve.balance import Balancer
from lws_core.serve.prom import MULTIPROC_ENV
from lws_core.serve.settings import ServeSettings

SPAWN_GRACE_S = 120.0  # a process that has not bound its socket by then (model load, warm-up) counts as failed


@dataclass(frozen=True)
class WorkerSpec:
    """What a server process needs to build its engine and app: picklable, so spawn can pass it."""

    model_dir: str
    model_name: str
    config_json: str
    device: str
    settings: dict[str, Any]


def share(settings: ServeSettings, processes: int) -> ServeSettings:
    """One process's settings: the session and connection limits divided, rounded up."""
    return settings.model_copy(
        update={
            "max_sessions": math.ceil(settings.max_sessions / processes),
            "max_connections": math.ceil(settings.max_connections / processes),
            "warmup_batch": min(settings.warmup_batch, math.ceil(settings.max_sessions / processes)),
        }
    )


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, so that every server process binds the same port."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise InputError("--processes > 1 needs SO_REUSEPORT, which this platform lacks; use --processes 1")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def _worker_main(spec: WorkerSpec, port: int, ready: Any, errors: Any, balancer: Balancer) -> None:  # noqa: ANN401 - mp.Event, mp.SimpleQueue
    """One server process: load the engine, bind the shared port, serve until told to stop. A user mistake found
    here (a model that does not load) goes back to the parent as its one-line message, not as a traceback."""
    import uvicorn

    from lws_core.config import config_from_dict
    from lws_core.engine import Engine
    from lws_core.errors import LWSError
    from lws_core.serve.balance import balanced_server
    from lws_core.serve.server import create_app, uvicorn_options

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    settings = ServeSettings(**spec.settings)
    try:
        cfg = config_from_dict(json.loads(spec.config_json))
        engine = Engine.from_dir(spec.model_dir, cfg, device=spec.device, lean=True)
        sock = reuseport_socket(settings.host, port)
    except LWSError as e:
        errors.put(str(e))
        return
    engine.use_threads()
    app = create_app(engine, settings, spec.model_name)
    server = app.state.lws
    balancer.limit = server.session_limit
    balancer.own_limit = server.own_limit
    server.share_limit = balancer.mean_limit
    balancer.on_handoff = server.metrics.prom.handoffs.inc
    sock.listen(2048)
    ready.set()
    opts = {k: v for k, v in uvicorn_options(settings).items() if k not in ("host", "port")}
    balanced_server(uvicorn.Config(app, **opts, log_level="info", access_log=False), balancer).run(sockets=[sock])


def serve_processes(spec: WorkerSpec, settings: ServeSettings, processes: int, announce: Any = print) -> int:  # noqa: ANN401
    """Run ``processes`` server processes on ``settings.port`` until a signal or until one exits; returns the port.

    The port is bound here first (port 0 picks a free one, and a busy port fails before any model loads); the
    processes bind it again beside this socket, which is closed once they all listen.
    """
    probe = reuseport_socket(settings.host, settings.port)
    port = probe.getsockname()[1]
    announce(f"lws serve: {spec.model_name} on http://{settings.host}:{port}/ (WebSocket /ws, auth "
             f"{'on' if settings.token else 'off'}, {processes} processes)")
    ctx = mp.get_context("spawn")  # a fresh interpreter each: no torch threads or locks forked mid-state
    per = share(settings, processes)
    spec = WorkerSpec(spec.model_dir, spec.model_name, spec.config_json, spec.device, per.model_dump())
    readies, errors = [ctx.Event() for _ in range(processes)], ctx.SimpleQueue()
    # new connections go to the process with the most room (lws_core.serve.balance): a shared array of rooms and
    # one Unix datagram socket pair per process, its inbox for the connections the others pass it
    rooms = ctx.RawArray("d", [-1e9] * processes)  # no room until a process has warmed up and published its own
    limits = ctx.RawArray("d", [math.nan] * processes)  # each process's own admission limit (Balancer.mean_limit)
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(processes)]
    balancers = [Balancer(i, rooms, pairs[i][0], [w for _, w in pairs], limits) for i in range(processes)]
    procs = [
        ctx.Process(target=_worker_main, args=(spec, port, r, errors, b), name=f"lws-serve-{i}")
        for i, (r, b) in enumerate(zip(readies, balancers, strict=True))
    ]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    shared = tempfile.mkdtemp(prefix="lws-serve-metrics-")  # the processes' Prometheus values (lws_core.serve.prom)
    try:
        with temporary_env({MULTIPROC_ENV: shared}):  # spawned processes take the environment they start with
            for p in procs:
                p.start()
        deadline = time.monotonic() + SPAWN_GRACE_S
        while not all(r.is_set() for r in readies):
            if stopping:
                return port
            if any(not p.is_alive() for p in procs) or time.monotonic() > deadline:
                if not errors.empty():
                    raise InputError(errors.get())
                raise InputError("a server process failed to start (its error is above); stopping the others")
            time.sleep(0.05)
        probe.close()
        announce(f"{processes} server processes ready on port {port} (limits per process: "
                 f"{per.max_sessions} sessions, {per.max_connections} connections)")
        while not stopping and all(p.is_alive() for p in procs):
            time.sleep(0.2)
        if not stopping:
            dead = next(p for p in procs if not p.is_alive())
            raise InputError(f"server process {dead.name} exited (code {dead.exitcode}); stopped the others")
        return port
    finally:
        probe.close()
        for p in procs:
            if p.is_alive():
                # uvicorn's graceful shutdown. SIGTERM, not SIGINT: a Ctrl-C in a terminal already reached every
                # process of the group, and a second SIGINT makes uvicorn force its exit
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(timeout=15)
            if p.is_alive():
                p.kill()
                p.join()
        for s, h in old.items():
            signal.signal(s, h)
        for pair in pairs:
            for end in pair:
                end.close()
        shutil.rmtree(shared, ignore_errors=True)


def spec_for(model_dir: str, model_name: str, cfg: Any, device: str, settings: ServeSettings) -> WorkerSpec:  # noqa: ANN401 - LWSConfig
    """The spec of a server process, from what the CLI resolved (the config travels as its plain dict)."""
    return WorkerSpec(str(model_dir), model_name, json.dumps(cfg.to_dict()), device, settings.model_dump())

"""Load benchmark for `lws serve`: N concurrent clients stream real TTS speech in real time on loopback.

For each N it reports the per-unit latency (client side: the unit's last audio
frame sent -> its `unit` event received; and the server's own figure), the
engine RTF (compute per unit / unit length), how many clients were refused
(close 1013 at hello) or dropped for falling behind, and so the N at which the
server starts refusing.

    .venv/bin/python benchmarks/serve_load.py --clients 1 2 3 4 6 --seconds 10

Without --model a random-init tiny model (default config) is built in a temp
dir: compute per unit does not depend on the weights' values, only on shapes
and on how many tokens each unit decodes (random weights decode the full budgets,
the worst case). The server runs as a real `lws serve` subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENTENCES = [
    "Could you write a short python function that adds two numbers?",
    "What is the capital of France, and how many people live there?",
    "Please make a table of the planets and their distance to the sun.",
    "Explain in one paragraph how a hash map works.",
    "I need a bash one liner that counts the lines in every file.",
    "Tell me a fun fact about octopuses, and then write it down.",
]


def tree_cpu(proc: psutil.Process) -> float:
    """User + system CPU seconds of the server and its processes (``--processes``)."""
    return sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])


def admission(port: int) -> str:
    """The admission state after a level, from the server's own gauges (the process that answers, with
    ``--processes``): the load shown to hold, the trust past it, and the limit now."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics?format=json", timeout=5) as r:
        m = json.loads(r.read())
    return " / ".join(f"{m[k]:.0f}" if m.get(k) is not None else "-" for k in
                      ("admission_proven_sessions", "admission_trusted_sessions", "admission_limit_sessions"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def speech_for(i: int, seconds: float) -> np.ndarray:
    """Real espeak-ng speech (varied voice text), padded with pauses to ``seconds``."""
    from lws_core.audio import get_tts

    tts = get_tts()
    parts, n = [], 0
    j = i
    while n < seconds * 16000:
        a = np.asarray(tts.synthesize(SENTENCES[j % len(SENTENCES)]).audio, dtype=np.float32)
        parts += [a, np.zeros(8000, dtype=np.float32)]
        n += len(a) + 8000
        j += 1
    return np.concatenate(parts)[: int(seconds * 16000)]


async def client(url: str, audio: np.ndarray, frame_s: float = 0.1, delay_s: float = 0.0, phase_s: float = 0.0) -> dict:
    """One session: connect after ``delay_s``, and once ready start streaming at ``phase_s`` into the next second."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from lws_core.audio import pcm16_bytes

    res: dict = {"refused": False, "behind": False, "latency_ms": [], "server_latency_ms": [], "rtf": [], "units": 0, "by_index": []}
    sent_at: dict[int, float] = {}
    t_start = time.monotonic()
    await asyncio.sleep(delay_s)
    try:
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "hello", "version": "lws.v1", "sample_rate": 16000}))
            first = json.loads(await ws.recv())
            if first.get("type") != "ready":
                res["refused"] = True
                return res
            unit_n = int(first["unit_s"] * 16000)
            await asyncio.sleep(max(0.0, t_start + 1.0 + phase_s - time.monotonic()))
            data = pcm16_bytes(audio)
            step = int(frame_s * 16000) * 2

            async def reader() -> None:
                async for msg in ws:
                    if isinstance(msg, bytes):
                        continue
                    ev = json.loads(msg)
                    if ev["type"] == "unit":
                        res["units"] += 1
                        t = sent_at.get(ev["index"])
                        if t is not None:
                            res["latency_ms"].append((time.monotonic() - t) * 1000)
                        res["server_latency_ms"].append(ev["latency_ms"])
                        res["by_index"].append((ev["index"], ev["latency_ms"]))
                        res["rtf"].append(ev["timings"]["total_ms"] / 1000 / first["unit_s"])
                    elif ev["type"] == "error" and ev["code"] == "behind":
                        res["behind"] = True
                    elif ev["type"] == "end":
                        return

            rd = asyncio.create_task(reader())
            t0 = time.monotonic()
            for k, i in enumerate(range(0, len(data), step)):
                await ws.send(data[i : i + step])
                samples = (i + step) // 2
                if samples % unit_n < int(frame_s * 16000) and samples >= unit_n:
                    sent_at[samples // unit_n - 1] = time.monotonic()
                await asyncio.sleep(max(0.0, t0 + (k + 1) * frame_s - time.monotonic()))  # real time
            await ws.send(json.dumps({"type": "end"}))
            await asyncio.wait_for(rd, timeout=120)
    except ConnectionClosed as e:
        if e.rcvd is not None and e.rcvd.code == 1013:
            res["behind" if res["units"] else "refused"] = True
    return res


INDEX_BUCKETS = ((0, 2), (2, 5), (5, 1 << 30))  # unit indices: 0-1, 2-4, 5 on


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _poll_processes(http: str, stop: asyncio.Event) -> list[dict]:
    """Sample ``/metrics?format=json`` every 0.2 s while a level runs: each request is a new connection, so the
    kernel's hash spreads the samples over the server processes, and each answers for itself (``pid``)."""
    samples = []
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"{http}/metrics?format=json", timeout=2) as r:
                samples.append(json.loads(r.read()))
        except OSError:
            pass
        time.sleep(0.2)
    return samples


def per_process(samples: list[dict]) -> str:
    """Each process's most sessions held, its admission limit at that moment, its largest latency excess and the most
    sessions it has shown to hold (served within the bound)."""
    out = []
    for pid in sorted({x["pid"] for x in samples}):
        mine = [x for x in samples if x["pid"] == pid]
        peak = max(mine, key=lambda x: x["active_sessions"])
        excess = max((x.get("admission_latency_excess_s") or 0.0) for x in mine)
        proven = max((x.get("admission_proven_sessions") or 0.0) for x in mine)
        out.append(f"pid {pid}: peak {peak['active_sessions']} (limit then {peak.get('admission_limit_sessions')}, "
                   f"trusted {peak.get('admission_trusted_sessions')}), "
                   f"max excess {excess * 1000:.0f} ms, shown to hold {proven:.0f}, "
                   f"cost model then c0 {_ms(peak.get('engine_round_fixed_s'))} + c1 {_ms(peak.get('engine_round_per_session_s'))} "
                   f"ms x {peak.get('engine_slowdown') or float('nan'):.2f}, warm-up unit write/say "
                   f"{peak.get('warmup_write_tokens')}/{peak.get('warmup_say_tokens')} tokens")
    return "; ".join(out)


def _ms(v: float | None) -> str:
    return "?" if v is None else f"{v * 1000:.1f}"


async def run_level(url: str, n: int, seconds: float) -> dict:
    audios = [speech_for(i, seconds) for i in range(n)]
    stop = asyncio.Event()
    http = url.replace("ws://", "http://").rsplit("/ws", 1)[0]
    poller = asyncio.create_task(asyncio.to_thread(_poll_processes, http, stop))
    # arrivals spread over half a second; each session then streams at its own phase in the next second, spread over
    # the whole second (the batcher's harder case: clients in lockstep would hand it perfectly full rounds). The
    # phases are a seeded permutation of the arrival order: were they the arrival order, the sessions admission
    # takes (the first to arrive) would all come due in the first part of every second, a burst only the
    # benchmark makes (stop 48: 120 of 192 admitted ran at p95 706 ms where 128 spread evenly held 252)
    phases = np.random.default_rng(n).permutation(n) / n
    results = await asyncio.gather(*(client(url, a, delay_s=0.5 * i / n, phase_s=float(phases[i])) for i, a in enumerate(audios)))
    stop.set()
    samples = await poller
    lat = [x for r in results for x in r["latency_ms"]]
    srv = [x for r in results for x in r["server_latency_ms"]]
    rtf = [x for r in results for x in r["rtf"]]
    by_index = [x for r in results for x in r["by_index"]]
    return {
        # when in a session the slow units come: its first units (admission, a new session's first prefill) or later
        "processes": per_process(samples),
        "srv_p95_by_index": [pct([ms for i, ms in by_index if lo <= i < hi], 95) for lo, hi in INDEX_BUCKETS],
        "clients": n,
        "served": sum(not r["refused"] for r in results),
        "refused": sum(r["refused"] for r in results),
        "behind": sum(r["behind"] for r in results),
        "units": sum(r["units"] for r in results),
        "lat_p50": pct(lat, 50),
        "lat_p95": pct(lat, 95),
        "srv_p50": pct(srv, 50),
        "srv_p95": pct(srv, 95),
        "rtf_p50": pct(rtf, 50),
        "rtf_p95": pct(rtf, 95),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="Model directory (default: a random-init tiny model built in a temp dir).")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 3, 4, 6])
    ap.add_argument("--seconds", type=float, default=10.0, help="Audio each client streams, in real time.")
    ap.add_argument("--max-sessions", type=int, default=256, help="Server --max-sessions (its default; refusals then come from measured capacity).")
    ap.add_argument("--sessions-only", action="store_true", help="Serve with --sessions-only: admit up to --max-sessions whatever the load.")
    ap.add_argument("--threads", type=int, help="Server --set engine.threads=N (default: the config's, 1).")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="Server --set key=value, e.g. engine.batch_dtype=model (repeatable).")
    ap.add_argument("--no-batch", action="store_true", help="Serve with --no-batch: one session per engine step (the pre-batching server).")
    ap.add_argument("--continuous", action="store_true", help="Serve with --continuous: iteration-level batching.")
    ap.add_argument("--compression", action="store_true", help="Serve with --compression: permessage-deflate on the WebSocket.")
    ap.add_argument("--warmup-speak-share", type=float, help="Server --warmup-speak-share (default: the server's, 1.0).")
    ap.add_argument("--warmup-spoken", action=argparse.BooleanOptionalAction, default=None,
                    help="Server --warmup-spoken / --no-warmup-spoken (default: the server's, on): the start-up units sized to the model's own, or both budgets full.")
    ap.add_argument("--target-utilization", type=float, help="Server --target-utilization (default: the server's).")
    ap.add_argument("--processes", type=int, default=1, help="Server --processes N: N server processes on the port.")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="serve-load-")
    model = args.model
    if model is None:
        from lws_core.config import LWSConfig
        from lws_core.model import LWSModel

        model = str(Path(tmp) / "model")
        LWSModel.build(LWSConfig()).save(model)
    port = free_port()
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "lws_core.cli.main", "serve", "--model", model, "--port", str(port), "--max-sessions", str(args.max_sessions),
         # the connection cap is shared out over --processes, and the kernel's spread is uneven: give each process
         # room for every client, so only measured capacity refuses
         "--max-connections", str(max(32, max(args.clients) + 8) * args.processes)]
        + (["--sessions-only"] if args.sessions_only else [])
        + (["--no-batch"] if args.no_batch else [])
        + (["--continuous"] if args.continuous else [])
        + (["--compression"] if args.compression else [])
        + (["--warmup-speak-share", str(args.warmup_speak_share)] if args.warmup_speak_share is not None else [])
        + ([] if args.warmup_spoken is None else ["--warmup-spoken" if args.warmup_spoken else "--no-warmup-spoken"])
        + ([] if args.target_utilization is None else ["--target-utilization", str(args.target_utilization)])
        + (["--processes", str(args.processes)] if args.processes > 1 else [])
        + (["--set", f"engine.threads={args.threads}"] if args.threads else [])
        + [x for kv in args.sets for x in ("--set", kv)],
        env=env, stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / "server.log", "w"),  # noqa: SIM115 - the server's lifetime
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    health = json.loads(r.read())
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("server did not start") from None
                time.sleep(0.5)
        while args.processes > 1 and "server processes ready" not in (Path(tmp) / "server.log").read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("server processes did not start") from None
            time.sleep(0.5)
        print(f"server up ({args.processes} process(es)): capacity estimate {health['capacity_sessions']} sessions; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        print("| clients | served | refused | behind | units | latency p50 / p95 (ms, client) | server p50 / p95 (ms) | RTF p50 / p95 "
              "| CPU s: server / load generator | admission after: proven / trusted / limit |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        first_refusal = None
        profiles = []
        proc = psutil.Process(server.pid)
        for n in args.clients:
            # CPU seconds each side spent on the level: the two processes share the cores, so what the load
            # generator burns (its own WebSocket framing, say) is time the server did not get
            srv0, gen0 = tree_cpu(proc), time.process_time()
            r = asyncio.run(run_level(f"ws://127.0.0.1:{port}/ws", n, args.seconds))
            srv_cpu, gen_cpu = tree_cpu(proc) - srv0, time.process_time() - gen0
            profiles.append((n, r["srv_p95_by_index"], r["processes"]))
            if first_refusal is None and r["refused"]:
                first_refusal = n
            print(
                f"| {n} | {r['served']} | {r['refused']} | {r['behind']} | {r['units']} | {r['lat_p50']:.0f} / {r['lat_p95']:.0f} "
                f"| {r['srv_p50']:.0f} / {r['srv_p95']:.0f} | {r['rtf_p50']:.2f} / {r['rtf_p95']:.2f} | {srv_cpu:.1f} / {gen_cpu:.1f} "
                f"| {admission(port)} |",
                flush=True,
            )
            time.sleep(1.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics?format=json", timeout=5) as r:
            m = json.loads(r.read())
        print(
            f"first refusal at N = {first_refusal}; server refusals {m['refusals']}; engine rounds {m.get('engine_rounds')}, "
            f"mean sessions per round {m.get('engine_batch_mean')}; multi-session forwards {m.get('engine_batched_forwards')}, "
            f"with block attention {m.get('engine_block_attention_forwards')}; load now {os.getloadavg()[0]:.1f}"
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            handed = [ln for ln in r.read().decode().splitlines() if ln.startswith("lws_connections_handed_off_total")]
        print(f"connections passed between processes: {handed[0].split()[-1] if handed else 0}")
        print("server p95 (ms) by unit index in the session, units 0-1 / 2-4 / 5 on: "
              + "; ".join(f"N={n}: " + " / ".join(f"{v:.0f}" for v in prof) for n, prof, _ in profiles))
        for n, _, procs in profiles:
            print(f"N={n}, per process: {procs}")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()

"""Teacher-scripted synthesis against a loopback OpenAI-compatible server with latency and 429 storms.

Figures: teacher-scripted sessions/s of the scripts stage (every session's teacher calls, many in
flight) and of the whole synthesis (text only; the TTS stage is data_synth.py's business), the
serial path of before for comparison (one request in flight), client CPU per teacher call, a 429
storm (rejects, paid duplicates), and a second run over the same cache (nothing paid).

Run: .venv/bin/python benchmarks/teacher.py --sessions 2000 --latency-s 0.3 --concurrency 64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(srv, sessions: int, concurrency: int, cache: Path, out: Path) -> dict:  # noqa: ANN001
    from lws_core.config import LWSConfig
    from lws_core.data import synthesize

    cfg = LWSConfig().with_overrides({
        "data.teacher.kind": "openai", "data.teacher.endpoint": srv.url, "data.teacher.model": "teacher-1",
        "data.teacher.cache_dir": str(cache), "data.teacher.concurrency": concurrency,
        "data.teacher.usd_per_1k_input": 0.00015, "data.teacher.usd_per_1k_output": 0.0006,
    })
    paid0 = srv.stats()["paid"]
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    s = synthesize(cfg, out, sessions=sessions, workers=2, progress=False, text_only=True)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    t, u, st = s.extra["timings"], s.extra["teacher_usage"], srv.stats()
    calls = u["requests_paid"] + u["cache_hits"]
    return {
        "sessions": sessions,
        "concurrency": concurrency,
        "rows": sum(s.rows.values()),
        "rejects": s.rejects,
        "scripts_s": t["scripts_s"],
        "scripted_sessions_per_s": round(sessions / t["scripts_s"], 1) if t["scripts_s"] else None,
        "teacher_calls": calls,
        "calls_per_s": round(calls / t["scripts_s"], 1) if t["scripts_s"] else None,
        "end_to_end_s": t["wall_s"],
        "end_to_end_sessions_per_s": round(sessions / t["wall_s"], 1),
        "parent_cpu_ms_per_call": round((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / max(1, calls) * 1000, 2),
        "paid_this_run_server": st["paid"] - paid0,
        "duplicated_server": st["duplicated"],
        "rate_limited_server": st["rate_limited"],
        "retries": u["retries"],
        "failures": u["failures"],
        "dataset_cost_usd": u["dataset_cost_usd"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--latency-s", type=float, default=0.3)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--serial-sessions", type=int, default=30)
    ap.add_argument("--storm-every-s", type=float, default=3.0)
    ap.add_argument("--storm-s", type=float, default=1.0)
    ap.add_argument("--retry-after", type=float, default=0.5)
    args = ap.parse_args()
    from tests.data.llm_server import ServerProcess

    res: dict = {"load_avg_start": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        with ServerProcess(latency_s=args.latency_s) as srv:
            res["serial"] = run(srv, args.serial_sessions, 1, d / "c0", d / "o0")
            res["concurrent"] = run(srv, args.sessions, args.concurrency, d / "c1", d / "o1")
            res["rerun_same_cache"] = run(srv, args.sessions, args.concurrency, d / "c1", d / "o2")
        with ServerProcess(latency_s=args.latency_s, storm_every_s=args.storm_every_s, storm_s=args.storm_s,
                           retry_after=args.retry_after) as srv:
            res["storm"] = run(srv, args.sessions, args.concurrency, d / "c2", d / "o3")
    res["load_avg_end"] = os.getloadavg()
    res["speedup_scripts_vs_serial"] = round(
        res["concurrent"]["scripted_sessions_per_s"] / res["serial"]["scripted_sessions_per_s"], 1
    )
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"benchmark wall {time.time() - t0:.0f} s", file=sys.stderr)

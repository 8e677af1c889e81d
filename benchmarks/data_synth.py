"""Synthesis throughput: sessions/s, seconds of session audio per wall second, peak RSS (parent + children).

Run: .venv/bin/python benchmarks/data_synth.py --sessions 1000 --workers 2
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
from pathlib import Path

import psutil


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from lws_core.config import LWSConfig
    from lws_core.data import synthesize

    peak = [0]
    stop = threading.Event()

    def watch() -> None:  # sample RSS of the parent plus all live children
        me = psutil.Process()
        while not stop.is_set():
            try:
                rss = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            stop.wait(0.05)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    with tempfile.TemporaryDirectory() as d:
        s = synthesize(LWSConfig(), Path(d) / "ds", sessions=args.sessions, workers=args.workers, progress=False)
    stop.set()
    th.join()
    n = sum(s.rows.values())
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"sessions written {n} (rejects {s.rejects}) in {s.wall_s:.1f} s")
    print(f"sessions/s {s.sessions_per_s:.1f}; audio {s.audio_hours * 3600:.0f} s -> {s.audio_s_per_s:.0f} s audio / wall s")
    print(f"mean session {s.audio_hours * 3600 / max(n, 1):.1f} s; peak RSS parent+children {peak[0] / 2**20:.0f} MiB (largest child {kids:.0f} MiB)")


if __name__ == "__main__":
    main()

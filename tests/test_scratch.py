"""Scratch folders of killed runs (``lws_core.scratch``): real processes, killed with SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from lws_core.scratch import _host, scratch_dir, stale_scratch

MAKE = "import sys, os, signal; from lws_core.scratch import scratch_dir; d = scratch_dir(sys.argv[1], '.out.corpus'); "


def test_a_killed_runs_folder_goes_at_the_next_run_and_a_live_ones_stays(tmp_path):
    # a run killed with SIGKILL: its finally never runs, its folder stays behind
    killed = subprocess.run([sys.executable, "-c", MAKE + "(d / 'big').write_bytes(b'x'); os.kill(os.getpid(), signal.SIGKILL)", str(tmp_path)])
    assert killed.returncode == -signal.SIGKILL
    left = list(tmp_path.glob(".out.corpus-*"))
    assert len(left) == 1 and (left[0] / "big").exists()
    assert stale_scratch(tmp_path, ".out.corpus") == left
    # the next run on this host removes it as it starts
    live = subprocess.Popen([sys.executable, "-c", MAKE + "print(d, flush=True); import time; time.sleep(60)", str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        live_dir = Path(live.stdout.readline().strip())
        assert live_dir.is_dir() and not left[0].exists()
        # a run still going on this host, and one on another host (a shared volume): both kept
        other = tmp_path / ".out.corpus-otherhost-1-abc"
        other.mkdir()
        assert stale_scratch(tmp_path, ".out.corpus") == []
        mine = scratch_dir(tmp_path, ".out.corpus")
        assert live_dir.is_dir() and other.is_dir() and mine.is_dir()
        assert mine.name.startswith(f".out.corpus-{_host()}-")
        # this process's own folder is never stale for it, even with a second one under way
        second = scratch_dir(tmp_path, ".out.corpus")
        assert mine.is_dir() and second.is_dir()
        # another prefix is never touched
        assert stale_scratch(tmp_path, ".other.corpus") == []
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
    time.sleep(0.05)
    assert live_dir in stale_scratch(tmp_path, ".out.corpus")

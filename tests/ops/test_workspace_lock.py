"""The workspace lock: a second process waits for the holder, and a dead holder does not wedge it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from lws_core.ops.workspace import file_lock

_HOLD = """
import sys, time
from pathlib import Path
from lws_core.ops.workspace import file_lock
with file_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    if sys.argv[3] == "die":
        import os; os._exit(9)
    print(f"released {time.time()}", flush=True)
"""


def _holder(lock: Path, seconds: float, end: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock), str(seconds), end], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_second_holder_waits_for_the_first(tmp_path):
    lock = tmp_path / "sub" / "registry.lock"  # parent folder is created on demand
    p = _holder(lock, 1.0, "release")
    with file_lock(lock):
        got = time.time()
    out, _ = p.communicate(timeout=30)
    released = float(out.split()[-1])
    assert got >= released  # not before the other process let go


def test_a_killed_holder_does_not_wedge_the_lock(tmp_path):
    lock = tmp_path / "dvc.lock"
    p = _holder(lock, 0.2, "die")
    p.wait(timeout=30)
    assert p.returncode == 9
    t0 = time.monotonic()
    with file_lock(lock):
        pass
    assert time.monotonic() - t0 < 5

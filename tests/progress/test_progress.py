"""Progress output: a live bar on a terminal, bounded plain lines in files and CI logs."""

from __future__ import annotations

import io
import subprocess
import sys

from lws_core import progress as progress_mod
from lws_core.progress import interactive, progress

_LOOP = """
import time
from lws_core.progress import progress
for _ in progress(range(200_000), desc="work", unit="item"):
    pass
bar = progress(total=200, desc="steps", unit="step", mininterval=0)  # every refresh allowed: the % rule bounds it
for _ in range(200):
    time.sleep(0.001)
    bar.update(1)
    bar.set_postfix(loss=0.5)
bar.close()
"""


def _run_with_stderr_to_file(tmp_path, env_extra: dict[str, str]) -> str:
    log = tmp_path / "stderr.log"
    env = {k: v for k, v in __import__("os").environ.items() if k != "CI"} | env_extra
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", _LOOP], stderr=f, check=True, timeout=120, env=env)
    return log.read_text()


def test_stderr_to_a_file_gets_a_few_plain_lines(tmp_path):
    text = _run_with_stderr_to_file(tmp_path, {})
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    work = [ln for ln in lines if ln.startswith("work")]
    steps = [ln for ln in lines if ln.startswith("steps")]
    # 200k iterations in well under LOG_INTERVAL_S: the first and the final line only
    assert 1 <= len(work) <= 3 and "200000/200000" in work[-1]
    # 200 updates with no time limit: at most one line per 5 % (+ first and last), not one per update
    assert 3 <= len(steps) <= 22 and "200/200" in steps[-1] and "loss=0.5" in steps[-1]
    assert all(len(ln) <= progress_mod.LOG_WIDTH for ln in lines)


def test_ci_is_a_log_even_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("CI", raising=False)
    assert interactive(Tty())
    assert not interactive(io.StringIO())
    monkeypatch.setenv("CI", "true")
    assert not interactive(Tty())


def test_a_terminal_keeps_the_live_bar(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("CI", raising=False)
    out = Tty()
    for _ in progress(range(3), stream=out, mininterval=0):
        pass
    assert "\r" in out.getvalue()  # redrawn in place


def test_disabled_writes_nothing():
    out = io.StringIO()
    for _ in progress(range(10), stream=out, disable=True):
        pass
    assert out.getvalue() == ""


def test_the_pipeline_bar_reads_a_steps_progress_lines(tmp_path):
    """The local runner's bar shows the running step's latest progress line (``workflows.local.step_progress``):
    it reads the lines this module writes into a log, and nothing else of a task's log."""
    from workflows.local import step_progress

    lines = _run_with_stderr_to_file(tmp_path, {}).splitlines()
    notes = [step_progress("    " + ln) for ln in lines if ln.startswith("steps")]  # the task log indents them
    assert notes and all(n is not None and n.startswith("steps ") for n in notes)
    assert notes[-1].startswith("steps 100%")
    mid = step_progress("pretrain encoder:  45%|####      | 1800/4000 [05:00<06:00, 6.00step/s, ctc_loss=0.300]")
    assert mid == "pretrain encoder 45%, 06:00 left"
    for other in ("[KFP Executor 2026-12-04 21:15:36,259 INFO]: Looking for component", "Task 'train' finished with status SUCCESS",
                  '    "outputFile": "/tmp/x/executor_output.json"', ""):
        assert step_progress(other) is None

"""`lws train`: user mistakes are one line on stderr and exit 2, before any training starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

LWS = [sys.executable, "-m", "lws_core.cli.main", "train"]


def _one_line(rc: int, stderr: str, needle: str) -> None:
    assert rc == 2, stderr
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip() and not ln.startswith("training preset")]
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    assert "Traceback" not in stderr
    assert needle in lines[0], lines[0]


def _user_error(args: list[str], needle: str) -> None:
    """Through the console entry point, in a subprocess."""
    p = subprocess.run([*LWS, *args], capture_output=True, text=True, timeout=300)
    _one_line(p.returncode, p.stderr, needle)


def _user_error_in_process(capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    """The same CLI code in this process (``lws_core.cli.main.run``): no interpreter and torch start-up per case."""
    from lws_core.cli.main import run

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run(["train", *args])
    _one_line(e.value.code, capsys.readouterr().err, needle)


def test_cli_bad_inputs_exit_2_with_one_line(tiny_dataset, tmp_path, capsys):
    _user_error(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "m")], "not found")
    _user_error(["--data", str(tiny_dataset), "--out", str(tmp_path / "m"), "--set", "train.max_memory_gb=0.001"],
                "max_memory_gb")  # past the data checks: the memory pre-check, with torch loaded
    _user_error_in_process(capsys, ["--data", str(tiny_dataset), "--out", str(tmp_path / "m"), "--set", "train.batch_size=0"],
                           "batch_size")
    _user_error_in_process(capsys, ["--data", str(tiny_dataset), "--out", str(tmp_path / "m"),
                                    "--set", "model.backbone_path=/nonexistent/x"], "backbone_path")
    assert not (tmp_path / "m").exists()


def test_cli_help_names_every_option():
    p = subprocess.run([*LWS, "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0
    for opt in ("--config", "--data", "--out", "--set", "--resume", "--no-resume", "--quiet"):
        assert opt in p.stdout

"""`lws pretrain backbone|encoder` and `lws train --backbone/--encoder`: a summary at the end, a skip (exit 0,
a marker in --out) when the config names a real checkpoint, one-line errors (exit 2) for user mistakes."""

from __future__ import annotations

import json
import subprocess
import sys

LWS = [sys.executable, "-m", "lws_core.cli.main"]
TINY = ["--set", "pretrain.encoder.max_steps=2", "--set", "pretrain.encoder.batch_size=8",
        "--set", "pretrain.encoder.eval_sessions=2", "--set", "pretrain.encoder.sessions=0"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LWS, *args], capture_output=True, text=True, timeout=300)


def one_line_error(p: subprocess.CompletedProcess, needle: str) -> None:
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], p.stderr


def test_pretrain_encoder_cli_summary_skip_and_errors(tiny_dataset, tmp_path):
    enc = tmp_path / "encoder"
    p = run("pretrain", "encoder", "--data", str(tiny_dataset), "--out", str(enc), "--quiet", *TINY)
    assert p.returncode == 0, p.stderr[-2000:]
    for row in ("steps", "final CTC loss", "WER", "wall time"):
        assert row in p.stdout, (row, p.stdout)
    assert (enc / "lws_encoder.json").is_file() and (enc / "pretrain_report.json").is_file()

    # a real checkpoint configured: nothing trained, --out names it (what DVC's out and `lws train --encoder` read)
    skipped = tmp_path / "enc-skipped"
    for kind, out in (("encoder", skipped), ("backbone", tmp_path / "bb-skipped")):
        p = run("pretrain", kind, *(["--data", str(tiny_dataset)] if kind == "encoder" else []), "--out", str(out),
                "--set", f"model.{kind}_path={enc}", "--quiet")
        assert p.returncode == 0 and "skipped" in p.stdout and str(enc) in p.stdout, (p.stdout, p.stderr)
        assert json.loads((out / "skipped.json").read_text())["path"] == str(enc)

    # user mistakes: one line, exit 2
    one_line_error(run("pretrain", "encoder", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "x")),
                   "dataset directory not found")
    one_line_error(run("pretrain", "backbone", "--out", str(tmp_path / "x"), "--set", f"model.backbone_path={tmp_path / 'none'}"),
                   "model.backbone_path not found")
    one_line_error(run("pretrain", "backbone", "--out", str(tmp_path / "x"), "--set", "pretrain.backbone.max_stepz=3"),
                   "pretrain.backbone.max_stepz")
    one_line_error(run("train", "--data", str(tiny_dataset), "--out", str(tmp_path / "m"), "--encoder", str(tmp_path / "none")),
                   "--encoder")


def test_pretrain_help_names_both_stages():
    p = run("pretrain", "--help")
    assert p.returncode == 0 and "backbone" in p.stdout and "encoder" in p.stdout
    p = run("train", "--help")
    assert "--backbone" in p.stdout and "--encoder" in p.stdout

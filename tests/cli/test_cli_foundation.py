"""The `lws` command: --help everywhere, user mistakes are one line + exit 2, schema tools work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LWS = [sys.executable, "-m", "lws_core.cli.main"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*LWS, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def assert_user_error(p: subprocess.CompletedProcess, needle: str) -> None:
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    assert needle in lines[0]


def test_version_and_help():
    p = run("--version")
    assert p.returncode == 0 and "lws 0.1.0" in p.stdout and "lws-v1" in p.stdout
    top = run("--help")
    assert top.returncode == 0
    for cmd in ("config", "schema", "data", "train", "simulate", "eval", "pipeline", "serve"):
        assert cmd in top.stdout


def test_every_subcommand_has_help():
    import typer.main

    from lws_core.cli.main import app

    group = typer.main.get_command(app)

    def walk(cmd, path):
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    from typer.testing import CliRunner

    paths = list(walk(group, []))
    assert len(paths) > 8
    runner = CliRunner()  # in-process: ~40 interpreter start-ups saved; the real entry point is tested above
    for path in paths:
        p = runner.invoke(app, [*path, "--help"])
        assert p.exit_code == 0 and "Usage" in p.output, (path, p.output)
        assert (p.output.count("\n") > 3), path


def test_config_show_and_errors(tmp_path):
    p = run("config", "show", "--set", "train.max_steps=5")
    assert p.returncode == 0 and "max_steps: 5" in p.stdout
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  max_stepz: 3\n")
    assert_user_error(run("config", "show", "--config", str(bad)), "train.max_stepz")
    bad.write_text("model:\n  preset: huge\n")
    assert_user_error(run("config", "check", "--config", str(bad)), "model.preset")
    assert_user_error(run("config", "show", "--config", str(tmp_path / "none.yaml")), "not found")


@pytest.fixture()
def session_file(tmp_path):
    s = {
        "id": "demo",
        "unit_s": 1.0,
        "user_words": [{"text": "what", "start": 0.1, "end": 0.3}, {"text": "is", "start": 0.3, "end": 0.5},
                       {"text": "6", "start": 0.5, "end": 0.8}, {"text": "times", "start": 0.9, "end": 1.3},
                       {"text": "7", "start": 1.4, "end": 1.7}],
        "units": [
            {"state": "listen", "write": "- 6"},
            {"state": "listen", "write": " × 7", "depends_on_word": 4},
            {"state": "speak", "write": "\n6 × 7 = 42\n**Answer:** 42", "say": "It's 42.", "eot": True},
        ],
    }
    f = tmp_path / "session.json"
    f.write_text(json.dumps(s))
    return f


def test_schema_encode_render_validate(session_file, tmp_path):
    p = run("schema", "encode", str(session_file), "--ids-out", str(tmp_path / "ids.json"))
    assert p.returncode == 0 and "<|unit|>" in p.stdout and "[<|speak|>]" in p.stdout
    png = tmp_path / "t.png"
    p = run("schema", "render", str(session_file), "--png", str(png))
    assert p.returncode == 0 and png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
    p = run("schema", "validate", str(session_file))
    assert p.returncode == 0 and "valid" in p.stdout


def test_schema_tokenizer_and_decode(session_file, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("what is 6 times 7\nthe answer is 42\n" * 20)
    p = run("schema", "tokenizer", str(tmp_path / "tok"), "--corpus", str(corpus), "--vocab-size", "300")
    assert p.returncode == 0, p.stderr
    p = run("schema", "encode", str(session_file), "--tokenizer", str(tmp_path / "tok"), "--ids-out", str(tmp_path / "ids.json"))
    assert p.returncode == 0, p.stderr
    ids = json.loads((tmp_path / "ids.json").read_text())["input_ids"]
    # cut, with out-of-vocabulary garbage in the first unit (a negative id was an OverflowError traceback)
    (tmp_path / "cut.json").write_text(json.dumps(ids[:3] + [-5, 10**20] + ids[3:-3]))
    p = run("schema", "decode", str(tmp_path / "cut.json"), "--tokenizer", str(tmp_path / "tok"))
    assert p.returncode == 0 and "force-closed" in p.stdout and "42" in p.stdout, (p.stdout, p.stderr)
    assert "token id -5 outside the vocabulary" in p.stdout


def test_malformed_inputs_are_one_line_errors(tmp_path):
    f = tmp_path / "s.json"
    f.write_text("{not json")
    assert_user_error(run("schema", "render", str(f)), "not valid JSON")
    f.write_text(json.dumps({"units": [{"state": "shout"}]}))
    assert_user_error(run("schema", "encode", str(f)), "units.0.state")
    assert_user_error(run("schema", "validate", str(tmp_path / "missing.json")), "not found")
    (tmp_path / "tok").mkdir()
    (tmp_path / "ids.json").write_text("[1,2,3]")
    assert_user_error(run("schema", "decode", str(tmp_path / "ids.json"), "--tokenizer", str(tmp_path / "tok")), "not an LWS tokenizer")


def assert_usage_error(p: subprocess.CompletedProcess, needle: str) -> None:
    """A usage mistake: click-style usage message, exit 2, never a traceback."""
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stdout + p.stderr
    assert "Usage:" in p.stderr and needle in p.stderr, p.stderr


def test_usage_errors_are_usage_messages_not_tracebacks(session_file):
    # typer vendors its own click: these escaped `except click.ClickException` as tracebacks (exit 1).
    assert_usage_error(run("data", "show"), "Missing argument")
    assert_usage_error(run("schema", "encode", str(session_file), "--bogus"), "No such option: --bogus")
    assert_usage_error(run("data", "show", "somewhere", "--index", "abc"), "--index")
    assert_usage_error(run("schema", "nosuchcommand"), "nosuchcommand")
    assert_usage_error(run("schema", "decode"), "Missing")
    bare = run()  # no arguments: the help, not a traceback
    assert bare.returncode in (0, 2) and "Traceback" not in bare.stdout + bare.stderr
    assert "Usage:" in bare.stdout + bare.stderr and "schema" in bare.stdout + bare.stderr


def test_command_exit_codes_survive(tmp_path):
    # standalone_mode=False makes typer return a typer.Exit code instead of exiting: it must still reach the shell.
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"units": [{"state": "listen", "say": "hi"}]}))
    p = run("schema", "validate", str(f))
    assert p.returncode == 1 and "invariant 4" in p.stdout, (p.stdout, p.stderr)


def test_unknown_set_key_lists_allowed_keys():
    assert_user_error(run("config", "show", "--set", "train.nope=1"), "allowed in train:")
    p = run("config", "check", "--set", "train.nope=1")
    assert "max_steps" in p.stderr and p.returncode == 2


def test_tokenizer_from_another_schema_version_is_refused(session_file, tmp_path):
    from lws_core.schema import train_bpe_tokenizer

    tok = tmp_path / "tok"
    train_bpe_tokenizer(["what is 6 times 7", "the answer is 42"] * 10, vocab_size=280).save(tok)
    meta = tok / "lws_schema.json"
    raw = json.loads(meta.read_text())
    raw["schema_version"] = "lws-v0"
    meta.write_text(json.dumps(raw))
    assert_user_error(run("schema", "encode", str(session_file), "--tokenizer", str(tok)), "'lws-v0'")
    (tmp_path / "ids.json").write_text("[2, 3, 4]")
    assert_user_error(run("schema", "decode", str(tmp_path / "ids.json"), "--tokenizer", str(tok)), "schema 'lws-v0'")

"""End to end on a tiny model trained for a few steps: the Full-Duplex-Bench flow and VoiceBench, offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from lws_core.eval.fdb_run import words_after
from lws_core.schema import Word

LWS = [str(Path(sys.executable).parent / "lws")]


def _lws(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LWS, *args], capture_output=True, text=True, timeout=300)


def test_words_after_interruption_cut():
    ws = [Word(text="a", start=1.0, end=1.5), Word(text="b", start=1.9, end=2.3), Word(text="c", start=2.05, end=2.2), Word(text="d", start=2.5, end=2.9)]
    got = words_after(ws, 2.0)
    assert [(w.text, w.start) for w in got] == [("b", 2.0), ("c", 2.05), ("d", 2.5)]  # b: 0.3 of 0.4 s after the cut
    assert [w.text for w in words_after([Word(text="x", start=1.0, end=2.1)], 2.0)] == []  # mostly before the cut


@pytest.mark.slow
def test_fdb_cli_flow(tiny_model, tmp_path):
    probe, out = tmp_path / "probe", tmp_path / "out"
    p = _lws("eval", "fdb-probe", "--out", str(probe), "--per-task", "1", "--quiet")
    assert p.returncode == 0, p.stderr
    p = _lws("eval", "fdb", "--model", str(tiny_model), "--data", str(probe), "--out", str(out), "--quiet")
    assert p.returncode == 0, p.stderr
    assert "fdb_turn_taking_tor" in p.stdout
    for task in ("pause_handling", "smooth_turn_taking", "user_interruption", "backchannel"):
        d = out / task / "0"
        assert sf.info(str(d / "output.wav")).frames == sf.info(str(d / "input.wav")).frames  # time-synchronous, same length
        chunks = json.loads((d / "output.json").read_text())["chunks"]
        if task == "user_interruption":
            cut = json.loads((d / "interrupt.json").read_text())[0]["timestamp"][1]
            assert all(c["timestamp"][0] >= cut for c in chunks)
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    for k in ("fdb_pause_tor", "fdb_turn_taking_tor", "fdb_interruption_tor", "fdb_backchannel_tor", "fdb_backchannel_jsd"):
        assert m[k] is not None and 0.0 <= m[k] <= 1.0
    assert m["fdb_interruption_relevance"] == "not judged"
    assert not (probe / "pause_handling" / "0" / "output.wav").exists()  # the input tree is never modified
    p = _lws("eval", "fdb-metrics", str(tmp_path / "missing"))
    assert p.returncode == 2 and p.stderr.startswith("error:") and "missing" in p.stderr


@pytest.mark.slow
def test_voicebench_with_judge(tiny_model, endpoint, tmp_path):
    from lws_core.audio.io import write_wav
    from lws_core.audio.tts import get_tts
    from lws_core.engine import Engine
    from lws_core.eval.judge import JudgeClient
    from lws_core.eval.voicebench import run_voicebench

    write_wav(tmp_path / "q.wav", get_tts().synthesize("what is 9 times 7").audio)
    (tmp_path / "rows.jsonl").write_text(json.dumps({"prompt": "what is 9 times 7", "audio": "q.wav"}) + "\n")
    endpoint.reply = lambda body: "4"
    judge = JudgeClient(endpoint.url, "judge")
    m = run_voicebench(Engine.from_dir(tiny_model), tmp_path / "rows.jsonl", tmp_path / "vb", response="both", judge=judge, answer_s=2.0, progress=False)
    assert m["gpt"] == 4.0 and m["rows"] == 1 and len(endpoint.calls) == 3
    row = json.loads((tmp_path / "vb" / "alpacaeval-responses.jsonl").read_text())
    assert {"prompt", "response", "spoken_response", "written_response"} <= set(row) and "audio" not in row
    judged = json.loads((tmp_path / "vb" / "result-alpacaeval-responses.jsonl").read_text())
    assert judged["score"] == ["4", "4", "4"]
    m2 = run_voicebench(Engine.from_dir(tiny_model), tmp_path / "rows.jsonl", tmp_path / "vb2", answer_s=2.0, progress=False)
    assert m2["score"].startswith("not judged")

"""benchmarks/fdb_official_check.py against stand-in "official" scripts written here.

The real official scripts are not part of this project (the user points the check at
their own checkout; benchmarks/results/eval.md records a run on it).  Here two
stand-ins with the official interface (``eval_pause_handling(data_dir)`` averaging
with ``sum(x) / len(x)``) check the check itself: one applies the official
takeover rule and must agree with ours, one counts any word as a takeover and must be
reported as a mismatch with a non-zero exit.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[2] / "benchmarks" / "fdb_official_check.py"

_PAUSE = '''
import json, os
def eval_pause_handling(data_dir):
    tos = []
    for folder in os.listdir(data_dir):
        ch = json.load(open(os.path.join(data_dir, folder, "output.json")))["chunks"]
        if not ch:
            tos.append(0)
        elif {rule}:
            tos.append(0)
        else:
            tos.append(1)
    print("Average take turn: ", sum(tos) / len(tos))
'''
RIGHT = 'ch[-1]["timestamp"][-1] - ch[0]["timestamp"][0] < 1 and len(ch) <= 3'
WRONG = "False"  # any word is a takeover


def _load():
    spec = importlib.util.spec_from_file_location("fdb_official_check", CHECK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _official(d: Path, rule: str) -> Path:
    ev = d / "v1_v1.5" / "evaluation"
    ev.mkdir(parents=True)
    for t in ("smooth_turn_taking", "user_interruption", "backchannel"):
        (ev / f"eval_{t}.py").write_text("raise SystemExit('not used by this tree')\n")
    (ev / "eval_pause_handling.py").write_text(_PAUSE.format(rule=rule))
    return d


def _tree(root: Path) -> Path:
    spans = {"0": [(0.5, 0.9), (1.0, 1.4), (1.5, 2.6)], "1": [(3.0, 3.3), (3.4, 3.6)], "2": []}
    for sid, ws in spans.items():
        d = root / "pause_handling" / sid
        d.mkdir(parents=True)
        (d / "input.wav").write_bytes(b"")
        (d / "pause.json").write_text(json.dumps([{"text": "[PAUSE]", "timestamp": [1.0, 2.0]}]))
        chunks = [{"text": f"w{i}", "timestamp": list(s)} for i, s in enumerate(ws)]
        (d / "output.json").write_text(json.dumps({"text": " ".join(c["text"] for c in chunks), "chunks": chunks}))
    return root


def test_check_agrees_with_the_right_rule_and_flags_a_wrong_one(tmp_path, capsys):
    check = _load()
    tree = _tree(tmp_path / "tree")
    assert check.main(["--official", str(_official(tmp_path / "right", RIGHT)), str(tree)]) == 0
    out = capsys.readouterr().out
    assert "1/1 metrics agree" in out and "0.333333333" in out
    assert check.main(["--official", str(_official(tmp_path / "wrong", WRONG)), str(tree)]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "0.666666667" in out  # the wrong rule's number, shown beside ours
    assert not (tree / "metrics.json").exists()  # the check ran on a copy


def test_check_usage_errors(tmp_path):
    check = _load()
    assert check.main(["--official", str(tmp_path), str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit, match="no official evaluation scripts"):
        check.main(["--official", str(tmp_path), str(_tree(tmp_path / "t"))])

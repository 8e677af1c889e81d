"""benchmarks/liberation.py --reuse: an earlier run's seeds are aggregated, not rerun, and keep their own commit."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "liberation.py"


def _load():  # noqa: ANN202 - the benchmark module
    spec = importlib.util.spec_from_file_location("liberation_bench", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _seed(seed: int, commit: str | None = None) -> dict:
    r = {"seed": seed, "wer": 0.2, "timings_s": {}, "splits": {}}
    return {**r, "commit": commit} if commit else r


def test_reuse_takes_requested_seeds_first_file_wins_and_marks_unknown_commits(tmp_path: Path) -> None:
    lib = _load()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"per_seed": [_seed(1, "e217d4a"), _seed(5)]}))
    b.write_text(json.dumps({"per_seed": [_seed(1, "other"), _seed(2)]}))
    got = lib.reused_seeds([a, b], [0, 1, 2])
    assert [r["seed"] for r in got] == [1, 2]  # seed 5 was not asked for; seed 0 is left to run
    assert got[0]["commit"] == "e217d4a"  # the first file that has a seed wins
    assert got[1]["commit"] == "?"  # a result saved before commits were recorded says so


def test_reuse_of_a_file_that_is_not_a_result_is_one_line(tmp_path: Path) -> None:
    lib = _load()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit, match="not a liberation result"):
        lib.reused_seeds([bad], [0])
    with pytest.raises(SystemExit, match="not a liberation result"):
        lib.reused_seeds([tmp_path / "missing.json"], [0])

"""The evaluate step's liberation table: one row per family and one overall row per split."""

from __future__ import annotations

from lws_core.eval.liberation import ModeResult, liberation_table


def test_each_split_has_one_overall_row_and_the_ratio_of_lws_to_the_ceiling() -> None:
    ceil = ModeResult("text_ceiling", "test", {"convert": 0.5, "python": 1.0}, {}, 0.4, None, 10)
    casc = ModeResult("cascade", "test", {"convert": 0.25, "python": 0.5}, {}, 0.2, None, 10)
    lws = {"test": {"convert": 0.25, "python": 1.0, "overall": 0.3}}  # as the evaluate step passes it
    md = liberation_table({"test": {"text_ceiling": ceil, "cascade": casc}}, lws)
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| convert", "| python", "| overall"]
    assert rows[-1] == "| overall | 0.40 | 0.20 | 0.30 | 0.75 |"
    assert "| convert | 0.50 | 0.25 | 0.25 | 0.50 |" in rows

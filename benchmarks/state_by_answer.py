"""Free-running state accuracy split by whether the session's written answer was right.

    .venv/bin/python benchmarks/state_by_answer.py EVAL_DIR [EVAL_DIR ...]

Reads each evaluation's ``session_scores.json`` (``lws eval run``; the test split) and prints, per
evaluation, the state error rate over the units of sessions answered right, answered wrong, and not
graded (silence, backchannel-only sessions), with their unit and session counts.

Why: held-out state accuracy sits just under its 0.95 goal, and most of its error units are answer-length
mismatches (``state_errors_offset_*``). A labelled speak run is as long as the reference answer, so a wrong
answer of another length misses units there by construction. This split says how much of the state error
is turn-taking and how much follows the answer's content, without re-running the model.
"""

from __future__ import annotations

import argparse

from lws_core.eval.sessions import SessionScores


def split(scores: SessionScores) -> dict[str, tuple[int, int, int]]:
    """{group: (state error units, units, sessions)} for groups right / wrong / ungraded."""
    states = scores.metrics.get("state_accuracy", {})
    graded = scores.metrics.get("task_accuracy", {})
    out = {g: [0.0, 0.0, 0] for g in ("right", "wrong", "ungraded")}
    for sid, (ok, units) in states.items():
        if sid not in graded:
            g = "ungraded"
        else:
            num, den = graded[sid]
            g = "right" if num >= den else "wrong"
        out[g][0] += units - ok
        out[g][1] += units
        out[g][2] += 1
    return {g: (int(e), int(n), int(s)) for g, (e, n, s) in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_dirs", nargs="+")
    a = ap.parse_args()
    print("| evaluation | answered right: error units / units (sessions) | answered wrong | not graded | state accuracy |")
    print("|---|---|---|---|---|")
    for d in a.eval_dirs:
        parts = split(SessionScores.read(d))
        cells = [f"{e} / {n} = {e / n:.3f} ({s})" if n else "–" for e, n, s in parts.values()]
        err, units = sum(p[0] for p in parts.values()), sum(p[1] for p in parts.values())
        print(f"| `{d}` | {' | '.join(cells)} | {1 - err / max(units, 1):.3f} |")


if __name__ == "__main__":
    main()

"""LWS against the cascade (or the text ceiling), session by session, with a 95 % interval.

    .venv/bin/python benchmarks/paired_modes.py LWS_EVAL_DIR [LWS_EVAL_DIR ...] --against EVAL_DIR [--mode cascade]

Each ``LWS_EVAL_DIR`` is an ``lws eval run`` output (one LWS seed; its ``session_scores.json`` holds
``task_accuracy`` per graded `test` session). ``--against`` is an evaluation run with ``eval.liberation`` on, on the
same dataset and stand-ins: its ``session_scores.json`` also holds ``cascade_accuracy`` and
``text_ceiling_accuracy`` per session (the cascade and the ceiling depend on the stand-ins only, not on the LWS
seed). Sessions graded in both are paired; per session, LWS is the mean over the seeds. Prints, per seed and over
the seeds, LWS written accuracy minus the mode's on those sessions, with the promotion gate's paired bootstrap over
sessions (``lws_core.ops.gate.paired_bootstrap``, 95 % percentile interval), and how many sessions each gets right that the other does not.

Why: "LWS written >= the cascade" compared a mean over seeds with one cascade figure on 89-100 sessions, each with
an interval of about +-0.1; on the same sessions the difference is much tighter, and it says which way it goes.
"""

from __future__ import annotations

import argparse

import numpy as np

from lws_core.eval.sessions import SessionScores
from lws_core.ops.gate import paired_bootstrap


def graded(scores: SessionScores, metric: str) -> dict[str, float]:
    """{session id: 1.0 or 0.0} for one per-session grade."""
    return {sid: num / den for sid, (num, den) in scores.metrics.get(metric, {}).items() if den}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lws", nargs="+", help="LWS evaluation directories (one per seed)")
    ap.add_argument("--against", required=True, help="an evaluation with eval.liberation on, on the same dataset")
    ap.add_argument("--mode", choices=("cascade", "text_ceiling"), default="cascade")
    a = ap.parse_args()
    other = graded(SessionScores.read(a.against), f"{a.mode}_accuracy")
    if not other:
        raise SystemExit(f"error: {a.against}: no per-session {a.mode}_accuracy (evaluate with eval.liberation on)")
    seeds = [graded(SessionScores.read(d), "task_accuracy") for d in a.lws]
    common = sorted(set(other).intersection(*seeds))
    if not common:
        raise SystemExit("error: no graded session in common (another dataset or eval.limit?)")
    base = np.array([other[s] for s in common])
    print(f"{len(common)} sessions graded by every run; {a.mode}: {base.mean():.3f}")
    print(f"| run | LWS written | {a.mode} | LWS - {a.mode} (95 % interval) | only LWS right / only {a.mode} right |")
    print("|---|---|---|---|---|")
    rows = [(d, np.array([s[x] for x in common])) for d, s in zip(a.lws, seeds, strict=True)]
    if len(rows) > 1:
        rows.append((f"mean of {len(rows)} seeds", np.mean([r for _, r in rows], axis=0)))
    against = {x: [v, 1.0] for x, v in zip(common, base, strict=True)}
    for name, lws in rows:
        d = lws - base
        lo, hi, _, _ = paired_bootstrap({x: [v, 1.0] for x, v in zip(common, lws, strict=True)}, against, 0.95, 4000)
        print(f"| `{name}` | {lws.mean():.3f} | {base.mean():.3f} | {d.mean():+.3f} ({lo:+.3f} to {hi:+.3f}) | "
              f"{float(np.sum(np.clip(d, 0, None))):.1f} / {float(np.sum(np.clip(-d, 0, None))):.1f} |")


if __name__ == "__main__":
    main()

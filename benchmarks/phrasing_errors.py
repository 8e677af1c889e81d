"""Written accuracy by phrasing, for one task family on one graded split, and the misses (stop 44's diagnosis).

Runs each model over every single-turn session of ``--family`` in its run's own dataset split, groups the written
answers by the template phrasing the question was made from, and prints each miss. Why: a family's accuracy can
fall for one phrasing only (stop 44: convert on `test_seen` after `data.extra_phrasings`).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/phrasing_errors.py RUN_DIR [RUN_DIR ...] --family convert --split test_seen

``RUN_DIR`` is a pipeline run's KFP folder (``<workspace>/kfp/lws-retraining-*``: its ``synthesize/dataset`` and
``train/model``).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--family", default="convert")
    ap.add_argument("--split", default="test_seen", choices=["test", "test_seen", "validation"])
    args = ap.parse_args()

    from datasets import load_from_disk

    from lws_core.data.dataset import row_audio
    from lws_core.data.tasks import grade_written, phrasing_template
    from lws_core.engine import Engine

    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for run in args.runs:
        ds = load_from_disk(str(run / "synthesize" / "dataset"))[args.split]
        engine = Engine.from_dir(run / "train" / "model", lean=True)
        for row in ds:
            if row["task_family"] != args.family or row["scenario"] != "single_turn":
                continue
            meta = json.loads(row["session"])["meta"]
            written = "".join(u.write for u in engine.simulate(row_audio(row)).units)
            ok = grade_written(row["answer"], written)
            t = tally[phrasing_template(args.family, meta["phrasing"])]
            t[0] += ok
            t[1] += 1
            if not ok:
                print(f"miss ({run.name}): {row['question']!r} (answer {row['answer']}) -> {written[-70:]!r}")
    print(f"\n| phrasing ({args.family}, {args.split}, single-turn) | right |\n|---|---|")
    for template, (right, n) in sorted(tally.items(), key=lambda kv: kv[1][0] / kv[1][1]):
        print(f"| {template} | {right} / {n} |")


if __name__ == "__main__":
    main()

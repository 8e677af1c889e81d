"""Where does writing–speaking consistency fail? Every inconsistent session of a split, classified.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/consistency_errors.py --model MODEL_DIR --data DATASET_DIR \\
        [--split test] [--limit N] [--show 10]

A session is inconsistent (``lws_core.eval.metrics.consistent``) when it says a number it never
wrote. Each such number is put in one class:

- ``heard``: the user said it (an operand the written notes or answer copied differently),
- ``answer``: it is the question's true answer, which the document got wrong,
- ``other``: neither (the spoken answer computed something of its own).

Prints one JSON object (counts, the share of inconsistent sessions, examples).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--show", type=int, default=10, help="examples printed")
    a = ap.parse_args()
    import torch
    from tqdm.auto import tqdm

    from lws_core.data.dataset import load_dataset_dir, require_rows, row_audio
    from lws_core.data.tasks import key_facts
    from lws_core.engine import Engine
    from lws_core.eval.metrics import consistent

    torch.set_num_threads(1)
    rows = require_rows(load_dataset_dir(a.data), a.split)
    engine = Engine.from_dir(a.model)
    n = len(rows) if a.limit is None else min(a.limit, len(rows))
    classes: Counter = Counter()
    checked = bad = 0
    examples = []
    for i in tqdm(range(n), desc="simulate", unit="session"):
        row = rows[i]
        res = engine.simulate(row_audio(row))
        spoken, written = res.session.spoken_text(), res.written
        c = consistent(spoken, written)
        if c is None:
            continue
        checked += 1
        if c:
            continue
        bad += 1
        heard, answer = key_facts(row["question"]), key_facts(row["answer"] or "")
        extra = sorted(key_facts(spoken) - key_facts(written))
        kinds = ["heard" if x in heard else "answer" if x in answer else "other" for x in extra]
        classes.update(kinds)
        if len(examples) < a.show:
            examples.append({"scenario": row["scenario"], "question": row["question"], "spoken": spoken,
                             "written": written, "unwritten": dict(zip(extra, kinds, strict=True))})
    print(json.dumps({"model": a.model, "split": a.split, "sessions": n, "checked": checked,
                      "consistency": round(1 - bad / max(checked, 1), 4), "inconsistent": bad,
                      "unwritten_numbers": dict(classes), "examples": examples}, indent=1))


if __name__ == "__main__":
    main()

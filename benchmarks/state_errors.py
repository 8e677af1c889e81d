"""Where do free-running state errors come from? A decomposition of ``state_accuracy`` on the test split.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/state_errors.py --model MODEL_DIR --data DATASET_DIR [--limit N]

Every unit whose predicted state (listen/speak) differs from the label is put in one class by
``lws_core.eval.metrics.state_errors`` (onset late/early, offset short/long, spurious speak, dropout);
one JSON object is printed (counts, shares, per scenario). ``lws eval run`` reports the same counts.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict

from lws_core.eval.metrics import state_errors as classify


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args()
    from tqdm.auto import tqdm

    from lws_core.data.dataset import load_dataset_dir, require_rows, row_audio, row_session
    from lws_core.engine import Engine

    rows = require_rows(load_dataset_dir(a.data), "test")
    engine = Engine.from_dir(a.model)
    n = len(rows) if a.limit is None else min(a.limit, len(rows))
    total: Counter = Counter()
    per_scenario: dict[str, Counter] = defaultdict(Counter)
    units = 0
    for i in tqdm(range(n), desc="simulate", unit="session"):
        row = rows[i]
        gold = [u.state for u in row_session(row).units]
        pred = [u.state for u in engine.simulate(row_audio(row)).session.units]
        c = classify(pred, gold)
        units += min(len(pred), len(gold))
        total += c
        per_scenario[row["scenario"]] += c
        per_scenario[row["scenario"]]["units"] += min(len(pred), len(gold))
    errors = sum(total.values())
    print(json.dumps({
        "model": a.model, "sessions": n, "units": units, "state_accuracy": round(1 - errors / max(units, 1), 4),
        "errors": dict(total), "error_share": {k: round(v / max(errors, 1), 3) for k, v in total.items()},
        "accuracy_if_offsets_forgiven": round(1 - (errors - total["offset_short"] - total["offset_long"]) / max(units, 1), 4),
        "per_scenario": {k: dict(v) for k, v in per_scenario.items()},
    }, indent=1))


if __name__ == "__main__":
    main()

"""Do answers hold up late in a long session? Test questions chained into one stream, graded one by one.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/long_context.py --model MODEL_DIR --data DATASET_DIR \
        --chain 12 --chains 8 --windows 2048 1024 512

Why: the LWS stage trains on single sessions (a few hundred tokens each: ``--lengths`` prints the split's
token lengths), but a live session goes on for minutes, and the engine's sliding window
(``engine.max_context_tokens``) lets its context grow to that many positions before a rebuild restarts it
from position 0. Past the longest training sequence the model attends at positions it never trained at.
This benchmark measures what that costs: ``--chain`` consecutive test sessions (their audio back to back,
so each question follows the last one's answer and pause) go through one engine session, and each
question's units are scored as that session would be alone — written and spoken answer of its own
family, state accuracy against its own labels — by its position in the chain. The same questions are also
run alone (``alone``), the reference. One JSON object per window is printed, and a table.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def _score(units, row, labels) -> dict[str, float | None]:  # noqa: ANN001
    """One question's units against its own session's labels (the evaluation's own graders)."""
    from lws_core.eval.stream import grade_units

    return _grades(*grade_units(units, row, labels)[:4])


def _grades(ok: int, n: int, w: bool | None, s: bool | None) -> dict[str, float | None]:
    return {"state": ok / n, "written": None if w is None else float(w), "spoken": None if s is None else float(s)}


def _lengths(data: str) -> None:
    from lws_core.data.dataset import load_dataset_dir
    from lws_core.schema import SchemaTokenizer
    from lws_core.train.collator import LWSCollator

    dd = load_dataset_dir(data)
    tok = SchemaTokenizer.load(f"{data}/tokenizer")
    for split in dd:
        first = dd[split][0]
        col = LWSCollator(tok, int(first.get("audio_tokens_per_unit") or 10), 16000, max_length=None)
        rows = dd[split].select_columns(["id", "session"])
        n = np.array([col.token_length(r) for r in rows])
        print(f"{split}: {len(n)} sessions, tokens p50 {np.median(n):.0f}, p99 {np.percentile(n, 99):.0f}, max {n.max()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--chain", type=int, default=12, help="Questions per chained stream.")
    ap.add_argument("--chains", type=int, default=8, help="Streams (each of --chain different test sessions).")
    ap.add_argument("--windows", type=int, nargs="+", default=[2048, 1024, 512], help="engine.max_context_tokens values.")
    ap.add_argument("--split", default="test")
    ap.add_argument("--scenario", default="single_turn", help="Only this scenario's sessions (all: '').")
    ap.add_argument("--lengths", action="store_true", help="Print the dataset's token lengths per split and exit.")
    ap.add_argument("--out", type=Path, default=None,
                    help="Write flat metrics (long_task_accuracy[_later|_alone], long_spoken_accuracy, long_state_accuracy; "
                    "suffixed _seen_phrasing on test_seen) for the first of --windows, for benchmarks/seed_metrics.py --extra.")
    a = ap.parse_args()
    if a.lengths:
        _lengths(a.data)
        return
    from tqdm.auto import tqdm

    from lws_core.data.dataset import load_dataset_dir, require_rows, row_audio, row_session
    from lws_core.engine import Engine, EngineConfig
    from lws_core.eval.stream import run_stream

    rows = require_rows(load_dataset_dir(a.data), a.split)
    picked = [i for i in range(len(rows)) if not a.scenario or rows[i]["scenario"] == a.scenario][: a.chain * a.chains]
    if len(picked) < a.chain * a.chains:
        raise SystemExit(f"error: only {len(picked)} {a.scenario or 'any'} sessions in {a.split}; lower --chain/--chains")
    items = [(rows[i], row_session(rows[i]), row_audio(rows[i])) for i in picked]
    results: dict[str, dict] = {}
    for window in ["alone", *a.windows]:
        cfg = EngineConfig() if window == "alone" else EngineConfig(max_context_tokens=window)
        engine = Engine.from_dir(a.model, config=cfg)
        by_pos: dict[int, list[dict]] = defaultdict(list)
        rebuilds = 0
        for c in tqdm(range(a.chains), desc=f"window {window}", unit="chain"):
            chain = items[c * a.chain : (c + 1) * a.chain]
            if window == "alone":
                for pos, (row, labels, audio) in enumerate(chain):
                    res = engine.simulate(audio)
                    by_pos[pos].append(_score(res.units, row, labels))
                continue
            stream = run_stream(engine, chain)
            rebuilds += stream.rebuilds
            for q in stream.questions:
                by_pos[q.position].append(_grades(q.state_correct, q.units, q.written, q.spoken))
        later = [x for pos in by_pos if pos > 0 for x in by_pos[pos]]
        summary = {"rebuilds": rebuilds, "by_position": {}, "later_written": float(np.mean([x["written"] for x in later if x["written"] is not None]))}
        for pos in sorted(by_pos):
            s = by_pos[pos]
            summary["by_position"][pos] = {
                k: (float(np.mean(v)) if (v := [x[k] for x in s if x[k] is not None]) else None) for k in ("state", "written", "spoken")
            }
        for name, sl in (("first_third", slice(0, a.chain // 3)), ("last_third", slice(-(a.chain // 3), None)), ("all", slice(None))):
            flat = [x for pos in sorted(by_pos)[sl] for x in by_pos[pos]]
            summary[name] = {k: (float(np.mean(v)) if (v := [x[k] for x in flat if x[k] is not None]) else None) for k in ("state", "written", "spoken")}
        results[str(window)] = summary
        print(json.dumps({"window": window, **{k: summary[k] for k in ("rebuilds", "first_third", "last_third", "all")}}), flush=True)
    if a.out is not None:
        suffix = "" if a.split == "test" else "_seen_phrasing"
        w = results[str(a.windows[0])]
        flat = {
            f"long_task_accuracy{suffix}": w["all"]["written"], f"long_task_accuracy_later{suffix}": w["later_written"],
            f"long_spoken_accuracy{suffix}": w["all"]["spoken"], f"long_state_accuracy{suffix}": w["all"]["state"],
            f"long_task_accuracy_alone{suffix}": results["alone"]["all"]["written"],
        }
        a.out.write_text(json.dumps(flat, indent=1))
    print("\n| window | rebuilds | written first / last third / all | spoken all | state first / last third / all |")
    print("|---|---|---|---|---|")
    for w, s in results.items():
        f, last, al = s["first_third"], s["last_third"], s["all"]
        print(f"| {w} | {s['rebuilds']} | {f['written']:.3f} / {last['written']:.3f} / {al['written']:.3f} | {al['spoken']:.3f} "
              f"| {f['state']:.3f} / {last['state']:.3f} / {al['state']:.3f} |")
    print("\nwritten accuracy by position in the chain (0 = the first question of the stream):")
    for w, s in results.items():
        row = " ".join("  - " if v["written"] is None else f"{v['written']:.2f}" for _, v in sorted(s["by_position"].items()))
        print(f"  {w:>6}: {row}")


if __name__ == "__main__":
    main()

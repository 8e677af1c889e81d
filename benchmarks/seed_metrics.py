"""Mean and 95 % interval over seeds of the pipeline's own evaluation metrics (one ``metrics.json`` per seed).

Each seed is a whole `lws pipeline run` (data, both stand-ins and the LWS stage seeded together), e.g.

    .venv/bin/python benchmarks/pipeline_wall.py --workspace W1 --set data.seed=1 --set train.seed=1 \\
        --set pretrain.backbone.seed=1001 --set pretrain.encoder.seed=1

then ``<workspace>/kfp/<run>/evaluate/eval_dir/metrics.json`` of every run (and, for the encoder's WER, its
``pretrain-encoder/encoder/pretrain_report.json``):

    .venv/bin/python benchmarks/seed_metrics.py S0/metrics.json S1/metrics.json S2/metrics.json \
        --encoder-reports S0/pretrain_report.json S1/pretrain_report.json S2/pretrain_report.json

Prints a markdown table: the headline metrics (both splits) and the written / spoken accuracy per task family,
each as mean ± half-width of the two-sided 95 % Student-t interval, with the per-seed values beside it.

``--base B0/metrics.json B1/… B2/…`` (the same seeds of a baseline, same order) adds the baseline's mean and the
paired difference (this − base, per seed, then mean ± 95 %): seeds share their data and stand-ins, so the paired
interval is the one that can tell a change from seed noise.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

HEADLINE = (
    "task_accuracy_seen_phrasing", "task_accuracy", "spoken_accuracy_seen_phrasing", "spoken_accuracy",
    "state_accuracy_seen_phrasing", "state_accuracy", "consistency_rate_seen_phrasing", "consistency_rate",
    "fdb_pause_tor_seen_phrasing", "fdb_pause_tor", "fdb_turn_taking_tor_seen_phrasing", "fdb_turn_taking_tor",
    "text_ceiling_accuracy_seen_phrasing", "text_ceiling_accuracy", "cascade_accuracy_seen_phrasing", "cascade_accuracy",
    "rtf_p95",
)
FAMILY_PREFIXES = (
    "task_accuracy_seen_phrasing.", "task_accuracy.", "spoken_accuracy_seen_phrasing.", "spoken_accuracy.",
    "text_ceiling_accuracy_seen_phrasing.", "text_ceiling_accuracy.",
)


def t95(n: int) -> float:
    """Two-sided 95 % Student-t quantile for n samples (n-1 degrees of freedom)."""
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def summarise(values: list[float]) -> str:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return f"{mean:.3f}"
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return f"{mean:.3f} ± {t95(n) * sd / math.sqrt(n):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("metrics", nargs="+", type=Path, help="one metrics.json per seed")
    ap.add_argument("--encoder-reports", nargs="*", type=Path, default=[],
                    help="the encoder stage's pretrain_report.json per seed, same order (adds encoder_wer)")
    ap.add_argument("--base", nargs="*", type=Path, default=[],
                    help="a baseline's metrics.json per seed, same order (adds its mean and the paired difference)")
    ap.add_argument("--base-encoder-reports", nargs="*", type=Path, default=[],
                    help="the baseline's pretrain_report.json per seed, same order (its encoder_wer, paired)")
    ap.add_argument("--extra", nargs="*", type=Path, default=[],
                    help="more flat metrics per seed (e.g. benchmarks/long_context.py --out): one file per seed in seed order, then the next kind of file in the same order")
    ap.add_argument("--base-extra", nargs="*", type=Path, default=[], help="the baseline's --extra files, same order")
    a = ap.parse_args()
    if a.base and len(a.base) != len(a.metrics):
        ap.error(f"--base needs one metrics.json per seed ({len(a.metrics)}), got {len(a.base)}")
    runs = [json.loads(p.read_text()) for p in a.metrics]
    for run, report in zip(runs, a.encoder_reports, strict=False):
        run["encoder_wer"] = json.loads(report.read_text())["wer"]
    base = [json.loads(p.read_text()) for p in a.base]
    for run, report in zip(base, a.base_encoder_reports, strict=False):
        run["encoder_wer"] = json.loads(report.read_text())["wer"]
    for group, extras in ((runs, a.extra), (base, a.base_extra)):
        for i, p in enumerate(extras):
            group[i % len(group)].update(json.loads(p.read_text()))  # several files per seed: round-robin by seed
    everyone = runs + base
    keys = [k for k in (*HEADLINE, "encoder_wer") if all(k in r for r in everyone)]
    keys += sorted(
        k for k in runs[0]
        if k.startswith(("long_", "stream_")) and not k.startswith("stream_questions")
        and all(r.get(k) is not None for r in everyone)
    )
    keys += sorted(k for k in runs[0] if k.startswith(FAMILY_PREFIXES) and all(k in r for r in everyone))
    if base:
        print(f"| metric | base ({len(runs)} seeds) | this | per seed, base → this | paired Δ |")
        print("|---|---|---|---|---|")
    else:
        print(f"| metric | mean ± 95 % ({len(runs)} seeds) | per seed |")
        print("|---|---|---|")
    for k in keys:
        vals = [float(r[k]) for r in runs]
        if not base:
            print(f"| `{k}` | {summarise(vals)} | {' / '.join(f'{v:.3f}' for v in vals)} |")
            continue
        was = [float(r[k]) for r in base]
        pairs = " / ".join(f"{b:.3f} → {v:.3f}" for b, v in zip(was, vals, strict=True))
        delta = summarise([v - b for b, v in zip(was, vals, strict=True)])
        print(f"| `{k}` | {summarise(was)} | {summarise(vals)} | {pairs} | {delta} |")


if __name__ == "__main__":
    main()

"""The capability-liberation experiment: does writing keep what the LLM can do, heard from speech?

Per seed (data, pretraining and training seeds all change together), on the
current code and the config in params.yaml (plus --set overrides):

1. synthesize the audio set; pretrain the text backbone and the CTC speech encoder (the stand-ins);
2. train three LWS models from those two checkpoints at equal compute (same steps, batch, seed):
   full LWS, no writing while listening, speech only (no write channel);
3. score, on the free-running streaming engine, per task family, on both held-out-voice splits
   (``test_seen``: training phrasings; ``test``: held-out phrasings):
   - text ceiling: the backbone given the question as text (its text view of each unit),
   - cascade: the backbone given the encoder's own greedy transcript (half-duplex ASR -> LLM),
   - LWS written and spoken, and the two ablations (written where they write, spoken always).

Writes one table per family with the mean and a 95 % t-interval over seeds to
``benchmarks/results/liberation.md`` (and JSON beside it).

    .venv/bin/python benchmarks/liberation.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("text_ceiling", "cascade", "lws_written", "lws_spoken", "no_notes_written", "no_notes_spoken", "speech_only_spoken")
SPLITS = ("test_seen", "test")


def t95(n: int) -> float:
    """Two-sided 95 % Student-t quantile for n samples (n-1 degrees of freedom)."""
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) if n > 1 else float("nan")


VARIANTS = ("full", "no_write_listen", "speech_only")


def seed_overrides(seed: int) -> dict[str, int]:
    """One benchmark seed: the data, LWS training and both stand-ins' seeds change together."""
    return {"data.seed": seed, "train.seed": seed, "pretrain.backbone.seed": 1000 + seed, "pretrain.encoder.seed": seed}


def one_seed(cfg, seed: int, work: Path, limit: int, log, variants: tuple[str, ...] = VARIANTS) -> dict:  # noqa: ANN001, ANN201
    from datasets import load_from_disk

    from lws_core.data import synthesize
    from lws_core.engine.engine import Engine
    from lws_core.engine.types import EngineConfig
    from lws_core.eval.ablation import transform_dataset
    from lws_core.eval.liberation import heard_by, heard_truth, run_mode
    from lws_core.model import LWSModel
    from lws_core.model.asr import load_recognizer
    from lws_core.train import train
    from lws_core.train.pretrain_backbone import build_backbone
    from lws_core.train.pretrain_encoder import pretrain_encoder

    cfg = cfg.with_overrides(seed_overrides(seed))
    work.mkdir(parents=True, exist_ok=True)
    t = {}
    t0 = time.time()
    synthesize(cfg, work / "ds", progress=False)
    t["synthesize_s"] = time.time() - t0
    t0 = time.time()
    b = build_backbone(cfg, work / "backbone", progress=False)
    t["backbone_s"] = time.time() - t0
    t0 = time.time()
    e = pretrain_encoder(cfg, work / "ds", work / "encoder", progress=False)
    t["encoder_s"] = time.time() - t0
    log(f"seed {seed}: backbone loss {b.final_loss} ({t['backbone_s']:.0f} s), encoder WER {e.wer} ({t['encoder_s']:.0f} s)")
    lws_cfg = cfg.with_overrides({"model.backbone_path": b.out_dir, "model.encoder_path": e.out_dir})
    models = {}
    for variant in variants:
        data = work / "ds" if variant == "full" else transform_dataset(work / "ds", work / f"ds_{variant}", variant)
        t0 = time.time()
        train(lws_cfg, data, work / f"lws_{variant}", progress=False, resume=False)
        t[f"train_{variant}_s"] = time.time() - t0
        models[variant] = work / f"lws_{variant}"
        log(f"seed {seed}: trained {variant} in {t[f'train_{variant}_s']:.0f} s")
    ec = EngineConfig(tts="none")
    text_engine = Engine(LWSModel.build(lws_cfg), ec)  # the backbone (its audio path is never used)
    rec = load_recognizer(e.out_dir)
    engines = {v: Engine.from_dir(p, config=ec) for v, p in models.items()}
    ds = load_from_disk(str(work / "ds"))
    out: dict = {"seed": seed, "timings_s": {k: round(v, 1) for k, v in t.items()}, "wer": e.wer, "splits": {}}
    for split in SPLITS:
        if split not in ds or len(ds[split]) == 0:
            continue
        rows = ds[split]
        res = {
            "text_ceiling": run_mode(text_engine, rows, "text_ceiling", split, heard_truth(text_engine), limit),
            "cascade": run_mode(text_engine, rows, "cascade", split, heard_by(rec, text_engine), limit),
        }
        for variant, mode in (("full", "lws"), ("no_write_listen", "no_notes"), ("speech_only", "speech_only")):
            if variant in engines:
                res[mode] = run_mode(engines[variant], rows, mode, split, None, limit)
        source = {"text_ceiling": "text_ceiling", "cascade": "cascade", "lws_written": "lws", "lws_spoken": "lws",
                  "no_notes_written": "no_notes", "no_notes_spoken": "no_notes", "speech_only_spoken": "speech_only"}
        table = {}
        for m, src in source.items():
            if src in res:
                r = res[src]
                table[m] = (r.spoken, r.spoken_overall) if m.endswith("_spoken") else (r.written, r.written_overall)
        out["splits"][split] = {
            m: {"families": fam, "overall": overall, "graded": res[source[m]].graded} for m, (fam, overall) in table.items()
        }
        log(f"seed {seed} {split}: " + ", ".join(f"{m} {v[1] if v[1] is not None else float('nan'):.2f}" for m, v in table.items()))
    return out


def aggregate(per_seed: list[dict]) -> dict:
    """{split: {family: {mode: (mean, half-width, n)}}} with 'overall' as a family."""
    agg: dict = {}
    for split in SPLITS:
        fams: set[str] = set()
        for r in per_seed:
            for m in MODES:
                fams |= set(r["splits"].get(split, {}).get(m, {}).get("families", {}))
        if not fams:
            continue
        agg[split] = {}
        for fam in [*sorted(fams), "overall"]:
            agg[split][fam] = {}
            for m in MODES:
                xs = []
                for r in per_seed:
                    cell = r["splits"].get(split, {}).get(m)
                    if cell is None:
                        continue
                    v = cell["overall"] if fam == "overall" else cell["families"].get(fam)
                    if v is not None and not math.isnan(v):
                        xs.append(float(v))
                if xs:
                    mean = float(np.mean(xs))
                    hw = t95(len(xs)) * float(np.std(xs, ddof=1)) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan")
                    agg[split][fam][m] = (mean, hw, len(xs))
    return agg


def verdicts(agg: dict) -> list[str]:
    """The issue's two claims, checked per split and family on the means."""
    out = []
    for split, fams in agg.items():
        for fam, cells in fams.items():
            if fam == "overall" or "text_ceiling" not in cells or "lws_written" not in cells:
                continue
            ceil, lws = cells["text_ceiling"][0], cells["lws_written"][0]
            casc = cells.get("cascade", (float("nan"),))[0]
            if ceil > 0.2:
                ok = lws >= 0.9 * ceil
                out.append(f"- {split} / {fam}: LWS written {lws:.2f} vs 0.9 × ceiling {0.9 * ceil:.2f}: {'holds' if ok else 'does not hold'}")
            out.append(f"- {split} / {fam}: LWS written {lws:.2f} vs cascade {casc:.2f}: {'LWS ≥ cascade' if lws >= casc else 'cascade ahead'}")
    return out


def render(agg: dict, per_seed: list[dict], cmd: str, wall: float) -> str:
    def cell(c: tuple | None) -> str:
        if c is None:
            return "–"
        m, hw, n = c
        return f"{m:.2f} ± {hw:.2f}" if not math.isnan(hw) else f"{m:.2f} (n={n})"

    lines = [
        "# Capability liberation (benchmarks/liberation.py)",
        "",
        f"Command: `{cmd}`  ",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}; machine: {platform.machine()}, {__import__('os').cpu_count()} cores, "
        f"{platform.python_version()}; commit {git_rev()}; wall {wall / 60:.1f} min.  ",
        f"Seeds: {[r['seed'] for r in per_seed]}; each cell is the mean over seeds ± the 95 % t-interval half-width.",
        "Written accuracy: the last `**Answer:**` line equals the known answer; spoken: the spoken answer states its key facts.",
        "",
        "Modes: **text ceiling** = the backbone hearing the question as text; **cascade** = the backbone hearing the",
        "encoder's own greedy transcript; **LWS** = the LWS model hearing the audio; ablations at equal compute:",
        "**no notes** (no writing while listening) and **speech only** (no write channel).",
        "",
    ]
    for split, fams in agg.items():
        title = "held-out voices, training phrasings" if split == "test_seen" else "held-out voices and phrasings"
        lines += [f"## {split} ({title})", "", "| family | " + " | ".join(MODES) + " |", "|---" * (len(MODES) + 1) + "|"]
        for fam, cells in fams.items():
            lines.append(f"| {fam} | " + " | ".join(cell(cells.get(m)) for m in MODES) + " |")
        lines.append("")
    lines += ["## The claims, on the means", "", *verdicts(agg), "", "## Per seed", ""]
    for r in per_seed:
        lines.append(f"- seed {r['seed']} (commit {r.get('commit', '?')}): encoder WER {r['wer']}, timings {r['timings_s']}")
    return "\n".join(lines) + "\n"


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--limit", type=int, default=60, help="graded sessions per split and mode")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                    help="LWS models to train per seed (full LWS and the two ablations); fewer to save time")
    ap.add_argument("--work", default="/tmp/lws-liberation")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/liberation.md"))
    ap.add_argument("--reuse", type=Path, action="append", default=[],
                    help="the .json of an earlier run: its seeds are aggregated, not rerun (each keeps its own commit "
                         "in the per-seed list); for finishing a run that was cut short")
    args = ap.parse_args()
    import yaml

    from lws_core.config import load_config

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = load_config(ROOT / "params.yaml").with_overrides(overrides)
    t0 = time.time()
    per_seed = reused_seeds(args.reuse, args.seeds)
    done = {r["seed"] for r in per_seed}
    text = None
    for seed in args.seeds:
        if seed in done:
            continue
        work = Path(args.work) / f"seed{seed}"
        shutil.rmtree(work, ignore_errors=True)
        r = one_seed(cfg, seed, work, args.limit, lambda m: print(m, flush=True), tuple(args.variants))
        per_seed.append({**r, "commit": git_rev()})
        per_seed.sort(key=lambda x: args.seeds.index(x["seed"]))
        # written after every seed, so a run cut short keeps the seeds it finished (the table says how many)
        text = write_results(per_seed, Path(args.out), time.time() - t0)
    if text is None:  # every seed was reused: nothing was written yet
        text = write_results(per_seed, Path(args.out), time.time() - t0)
    print(text)


def reused_seeds(paths: list[Path], seeds: list[int]) -> list[dict]:
    """Per-seed results of earlier runs for the requested seeds (the first file that has a seed wins)."""
    out: dict[int, dict] = {}
    for p in paths:
        try:
            rows = json.loads(p.read_text())["per_seed"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise SystemExit(f"--reuse {p}: not a liberation result ({e})") from None
        for r in rows:
            if r["seed"] in seeds:
                out.setdefault(r["seed"], {"commit": "?", **r})
    return [out[s] for s in seeds if s in out]


def write_results(per_seed: list, out: Path, wall_s: float) -> str:
    agg = aggregate(per_seed)
    cmd = "python benchmarks/liberation.py " + " ".join(sys.argv[1:])
    text = render(agg, per_seed, cmd, wall_s)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"per_seed": per_seed, "aggregate": agg}, indent=2, default=str))
    return text


if __name__ == "__main__":
    main()

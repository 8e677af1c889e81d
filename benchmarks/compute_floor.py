"""How long the default training stages must take on this CPU, at best: their FLOPs against its measured peak.

Why: `make run`'s goal is ≤ 10 min on 2 cores; the defaults take ~50. This script says whether any
implementation could close that gap at the defaults' compute, or whether only less compute (fewer steps,
less data: ``profiles/quick.yaml``) can. It

1. measures the CPU's peak matrix-multiply rate in float32 and bfloat16 (square products of 2,048, the
   best of several runs, at the threads torch uses);
2. counts the FLOPs of one training step of each stage with ``torch.utils.flop_counter.FlopCounterMode``
   (forward and backward, on the stage's real model shapes and, for the LWS stage, a real collated batch of
   the dataset), scales them to the stage's tokens or steps as recorded in a pipeline run's reports, and
3. prints the floor (total FLOPs / bf16 peak) beside what the run took.

Usage: ``benchmarks/compute_floor.py --run <kfp run dir of a make run>`` (the directory holding
``synthesize/``, ``pretrain-backbone/``, ``pretrain-encoder/`` and ``train/``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.matmul(a, b)  # warm-up (oneDNN primitive creation)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def eager(model: torch.nn.Module) -> torch.nn.Module:
    """Attention through plain products: torch's counter has no formula for the CPU SDPA kernel (it would count
    no attention at all); the same arithmetic either way."""
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = "eager"
    return model


def step_flops(fn) -> int:  # noqa: ANN001 - a callable running one forward and backward
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def backbone_flops_per_token(model_dir: Path, context: int) -> float:
    """FLOPs per token of the backbone's training step (fwd + bwd) at a session's mean length."""
    from transformers import AutoModelForCausalLM

    lm = eager(AutoModelForCausalLM.from_pretrained(str(model_dir)))
    ids = torch.randint(0, lm.config.vocab_size, (1, context))
    return step_flops(lambda: lm(input_ids=ids, labels=ids).loss.backward()) / context


def encoder_flops_per_step(encoder_dir: Path, batch: int) -> int:
    """FLOPs of one recogniser step (fwd + bwd of the encoder and its CTC head) on ``batch`` windows, each the
    frames Whisper's conv stack takes (twice ``max_source_positions``: the context and the unit)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    cfg = WhisperConfig.from_pretrained(str(encoder_dir))
    enc = eager(WhisperEncoder(cfg))
    vocab = len(json.loads((encoder_dir / "ctc_vocab.json").read_text()))
    head = torch.nn.Linear(cfg.d_model, vocab)
    feats = torch.randn(batch, cfg.num_mel_bins, 2 * cfg.max_source_positions)

    def run() -> None:
        h = enc(feats).last_hidden_state
        head(h).logsumexp(-1).sum().backward()

    return step_flops(run)


def lws_flops_per_token(model_dir: Path, data_dir: Path, sessions: int) -> float:
    """FLOPs per token of an LWS training step (fwd + bwd, the encoder frozen as by default) on real rows."""
    from lws_core.data.dataset import load_dataset_dir
    from lws_core.model.lws_model import LWSModel
    from lws_core.train.collator import LWSCollator

    model = eager(LWSModel.load(model_dir))
    model.apply_freezing(freeze_encoder=True, freeze_backbone=False)
    rows = [r for r in load_dataset_dir(data_dir)["train"].select(range(sessions))]
    col = LWSCollator(model.tokenizer, model.spec.audio_tokens_per_unit, model.spec.unit_samples, 2048)
    total, tokens = 0, 0
    for row in rows:  # one session a batch: no padding counted
        batch = col([row])
        total += step_flops(lambda b=batch: model(**b).loss.backward())
        tokens += int(batch["input_ids"].numel())
    return total / tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a pipeline run's KFP directory")
    ap.add_argument("--sessions", type=int, default=24, help="dataset sessions the LWS count is averaged over")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    torch.manual_seed(0)
    bb_dir, enc_dir = args.run / "pretrain-backbone" / "backbone", args.run / "pretrain-encoder" / "encoder"
    lws_dir, data_dir = args.run / "train" / "model", args.run / "synthesize" / "dataset"
    bb = json.loads((bb_dir / "pretrain_report.json").read_text())
    enc = json.loads((enc_dir / "pretrain_report.json").read_text())
    lws = json.loads((lws_dir / "train_summary.json").read_text())
    lws_spec = json.loads((lws_dir / "lws_model.json").read_text())
    enc_meta = json.loads((enc_dir / "lws_encoder.json").read_text())
    window_s = float(enc_meta.get("context_s", 0.5)) + float(enc_meta.get("unit_s", lws_spec.get("unit_s", 1.0)))
    from lws_core.config import load_config

    cfg = load_config()  # the reports do not record batch sizes; the run used params.yaml's
    batch = cfg.pretrain.encoder.batch_size

    peaks = {"float32": peak_gflops(torch.float32), "bfloat16": peak_gflops(torch.bfloat16)}
    bb_tokens = bb["tokens_per_s"] * bb["wall_s"]
    context = round(bb_tokens / (bb["steps"] * cfg.pretrain.backbone.batch_size))  # a session's mean length
    stages = {
        "pretrain backbone": (backbone_flops_per_token(bb_dir, context) * bb_tokens, bb["wall_s"]),
        "pretrain encoder": (encoder_flops_per_step(enc_dir, batch) * enc["steps"], enc["wall_s"]),
        "LWS stage": (lws_flops_per_token(lws_dir, data_dir, args.sessions) * lws["tokens"], lws["train_seconds"]),
    }
    print(f"backbone sessions: {context} tokens on average; encoder windows: {batch} x {window_s:.1f} s")
    print(f"peak matmul (2,048², {torch.get_num_threads()} threads): float32 {peaks['float32']:.0f} GFLOP/s, "
          f"bfloat16 {peaks['bfloat16']:.0f} GFLOP/s")
    print(f"{'stage':<20}{'TFLOP':>8}{'run s':>9}{'achieved GFLOP/s':>18}{'floor s (bf16 peak)':>21}")
    out = {"peak_gflops": peaks, "stages": {}}
    tot_f = tot_run = 0.0
    for name, (flops, wall) in stages.items():
        floor = flops / (peaks["bfloat16"] * 1e9)
        print(f"{name:<20}{flops / 1e12:>8.1f}{wall:>9.0f}{flops / wall / 1e9:>18.0f}{floor:>21.0f}")
        out["stages"][name] = {"tflop": flops / 1e12, "run_s": wall, "floor_s": floor}
        tot_f, tot_run = tot_f + flops, tot_run + wall
    print(f"{'total':<20}{tot_f / 1e12:>8.1f}{tot_run:>9.0f}{tot_f / tot_run / 1e9:>18.0f}"
          f"{tot_f / (peaks['bfloat16'] * 1e9):>21.0f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""Training throughput: DeepSpeed ZeRO-0/1/2 vs the plain Trainer on CPU (ratios from one run), and a GPU path.

CPU (default):
    .venv/bin/python benchmarks/train_throughput.py --data DATA_DIR [--steps 25] [--warmup 5] [--repeats 2]
Each variant trains the same tiny model on the same rows in a fresh process (so
DeepSpeed/accelerate state cannot leak between variants); variants run
interleaved (A B C D, then D C B A, ...) so that drift in the load of a shared
machine hits all of them alike. Steady-state tokens/s is measured between the
first logged step after ``--warmup`` and the last step.

GPU (runs only when CUDA exists, else prints a skip line and exits 0):
    .venv/bin/python benchmarks/train_throughput.py --gpu [--preset qwen-0.5b] [--seq 2048] [--batch 8]
A random-init backbone of the preset's shape (vocabulary padded to Qwen's 151,936)
with DeepSpeed ZeRO-2 bf16; reports tokens/s and model FLOPs utilization
(6·N·tokens + attention, over the GPU's dense bf16 peak).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "torch": {"train.backend": "torch"},
    "zero0": {"train.backend": "deepspeed", "train.zero_stage": 0},
    "zero1": {"train.backend": "deepspeed", "train.zero_stage": 1},
    "zero2": {"train.backend": "deepspeed", "train.zero_stage": 2},
}

_CHILD = r"""
import json, sys, time
from lws_core.config import LWSConfig
from lws_core.train import train

over, data, out, warmup = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])

class Clock:
    def __init__(self):
        self.marks = []
    def on_log(self, step, metrics):
        if "tokens_seen" in metrics:
            self.marks.append((step, time.perf_counter(), metrics["tokens_seen"]))
    def on_end(self, summary):
        pass

clock = Clock()
s = train(LWSConfig().with_overrides(over), data, out, callbacks=[clock], progress=False, resume=False)
m = [x for x in clock.marks if x[0] >= warmup]
(s0, t0, k0), (s1, t1, k1) = m[0], m[-1]
print("RESULT " + json.dumps({"tokens_per_s": (k1 - k0) / (t1 - t0), "steps_per_s": (s1 - s0) / (t1 - t0),
                              "whole_run_tokens_per_s": s.tokens_per_s, "parameters": s.parameters}))
"""


def cpu(args: argparse.Namespace) -> dict:
    base = {"train.max_steps": args.steps, "train.logging_steps": 1, "train.save_steps": 10**6,
            "train.batch_size": args.batch, "train.seed": 0}
    order = list(VARIANTS)
    runs: dict[str, list[dict]] = {k: [] for k in order}
    for rep in range(args.repeats):
        for name in order if rep % 2 == 0 else order[::-1]:
            over = {**base, **VARIANTS[name]}
            out = Path(args.out) / f"{name}-{rep}"
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            p = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(over), args.data, str(out), str(args.warmup)],
                               capture_output=True, text=True, env=env)
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            if p.returncode != 0 or not line:
                raise SystemExit(f"{name} failed:\n{p.stderr[-3000:]}")
            r = json.loads(line[0][7:])
            runs[name].append(r)
            print(f"{name} rep {rep}: {r['tokens_per_s']:.0f} tokens/s", file=sys.stderr, flush=True)
    med = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in runs.items()}
    return {
        "machine": f"{os.cpu_count()}-core CPU, no GPU, OMP_NUM_THREADS={args.threads}",
        "steps": args.steps, "warmup": args.warmup, "batch": args.batch, "repeats": args.repeats,
        "parameters": runs["torch"][0]["parameters"],
        "tokens_per_s_median": {k: round(v, 1) for k, v in med.items()},
        "tokens_per_s_all": {k: [round(r["tokens_per_s"], 1) for r in v] for k, v in runs.items()},
        "ratio_vs_torch": {k: round(v / med["torch"], 3) for k, v in med.items()},
    }


H100_BF16_DENSE_TFLOPS = 989.4


def gpu(args: argparse.Namespace) -> dict | None:
    import torch

    if not torch.cuda.is_available() and not args.dry_run:
        print("skip: no CUDA GPU on this machine (GPU throughput not measured)")
        return None
    from transformers import TrainingArguments

    from lws_core.config import LWSConfig
    from lws_core.model import LWSModel
    from lws_core.schema import train_bpe_tokenizer
    from lws_core.train.collator import LWSCollator
    from lws_core.train.deepspeed_config import deepspeed_config, ensure_single_process_env, resolve_precision
    from lws_core.train.trainer import _trainer_class
    from tests.model import synthetic

    on_gpu = torch.cuda.is_available()
    preset = args.preset if on_gpu else "tiny"
    cfg = LWSConfig().with_overrides({"model.preset": preset})
    tok = train_bpe_tokenizer(synthetic.CORPUS, vocab_size=300)
    model = LWSModel.build(cfg, tokenizer=tok)
    if on_gpu and preset.startswith("qwen"):
        model.lm.resize_token_embeddings(151936)  # the real Qwen vocabulary: its logits are a large share of the FLOPs
    # rows of about --seq tokens (whole units)
    n_units = max(1, args.seq // 15 + 1)  # a listen unit is K + 5 = 15 tokens: enough units, cut to --seq by the collator
    rows = [synthetic.row(synthetic.session(n_listen=n_units // 2, n_speak=n_units - n_units // 2, sid=f"g{i}"), seed=i)
            for i in range(args.batch * 4)]
    col = LWSCollator(tok, cfg.schema_.audio_tokens_per_unit, synthetic.UNIT_SAMPLES, max_length=args.seq)
    seq = len(col.encode(rows[0]))
    precision = resolve_precision("auto", on_gpu)
    ensure_single_process_env()
    ds = deepspeed_config(2, precision, on_gpu, model.lm.config.hidden_size)
    targs = TrainingArguments(output_dir=str(Path(args.out) / "gpu"), max_steps=args.steps, per_device_train_batch_size=args.batch,
                              learning_rate=1e-4, logging_steps=1, save_strategy="no", report_to=[], remove_unused_columns=False,
                              deepspeed=ds, bf16=precision == "bf16", fp16=precision == "fp16", disable_tqdm=True,
                              gradient_checkpointing=False)
    marks: list[tuple[int, float, float]] = []

    class Clock:
        def on_log(self, step: int, metrics: dict[str, float]) -> None:
            if on_gpu:
                torch.cuda.synchronize()
            if "tokens_seen" in metrics:
                marks.append((step, time.perf_counter(), metrics["tokens_seen"]))

        def on_end(self, summary: object) -> None: ...

    trainer = _trainer_class()(model=model, args=targs, train_dataset=rows, data_collator=col, lws_callbacks=[Clock()])
    trainer.train()
    m = [x for x in marks if x[0] >= args.warmup]
    (s0, t0, k0), (s1, t1, k1) = m[0], m[-1]
    tps = (k1 - k0) / (t1 - t0)
    lm = model.lm.config
    n_params = sum(p.numel() for p in model.parameters())
    flops_per_token = 6 * n_params + 12 * lm.num_hidden_layers * lm.hidden_size * seq
    mfu = flops_per_token * tps / (H100_BF16_DENSE_TFLOPS * 1e12) if on_gpu else None
    return {"device": torch.cuda.get_device_name() if on_gpu else "cpu (dry run, tiny preset)", "preset": preset,
            "parameters": n_params, "seq_len": seq, "batch": args.batch, "precision": precision, "zero_stage": 2,
            "tokens_per_s": round(tps, 1), "steps_per_s": round((s1 - s0) / (t1 - t0), 3),
            "mfu_vs_h100_bf16_dense": None if mfu is None else round(mfu, 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", help="Synthesized dataset (CPU comparison).")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/lws-throughput")
    ap.add_argument("--gpu", action="store_true", help="GPU path: 0.5B-class random-init backbone, ZeRO-2 bf16.")
    ap.add_argument("--dry-run", action="store_true", help="Run the GPU path on CPU with the tiny preset (code check).")
    ap.add_argument("--preset", default="qwen-0.5b")
    ap.add_argument("--seq", type=int, default=2048)
    a = ap.parse_args()
    if a.gpu:
        r = gpu(a)
        if r is not None:
            print(json.dumps(r, indent=1))
        return
    if not a.data:
        raise SystemExit("--data DATA_DIR is required for the CPU comparison")
    print(json.dumps(cpu(a), indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.model.synthetic for the GPU rows
    main()

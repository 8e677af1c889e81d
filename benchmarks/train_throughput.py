"""Training throughput: DeepSpeed ZeRO-0/1/2 vs the plain Trainer on CPU (ratios from one run), and a GPU path.

CPU (default):
    .venv/bin/python benchmarks/train_throughput.py --data DATA_DIR [--steps 25] [--warmup 5] [--repeats 2]
Each variant trains the same tiny model on the same rows in a fresh process (so
DeepSpeed/accelerate state cannot leak between variants); variants run
interleaved (A B C D, then D C B A, ...) so that drift in the load of a shared
machine hits all of them alike. Steady-state tokens/s is measured between the
first logged step after ``--warmup`` and the last step.

GPU (runs only when CUDA exists, else prints a skip line and exits 0; part of benchmarks/gpu_check.sh):
    .venv/bin/python benchmarks/train_throughput.py --gpu [--backbone qwen-0.5b|qwen3-0.6b] [--seq 2048] [--batch 8] [--json F]
A random-init backbone of that shape (vocabulary padded to Qwen's 151,936, see
gpu_common.py) with DeepSpeed ZeRO-2 bf16; reports tokens/s and model FLOPs
utilization (6·N_lm + attention per token, over the GPU's dense bf16 peak).
    .venv/bin/python benchmarks/train_throughput.py --smoke --device cpu --backend torch   # code check, toy sizes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_common (it adds the repo root)
from gpu_common import write_json  # noqa: E402

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


def gpu(args: argparse.Namespace) -> dict | None:
    """ZeRO-`--zero-stage` (default 2) bf16 training of a random-init backbone through the project's Trainer.

    Tokens/s are the LM tokens (attention-mask positions) per second between the first
    logged step at or after ``--warmup`` and the last one. MFU counts model FLOPs per LM
    token as 6 x the LM's matmul parameters (all but the embedding lookup; the LM head
    counted once, also when tied to the embedding) plus the attention scores, 12 x layers x heads x head_dim x sequence length (the
    non-causal PaLM convention); ``mfu_with_encoder`` adds the audio encoder's 6 x N x
    positions per audio window. Both over the GPU's dense bf16 peak.
    """
    import torch
    from gpu_common import BACKBONES, build_model, device_facts, lm_shape, resolve_device

    from lws_core.train.collator import LWSCollator
    from lws_core.train.deepspeed_config import deepspeed_config, ensure_single_process_env, resolve_precision
    from lws_core.train.trainer import _trainer_class
    from tests.model import synthetic

    if args.dry_run:
        args.device, args.smoke = "cpu", True
    if args.device == "auto" and not torch.cuda.is_available() and not args.smoke:
        print("skip: no CUDA GPU on this machine (GPU throughput not measured)")
        return None
    device = resolve_device(args.device)
    on_gpu = device.startswith("cuda")
    backbone = args.backbone or ("tiny-qwen3" if args.smoke else "qwen-0.5b")
    if args.smoke:
        args.seq, args.batch, args.steps, args.warmup = min(args.seq, 128), min(args.batch, 2), min(args.steps, 3), 1
    if args.backend == "deepspeed" and not on_gpu and torch.cuda.is_available():
        raise SystemExit("error: DeepSpeed on CPU needs a machine without CUDA (the Trainer would use the GPU); "
                         "use --backend torch for a CPU run here")
    model = build_model(backbone)
    shape = lm_shape(model)
    n_units = max(1, args.seq // 15 + 1)  # a listen unit is K + 5 = 15 tokens: enough units, cut to --seq by the collator
    rows = [synthetic.row(synthetic.session(n_listen=n_units // 2, n_speak=n_units - n_units // 2, sid=f"g{i}"), seed=i)
            for i in range(args.batch * 4)]  # epochs repeat them
    col = LWSCollator(model.tokenizer, model.spec.audio_tokens_per_unit, synthetic.UNIT_SAMPLES, max_length=args.seq)
    enc0 = col.encode(rows[0])
    seq, windows_per_row = len(enc0), int(enc0.unit_audio.shape[0])
    precision = resolve_precision(args.precision, on_gpu)
    ds = None
    if args.backend == "deepspeed":
        ensure_single_process_env()
        ds = deepspeed_config(args.zero_stage, precision, on_gpu, model.lm.config.hidden_size)
    from transformers import TrainingArguments

    targs = TrainingArguments(output_dir=str(Path(args.out) / "gpu"), max_steps=args.steps, per_device_train_batch_size=args.batch,
                              learning_rate=1e-4, logging_steps=1, save_strategy="no", report_to=[], remove_unused_columns=False,
                              deepspeed=ds, bf16=precision == "bf16", fp16=precision == "fp16", disable_tqdm=True,
                              gradient_checkpointing=False,
                              dataloader_num_workers=2 if on_gpu else 0,  # collation (~10 ms a row) off the step's path
                              use_cpu=not on_gpu and args.backend == "torch" and torch.cuda.is_available())
    marks: list[tuple[int, float, float]] = []
    losses: list[float] = []
    # --profile N: the last N steps run under torch.profiler (and are left out of the tokens/s window)
    prof_from = args.steps - args.profile if args.profile else None
    prof: list = []

    class Clock:
        def on_log(self, step: int, metrics: dict[str, float]) -> None:
            if on_gpu:
                torch.cuda.synchronize()
            if "tokens_seen" in metrics:
                marks.append((step, time.perf_counter(), metrics["tokens_seen"]))
            if "loss" in metrics:
                losses.append(metrics["loss"])
            if prof_from is not None and step == prof_from:
                acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if on_gpu else [])
                prof.append(torch.profiler.profile(activities=acts))
                prof[0].__enter__()
                prof.append(time.perf_counter())
            if prof_from is not None and step == args.steps and len(prof) == 2:
                prof[0].__exit__(None, None, None)
                prof.append(time.perf_counter())

        def on_end(self, summary: object) -> None: ...

    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    trainer = _trainer_class()(model=model, args=targs, train_dataset=rows, data_collator=col, lws_callbacks=[Clock()])
    t_start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t_start
    m = [x for x in marks if x[0] >= args.warmup and (prof_from is None or x[0] <= prof_from)]
    if len(m) < 2:
        raise SystemExit(f"error: too few logged steps after warm-up ({len(m)}): raise --steps above --warmup + 1")
    (s0, t0, k0), (s1, t1, k1) = m[0], m[-1]
    tps = (k1 - k0) / (t1 - t0)
    attn = 12 * shape["layers"] * shape["heads"] * shape["head_dim"] * seq
    flops_per_token = 6 * shape["lm_matmul_parameters"] + attn
    enc_cfg = model.audio.encoder.config
    enc_flops_per_window = 6 * shape["audio_parameters"] * int(enc_cfg.max_source_positions)
    enc_flops_per_token = enc_flops_per_window * windows_per_row / seq
    facts = device_facts(device)
    peak = facts.get("peak_bf16_dense_tflops")
    mfu = flops_per_token * tps / (peak * 1e12) if peak and precision == "bf16" else None
    mfu_enc = (flops_per_token + enc_flops_per_token) * tps / (peak * 1e12) if mfu is not None else None
    return {
        "what": "training throughput, random-init backbone, project Trainer (LWSTrainer)",
        **facts, "smoke": bool(args.smoke), "backbone": backbone, "backbone_note": BACKBONES[backbone].note, **shape,
        "seq_len": seq, "audio_windows_per_row": windows_per_row, "batch": args.batch, "precision": precision,
        "backend": args.backend, "zero_stage": args.zero_stage if args.backend == "deepspeed" else None,
        "steps": args.steps, "warmup_steps": args.warmup, "measured_steps": s1 - s0,
        "tokens_per_s": round(tps, 1), "steps_per_s": round((s1 - s0) / (t1 - t0), 3), "wall_s": round(wall, 2),
        "model_flops_per_token": flops_per_token, "attention_flops_per_token": attn,
        "encoder_flops_per_token": round(enc_flops_per_token),
        "mfu": None if mfu is None else float(f"{mfu:.4g}"),  # significant digits: a toy model's MFU is ~1e-5
        "mfu_with_encoder": None if mfu_enc is None else float(f"{mfu_enc:.4g}"),
        "mfu_formula": "(6*lm_matmul_parameters + 12*layers*heads*head_dim*seq_len) * tokens_per_s / peak_bf16_dense",
        "losses": [round(x, 4) for x in losses], "loss_finite": bool(losses) and all(math.isfinite(x) for x in losses),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if on_gpu else None,
        **(_profile_summary(prof[0], args.profile, prof[2] - prof[1]) if len(prof) == 3 else {}),
    }


def _profile_summary(prof, steps: int, wall_s: float) -> dict:  # noqa: ANN001 - torch.profiler.profile
    """Where a step's time goes: the GPU's busy time against the wall, and the top ops by device and by host time.

    Why: MFU alone cannot say whether a step waits on the GPU (kernels: fuse, grow the batch) or on the host
    (Python, launches, data: overlap, capture), and the device machine's minutes are few.
    """
    ev = prof.key_averages()
    dev = lambda e: getattr(e, "self_device_time_total", 0) or 0  # noqa: E731 - µs; 0 without CUDA
    cpu = lambda e: e.self_cpu_time_total  # noqa: E731

    def top(key, n: int = 12) -> list[dict]:  # noqa: ANN001
        rows = sorted(ev, key=key, reverse=True)[:n]
        return [{"op": e.key[:80], "self_ms_per_step": round(key(e) / 1000 / steps, 3), "calls_per_step": round(e.count / steps, 1)} for e in rows]

    return {
        "profile_steps": steps, "profile_wall_ms_per_step": round(wall_s * 1000 / steps, 2),
        "profile_device_busy_ms_per_step": round(sum(dev(e) for e in ev) / 1000 / steps, 2),
        "profile_host_ops_per_step": round(sum(e.count for e in ev) / steps),
        "profile_top_device": top(dev), "profile_top_host": top(cpu),
    }


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", help="Synthesized dataset (CPU comparison).")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/lws-throughput")
    ap.add_argument("--gpu", action="store_true", help="GPU path: 0.5B-class random-init backbone, ZeRO-2 bf16.")
    ap.add_argument("--dry-run", action="store_true", help="The GPU path on CPU at toy sizes (= --device cpu --smoke).")
    ap.add_argument("--smoke", action="store_true", help="Toy sizes (tiny-qwen3 backbone, seq 128, 3 steps): a code check.")
    ap.add_argument("--device", default="auto", help="auto | cuda | cpu (GPU path)")
    ap.add_argument("--backbone", "--preset", dest="backbone", default=None,
                    help="qwen-0.5b (default) | qwen3-0.6b | tiny | tiny-qwen3 (see benchmarks/gpu_common.py)")
    ap.add_argument("--backend", choices=["deepspeed", "torch"], default="deepspeed")
    ap.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], default=2)
    ap.add_argument("--precision", default="auto", help="auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | fp32")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--profile", type=int, default=0, help="GPU path: run the last N steps under torch.profiler and "
                    "report device-busy time and the top ops (those steps are left out of tokens/s)")
    ap.add_argument("--json", help="Also write the GPU path's result here.")
    a = ap.parse_args(argv)
    if a.gpu or a.dry_run or a.smoke:
        r = gpu(a)
        if r is not None:
            write_json(a.json, r)
        return r
    if not a.data:
        raise SystemExit("--data DATA_DIR is required for the CPU comparison")
    r = cpu(a)
    print(json.dumps(r, indent=1))
    return r


if __name__ == "__main__":
    main()

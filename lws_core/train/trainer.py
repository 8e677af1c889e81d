"""Training: the Hugging Face Trainer with a DeepSpeed config (or plain torch), per-channel loss logging, resume.

Why the HF Trainer: checkpointing, resume (optimizer, scheduler, RNG and data
position), gradient accumulation and the DeepSpeed integration are solved there;
we add only the LWS loss and its per-channel reporting.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from lws_core.errors import ConfigError, InputError, SchemaMismatchError
from lws_core.hardware import bf16_autocast
from lws_core.train.callbacks import TrainCallback, TrainSummary
from lws_core.train.collator import CHAIN_COLUMN, ChainCollator, LWSCollator
from lws_core.train.deepspeed_config import (
    deepspeed_config,
    ensure_single_process_env,
    resolve_precision,
    restore_env,
)
from lws_core.train.resume import check_resumable, run_record, write_run_record
from lws_core.train.unheard import UnheardWords

SUMMARY_FILE = "train_summary.json"
LENGTH_COLUMN = "length"  # token lengths for the length-grouped sampler (train.group_by_length)
_QWEN_VOCAB = 151_665  # Qwen2.5's tokenizer: sizes the qwen presets' embeddings before a tokenizer exists


def checkpoint_dir_for(out_dir: Path) -> Path:
    """Checkpoints live beside the output, so a killed run can resume and the output stays clean."""
    return out_dir.parent / f".{out_dir.name}.checkpoints"


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """Newest checkpoint that was written to the end; a half-written newer one (killed mid-save) is removed.

    The HF Trainer writes ``trainer_state.json`` last, so its presence (and
    parseability) marks a complete checkpoint.
    """
    if not ckpt_dir.is_dir():
        return None
    found = []
    for d in ckpt_dir.glob("checkpoint-*"):
        try:
            found.append((int(d.name.split("-", 1)[1]), d))
        except ValueError:
            continue
    for _, d in sorted(found, reverse=True):
        try:
            json.loads((d / "trainer_state.json").read_text())
            return str(d)
        except (OSError, json.JSONDecodeError):
            shutil.rmtree(d, ignore_errors=True)
    return None


class _LWSTrainerMixin:
    """Adds LWS loss + per-channel accumulation to the HF Trainer."""

    lws_callbacks: list[TrainCallback]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001, ANN201
        held = getattr(self, "lws_model", None)
        if held is not None and held.holding_pretrained and self.state.global_step >= self.hold_steps:  # type: ignore[attr-defined]
            held.release_pretrained()  # projector warm-up over: train jointly
        with self.lws_autocast():  # type: ignore[attr-defined]
            out = model(**inputs)
        acc = self._channel_acc  # type: ignore[attr-defined]
        for name, v in out.channel_losses.items():
            k = out.channel_counts.get(name, 0)
            s, c = acc.get(name, (0.0, 0))
            acc[name] = (s + float(v.detach()) * k, c + k)
        self._tokens_seen += int(inputs["attention_mask"].sum())  # type: ignore[attr-defined]
        return (out.loss, out) if return_outputs else out.loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:
            for name, (s, c) in self._channel_acc.items():  # type: ignore[attr-defined]
                if c:
                    logs[f"loss_{name}"] = s / c
                    self._last_channel[name] = s / c  # type: ignore[attr-defined]
            self._channel_acc.clear()  # type: ignore[attr-defined]
            logs["tokens_seen"] = float(self._tokens_seen)  # type: ignore[attr-defined]
        super().log(logs, *args, **kwargs)  # type: ignore[misc]
        step = int(self.state.global_step)  # type: ignore[attr-defined]
        metrics = {k: float(v) for k, v in logs.items() if isinstance(v, int | float)}
        for cb in self.lws_callbacks:
            cb.on_log(step, metrics)


def _trainer_class():  # noqa: ANN202
    from transformers import Trainer

    class LWSTrainer(_LWSTrainerMixin, Trainer):
        def __init__(self, *args: Any, lws_callbacks: list[TrainCallback] | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.lws_callbacks = list(lws_callbacks or [])
            self._channel_acc: dict[str, tuple[float, int]] = {}
            self._last_channel: dict[str, float] = {}
            self._tokens_seen = 0
            self.lws_model: Any = None  # set with hold_steps when the pretrained parts wait for the projector
            self.hold_steps = 0
            self.joint_lr_scale = 1.0
            self.rewarm_steps = 0
            self.lws_autocast: Any = contextlib.nullcontext  # bf16 autocast of the forward on a bf16-native CPU

        def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
            """Checkpoint an LWS model whose backbone ties its embeddings (Qwen's do).

            The Trainer writes a non-``PreTrainedModel`` with ``safetensors.save_file``,
            which refuses tensors that share memory (``embed_tokens`` and ``lm_head``).
            Writing the second name as a copy keeps the file loadable with
            ``load_state_dict``, which copies both names back into the one tied tensor.
            """
            if state_dict is None and not hasattr(self.model, "save_pretrained"):
                state_dict = self.model.state_dict()
            if state_dict is not None:
                seen: set[tuple[int, int]] = set()
                unshared = {}
                for k, v in state_dict.items():
                    key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else None
                    unshared[k] = v.clone() if key in seen else v
                    if key is not None:
                        seen.add(key)
                state_dict = unshared
            super()._save(output_dir, state_dict=state_dict)

        def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
            """Linear warm-up and decay; with a projector warm-up, a second warm-up when the pretrained parts join.

            Adam's first steps on weights it has never updated move every one of them
            by about the learning rate; released all at once at full rate, that wiped
            out the pretrained backbone (loss 0.66 -> 1.21 in 20 steps). So after the
            hold the rate climbs again from zero, to ``joint_lr_scale`` × the base rate.
            """
            if self.lr_scheduler is None and self.hold_steps:
                from torch.optim.lr_scheduler import LambdaLR

                warm, hold, rewarm, scale = self.args.warmup_steps, self.hold_steps, max(self.rewarm_steps, 1), self.joint_lr_scale
                total = max(num_training_steps, hold + 1)

                def factor(step: int) -> float:
                    if step < hold:
                        return min(1.0, (step + 1) / max(warm, 1))
                    decay = max(0.0, (total - step) / max(total - hold, 1))
                    return scale * min(1.0, (step - hold + 1) / rewarm) * decay

                self.lr_scheduler = LambdaLR(optimizer or self.optimizer, factor)
                self._created_lr_scheduler = True
                return self.lr_scheduler
            return super().create_scheduler(num_training_steps, optimizer)

    return LWSTrainer


def _use_log_friendly_progress(trainer) -> None:  # noqa: ANN001
    """Replace the Trainer's own tqdm bar by :func:`lws_core.progress.progress`.

    The Trainer's ProgressCallback draws a live ``\\r`` bar even into a log file or a
    TrainJob's log; ours is the same bar on a terminal and plain lines elsewhere.
    """
    from transformers.trainer_callback import ProgressCallback

    from lws_core.progress import progress as bar

    class _Progress(ProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN202
            if state.is_world_process_zero:
                self.training_bar = bar(total=state.max_steps, desc="train", unit="step")
            self.current_step = 0

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_Progress())


def with_lengths(rows, col: LWSCollator):  # noqa: ANN001, ANN201 - datasets.Dataset in and out
    """The rows with a ``length`` column (tokens after the ``max_length`` cut), which the Trainer's
    length-grouped sampler batches by (``train.group_by_length``): batches of similar length, so that
    a step does not compute the padding of random batches (46 % of the default data's tokens)."""
    if LENGTH_COLUMN in rows.column_names:
        return rows
    view = rows.select_columns([CHAIN_COLUMN if CHAIN_COLUMN in rows.column_names else "session"])
    return rows.add_column(LENGTH_COLUMN, [col.token_length(r) for r in view])


def chained(rows, max_chain: int, seed: int):  # noqa: ANN001, ANN201 - datasets.Dataset in and out
    """``train.chain_sessions``: the training rows as chains of 1..``max_chain`` sessions (``plan_chains``),
    one row per chain holding its members' indices; the collator joins them (``ChainCollator``)."""
    from datasets import Dataset

    from lws_core.train.collator import plan_chains

    chains = plan_chains(len(rows), max_chain, seed)
    return Dataset.from_dict({"id": [f"chain-{i}" for i in range(len(chains))], CHAIN_COLUMN: chains})


def _load_data(data_dir: Path):  # noqa: ANN202
    """Train and validation rows; an empty split is refused here, before a model is built.

    An empty validation split would otherwise train for the whole budget and only
    then report no validation losses (and the pipeline's gate would have nothing to
    compare); a dataset without any validation split is allowed (nothing to check).
    """
    from lws_core.data.dataset import load_dataset_dir, require_rows

    for split in ("train", "validation"):
        _refuse_empty_split_on_disk(data_dir, split)
    dd = load_dataset_dir(data_dir)
    train_rows = require_rows(dd, "train")
    val_rows = require_rows(dd, "validation") if "validation" in dd else None
    return dd, train_rows, val_rows


def _refuse_empty_split_on_disk(data_dir: Path, split: str) -> None:
    """An empty split is saved by ``datasets`` with no data file at all, and then cannot be loaded
    (``load_from_disk`` fails with an IndexError); say what is wrong instead."""
    state = data_dir / split / "state.json"
    try:
        files = json.loads(state.read_text()).get("_data_files")
    except (OSError, ValueError):
        return  # no such split, or not a saved split: load_dataset_dir explains
    if files == []:
        raise InputError(f"{data_dir}: split {split!r} is empty; synthesize more sessions (raise data.sessions)")


def _tokenizer_for(cfg, data_dir: Path):  # noqa: ANN001, ANN202
    """Tiny/small models use the dataset's own BPE (budgets were counted with it); real backbones extend theirs."""
    from lws_core.model.presets import PRESETS
    from lws_core.schema import SchemaTokenizer

    tok_dir = data_dir / "tokenizer"
    if cfg.model.backbone_path is None and PRESETS[cfg.model.preset].trains_tokenizer and tok_dir.is_dir():
        return SchemaTokenizer.load(tok_dir)
    return None


def _check_rows(cfg, train_rows) -> None:  # noqa: ANN001
    """Refuse data made with another unit length before a model is built (hours would be wasted otherwise)."""
    first = train_rows[0]
    unit_s = first.get("unit_s")
    if unit_s is not None and abs(float(unit_s) - cfg.schema_.unit_s) > 1e-9:
        raise SchemaMismatchError(
            f"dataset rows have unit_s={unit_s} but schema.unit_s={cfg.schema_.unit_s}; "
            "re-synthesize or set schema.unit_s to match"
        )


def _memory_check(cfg, tokenizer, train_rows, precision: str, on_gpu: bool, zero_stage: int | None):  # noqa: ANN001, ANN202
    """Estimated peak vs the memory limit, before any weight is allocated; ConfigError if it cannot fit.

    The model is sized on the ``meta`` device. Sequence length is the longest of
    the first 64 rows as the collator would cut them (with the dataset's
    tokenizer), or ``train.max_length`` when the tokenizer comes with a backbone
    that has not been read yet.
    """
    from lws_core.model.sizing import model_shape
    from lws_core.schema.tokens import SPECIAL_TOKENS
    from lws_core.train.memory import check_training_memory

    tc = cfg.train
    sample = [train_rows[i] for i in range(min(len(train_rows), 64))]
    if tokenizer is not None:
        col = LWSCollator(tokenizer, cfg.schema_.audio_tokens_per_unit, int(round(cfg.schema_.unit_s * cfg.schema_.sample_rate)),
                          tc.max_length)
        enc = [col.encode(r) for r in sample]
        # a chain (train.chain_sessions) may join that many of the longest sessions, up to the max_length cut
        seq_len = min(tc.max_length, max(len(e) for e in enc) * tc.chain_sessions)
        units = min(seq_len, max(e.unit_audio.shape[0] for e in enc) * tc.chain_sessions) * tc.batch_size
        shape = model_shape(cfg, tokenizer.vocab_size, tokenizer.special.pad, sorted(set(tokenizer.special.as_mapping().values())))
    else:
        from lws_core.model.presets import PRESETS

        seq_len = tc.max_length
        units = max(1, seq_len // (cfg.schema_.audio_tokens_per_unit + 4)) * tc.batch_size
        if cfg.model.backbone_path is not None:
            vocab = len(SPECIAL_TOKENS)  # raised to the backbone config's own vocabulary
        elif PRESETS[cfg.model.preset].trains_tokenizer:
            from lws_core.model.lws_model import DEFAULT_BPE_VOCAB

            vocab = DEFAULT_BPE_VOCAB
        else:
            vocab = _QWEN_VOCAB + len(SPECIAL_TOKENS)
        shape = model_shape(cfg, vocab)
    est = check_training_memory(shape, precision, zero_stage, tc.batch_size, seq_len, units, tc.max_memory_gb, on_gpu)
    return seq_len, est


def train(
    cfg,  # noqa: ANN001 - LWSConfig
    data_dir: str | Path,
    out_dir: str | Path,
    callbacks: list[TrainCallback] | None = None,
    progress: bool = True,
    resume: bool = True,
) -> TrainSummary:
    """Train an LWS model on a synthesized dataset and save it to ``out_dir`` (atomically).

    Every check that can fail on user input (schema version, empty split, unit
    length, model paths, memory) runs before the first step. Checkpoints go to a
    hidden directory beside ``out_dir`` every ``train.save_steps``; with
    ``resume`` a killed run continues from the last one and ends with the same
    weights as an uninterrupted run. Checkpoints of a run with another training
    config or dataset are refused (ConfigError naming what differs), not resumed
    (:mod:`lws_core.train.resume`).
    """
    from transformers import TrainingArguments

    from lws_core.model import LWSModel
    from lws_core.train.metrics import evaluate_channel_losses

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    tc = cfg.train
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output path exists and is not a directory: {out_dir}")
    _, train_rows, val_rows = _load_data(data_dir)
    _check_rows(cfg, train_rows)
    ckpt_dir = checkpoint_dir_for(out_dir)
    if not resume:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    run = run_record(cfg, data_dir)
    last = last_complete_checkpoint(ckpt_dir)
    if last is not None:
        check_resumable(ckpt_dir, last, run, out_dir)  # before a model is built: refusing is cheap
    on_gpu = torch.cuda.is_available()
    precision = resolve_precision(tc.precision, on_gpu)
    if precision in ("bf16", "fp16") and not on_gpu:
        raise ConfigError(f"train.precision={precision} needs a GPU; use 'auto' or 'fp32' on CPU")
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)

    tokenizer = _tokenizer_for(cfg, data_dir)
    _memory_check(cfg, tokenizer, train_rows, precision, on_gpu, tc.zero_stage if tc.backend == "deepspeed" else None)
    torch.manual_seed(tc.seed)
    model = LWSModel.build(cfg, tokenizer=tokenizer)
    hold = cfg.pretrain.warmup.projector_steps if (cfg.model.backbone_path or cfg.model.encoder_path) else 0
    if hold:
        model.hold_pretrained()
    augment = UnheardWords(tc.unheard_word_rate, tc.seed) if tc.unheard_word_rate > 0 else None
    if tc.chain_sessions > 1:
        source, train_rows = train_rows, chained(train_rows, tc.chain_sessions, tc.seed)
        col = ChainCollator(
            source, model.tokenizer, model.spec.audio_tokens_per_unit, model.spec.unit_samples, tc.max_length, augment
        )
    else:
        col = LWSCollator(model.tokenizer, model.spec.audio_tokens_per_unit, model.spec.unit_samples, tc.max_length, augment)
    if tc.group_by_length:
        train_rows = with_lengths(train_rows, col)

    if is_main_process():
        write_run_record(ckpt_dir, run)  # every checkpoint written below belongs to this run
    ds_cfg = None
    # the Trainer and DeepSpeed set process-wide variables (ACCELERATE_USE_DEEPSPEED, rank variables);
    # undo them afterwards so later runs in this process, and child processes, start clean
    env_before: dict[str, str | None] = dict(os.environ)
    if tc.backend == "deepspeed":
        ensure_single_process_env()
        ds_cfg = deepspeed_config(tc.zero_stage, precision, on_gpu, model.lm.config.hidden_size)
        if hold:  # the warm-up's two-phase schedule is the Trainer's (create_scheduler below), not DeepSpeed's
            ds_cfg.pop("scheduler", None)
    try:
        args = TrainingArguments(
            output_dir=str(ckpt_dir),
            max_steps=tc.max_steps,
            per_device_train_batch_size=tc.batch_size,
            gradient_accumulation_steps=tc.grad_accum,
            learning_rate=tc.learning_rate,
            warmup_steps=tc.warmup_steps,
            weight_decay=tc.weight_decay,
            max_grad_norm=1.0,
            lr_scheduler_type="linear",
            logging_steps=tc.logging_steps,
            save_steps=tc.save_steps,
            save_total_limit=2,
            seed=tc.seed,
            data_seed=tc.seed,
            report_to=[],
            disable_tqdm=not progress,
            remove_unused_columns=False,
            dataloader_num_workers=0,
            dataloader_pin_memory=on_gpu,
            deepspeed=ds_cfg,
            train_sampling_strategy="group_by_length" if tc.group_by_length else "random",
            length_column_name=LENGTH_COLUMN,
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            # never together with DeepSpeed: use_cpu silently turns DeepSpeed off (stack notes)
            use_cpu=(not on_gpu and tc.backend == "torch"),
            save_only_model=False,
        )
        trainer = _trainer_class()(
            model=model, args=args, train_dataset=train_rows, data_collator=col, lws_callbacks=callbacks
        )
        if progress:
            _use_log_friendly_progress(trainer)
        trainer.lws_model, trainer.hold_steps = (model, hold) if hold else (None, 0)
        if not on_gpu:  # on a GPU, DeepSpeed's own bf16/fp16 modes (train.precision) apply instead
            trainer.lws_autocast = lambda: bf16_autocast(tc.cpu_bf16)
        trainer.joint_lr_scale, trainer.rewarm_steps = cfg.pretrain.warmup.joint_lr_scale, cfg.pretrain.warmup.rewarm_steps
        t0 = time.time()
        result = trainer.train(resume_from_checkpoint=last)
        seconds = time.time() - t0
        final = _final_model(trainer, model, cfg, tc.zero_stage if ds_cfg else None)  # a collective under ZeRO-3
        # under a launcher (torchrun, a Kubeflow TrainJob) every rank gets here with the same weights; only
        # the world's process zero validates, saves and cleans up, so ranks sharing a volume cannot race
        # on the rename or delete each other's output
        is_main = is_main_process()
    finally:
        restore_env(env_before)
        _reset_accelerate_state()
        _unset_zero3_init()

    val = evaluate_channel_losses(final, val_rows, limit=64) if val_rows is not None and is_main else {}
    n_params = final.num_parameters()
    summary = TrainSummary(
        model_dir=str(out_dir),
        steps=int(trainer.state.global_step),
        train_seconds=round(seconds, 2),
        tokens_per_s=round(trainer._tokens_seen / max(seconds, 1e-9), 1),
        train_loss=float(result.training_loss),
        val_losses={k2: round(v, 5) for k2, v in val.items() if k2 != "state_accuracy"},
        val_state_accuracy=val.get("state_accuracy"),
        parameters=n_params,
        backend=tc.backend,
        zero_stage=tc.zero_stage if ds_cfg else None,
        precision=precision,
        resumed_from=last,
        config_digest=cfg.digest(),
        tokens=int(trainer._tokens_seen),
        train_channel_losses={k2: round(v, 5) for k2, v in trainer._last_channel.items()},
        model_bytes=sum(p.numel() * p.element_size() for p in final.parameters()),
        saved_dtype=str(next(final.parameters()).dtype).removeprefix("torch."),
    )
    if is_main:
        _save_atomically(final, out_dir, summary)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        for cb in callbacks or []:
            cb.on_end(summary)
    _leave_process_group()
    return summary


def _leave_process_group() -> None:
    """Under a launcher, wait for rank 0 to finish saving, then tear the process group down on every rank.

    Without it a rank that returned early exits while rank 0 still validates and saves, and the
    interpreter's exit destroys gloo's live worker threads: `terminate called without an active
    exception`, SIGABRT, and the launcher kills rank 0 mid-save (seen once in CI). A one-process
    group (DeepSpeed in a single process) is left alone so later runs in the same process reuse it.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
        dist.destroy_process_group()


def is_main_process() -> bool:
    """Global rank 0 of the process group, or the only process.

    Asked of torch.distributed, not of the Trainer: with DeepSpeed on CPU, accelerate
    sees no accelerator and reports one process while DeepSpeed's group spans every rank.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _reset_accelerate_state() -> None:
    """Accelerate keeps a process-wide singleton (DeepSpeed plugin, device); a next run must not inherit it."""
    try:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    except (ImportError, AttributeError):  # pragma: no cover - accelerate internals moved
        pass


def _unset_zero3_init() -> None:
    """Forget the Trainer's DeepSpeed config, so later models in this process are not built ZeRO-3-partitioned.

    ``TrainingArguments(deepspeed=...)`` registers its config process-wide; while it
    is alive, every ``from_config``/``from_pretrained`` runs under ``zero.Init`` and
    yields empty (partitioned) parameters.
    """
    try:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
    except ImportError:  # pragma: no cover - transformers without the DeepSpeed integration
        pass


def _final_model(trainer, model, cfg, zero_stage: int | None):  # noqa: ANN001, ANN202
    """The trained weights as a plain LWSModel.

    Under ZeRO-3 every parameter is partitioned (the live module holds empty
    tensors), so the full weights are gathered with DeepSpeed's
    ``stage3_gather_16bit_weights_on_model_save`` path (``_zero3_consolidated_16bit_state_dict``,
    via accelerate's ``get_state_dict``) and loaded into a freshly built,
    unpartitioned model. They keep the dtype they were trained in: bf16/fp16 with a
    16-bit precision on GPUs (the saved files are then 16-bit), fp32 on CPU. Other
    stages have whole weights in the live module and are saved in fp32.
    """
    if zero_stage == 3:
        from lws_core.model import LWSModel

        state = trainer.accelerator.get_state_dict(trainer.deepspeed)  # a collective: every rank takes part
        _unset_zero3_init()
        fresh = LWSModel.build(cfg, tokenizer=model.tokenizer)
        dtype = next(v.dtype for v in state.values() if v.is_floating_point())
        fresh.to(dtype)
        fresh.audio.featurizer.float()  # the log-mel window and filters stay fp32 (features are cast afterwards)
        missing, unexpected = fresh.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("audio.featurizer") for k in missing):
            raise RuntimeError(f"gathered ZeRO-3 weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return fresh
    return model.float()


def _save_atomically(model, out_dir: Path, summary: TrainSummary) -> None:  # noqa: ANN001
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp)
    (tmp / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2))
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"output path exists and is not a directory: {out_dir}")
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out_dir)

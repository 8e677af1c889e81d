"""Which run the checkpoints beside an output directory belong to, so a rerun resumes only its own.

Resume used to be keyed by the output directory alone: rerunning ``lws train`` into the
same ``--out`` with another learning rate or another dataset silently continued the old
run's weights, optimizer and schedule. Now the checkpoint folder holds ``run.json`` with
the config that shapes the training trajectory and a hash of the dataset, written before
the first step; a rerun whose config or data differ is refused before any model is built,
with a one-line message naming what differs and how to start over.

What counts: the ``schema``, ``model``, ``train`` and ``pretrain.warmup`` sections (minus
bookkeeping that does not change the weights: logging and save cadence, thread count,
memory limit), and the dataset's train/validation rows and tokenizer, by content.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from lws_core.data.card import UNVERSIONED
from lws_core.errors import ConfigError

RUN_FILE = "run.json"
# train.* fields that change when or how a run reports, not the weights it reaches
_BOOKKEEPING = {"logging_steps", "save_steps", "max_memory_gb", "num_threads"}
_DATA_PARTS = ("train", "validation", "tokenizer", "dataset_dict.json")


def training_config(cfg) -> dict[str, Any]:  # noqa: ANN001
    """The config sections a checkpoint's weights, optimizer and schedule depend on."""
    d = cfg.to_dict()
    return {
        "schema": d["schema"],
        "model": d["model"],
        "train": {k: v for k, v in d["train"].items() if k not in _BOOKKEEPING},
        "pretrain.warmup": d["pretrain"]["warmup"],
    }


def dataset_hash(data_dir: Path) -> str:
    """sha256 over the files of the train and validation splits and the tokenizer (names and bytes).

    Cache files that ``datasets`` wrote beside the splits (``card.UNVERSIONED``) are not the data: a reader that
    mapped a split must not make its checkpoint's dataset look different.

    Reads the data once (about a second per GB); the card and the test splits are left out,
    since training never reads them.
    """
    h = hashlib.sha256()
    for part in _DATA_PARTS:
        root = data_dir / part
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root] if root.is_file() else []
        files = [f for f in files if not any(fnmatch.fnmatch(f.name, pat) for pat in UNVERSIONED)]
        for f in files:
            h.update(f.relative_to(data_dir).as_posix().encode() + b"\0")
            with open(f, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(block)
            h.update(b"\0")
    return h.hexdigest()[:16]


def run_record(cfg, data_dir: Path) -> dict[str, Any]:  # noqa: ANN001
    """What a checkpoint folder remembers about the run that wrote it."""
    conf = training_config(cfg)
    digest = hashlib.sha256(json.dumps(conf, sort_keys=True).encode()).hexdigest()[:16]
    return {"config_digest": digest, "dataset_hash": dataset_hash(data_dir), "data_dir": str(data_dir), "config": conf}


def write_run_record(ckpt_dir: Path, record: dict[str, Any]) -> None:
    """Write ``run.json`` atomically (a reader never sees half a file)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / f".{RUN_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    tmp.replace(ckpt_dir / RUN_FILE)


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k in sorted(set(old) | set(new)):
        key = f"{prefix}{k}"
        a, b = old.get(k, "<unset>"), new.get(k, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, key + ".")
        elif a != b:
            out.append(f"{key} {a} -> {b}")
    return out


def check_resumable(ckpt_dir: Path, checkpoint: str, record: dict[str, Any], out_dir: Path) -> None:
    """Refuse to resume ``checkpoint`` when it was written with another training config or dataset."""
    fix = f"rerun with the same config and data, pass --no-resume to start over, or choose a new --out than {out_dir}"
    try:
        old = json.loads((ckpt_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        raise ConfigError(
            f"cannot resume {checkpoint}: it carries no record of its config and dataset; {fix}"
        ) from None
    what: list[str] = []
    if old.get("config_digest") != record["config_digest"]:
        diffs = _differences(old.get("config", {}), record["config"])
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        what.append(f"config differs ({shown or 'digest ' + str(old.get('config_digest'))})")
    if old.get("dataset_hash") != record["dataset_hash"]:
        what.append(f"dataset differs ({old.get('data_dir')} hash {old.get('dataset_hash')} -> "
                    f"{record['data_dir']} hash {record['dataset_hash']})")
    if what:
        raise ConfigError(f"cannot resume {checkpoint}: {', '.join(what)}; {fix}")

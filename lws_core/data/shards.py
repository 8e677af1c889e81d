"""Fan-out synthesis: N shard datasets (one pod each) merged into the one dataset an unsharded run makes.

Shard ``k`` of ``N`` synthesizes a contiguous run of the unsharded run's chunks
(:func:`lws_core.data.synth.shard_chunks`), so concatenating the shards in index order gives the
unsharded rows in the unsharded order, byte for byte. The merge still deduplicates by session id
(a shard retried after a partial upload, or two overlapping shard lists, must not double rows),
sums the cards (rows, rejects, hours, teacher tokens and cost) and keeps each shard's timings
(in ``synthesis.json``, beside the card).
Like :func:`~lws_core.data.synth.synthesize` it writes into a hidden temp dir and renames it into
place only at the end.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from lws_core.data.synth import SPLITS, SynthSummary, replace_dir, synthesize
from lws_core.errors import InputError


def _card(path: Path) -> dict[str, Any]:
    p = path / "card.json"
    if not p.is_file():
        raise InputError(f"{path}: not a synthesized shard (no card.json); was the shard step finished?")
    return json.loads(p.read_text())


def _run(path: Path) -> dict[str, Any]:
    """A shard's run facts (timings, the teacher's spend in its run); empty for a shard made before they moved out of the card."""
    from lws_core.data.card import RUN_FILE

    p = path / RUN_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


def _sum_usage(usages: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    usages = [u for u in usages if u]
    if not usages:
        return None
    out = dict(usages[0])
    for u in usages[1:]:
        for k, v in u.items():
            if isinstance(v, (int, float)) and not k.startswith("usd_per_1k"):
                out[k] = out.get(k, 0) + v
    for k in ("paid_cost_usd", "dataset_cost_usd"):
        out[k] = round(out[k], 6)
    return out


def merge_shards(cfg, shard_dirs: list[str | Path], out_dir: str | Path) -> SynthSummary:  # noqa: ANN001 - LWSConfig
    """One DatasetDict (+ card.json, README.md, tokenizer/) at ``out_dir`` from shard datasets, in shard order."""
    from datasets import DatasetDict, concatenate_datasets

    from lws_core.data.card import write_card
    from lws_core.data.dataset import load_dataset_dir

    t0 = time.time()
    if not shard_dirs:
        raise InputError("merge: no shard datasets given")
    dirs = [Path(p) for p in shard_dirs]
    cards = [_card(p) for p in dirs]
    order = sorted(range(len(dirs)), key=lambda i: ((cards[i].get("shard") or [0])[0], (cards[i].get("sessions") or [0])[0]))
    dirs, cards = [dirs[i] for i in order], [cards[i] for i in order]
    runs = [_run(p) for p in dirs]
    seeds = {c["seed"] for c in cards}
    if len(seeds) > 1:
        raise InputError(f"merge: shards were made with different seeds {sorted(seeds)}")
    loaded = [load_dataset_dir(p) for p in dirs]
    seen: set[str] = set()
    splits, dupes = {}, 0
    for split in SPLITS:
        parts = [dd[split] for dd in loaded if split in dd and len(dd[split])]
        if not parts:
            splits[split] = loaded[0][split]  # empty, with the right features
            continue
        ds = concatenate_datasets(parts)
        keep = []
        for j, sid in enumerate(ds["id"]):
            if sid in seen:
                dupes += 1
            else:
                seen.add(sid)
                keep.append(j)
        splits[split] = ds if len(keep) == len(ds) else ds.select(keep)
    rows = {s: len(splits[s]) for s in SPLITS}
    if sum(rows.values()) == 0:
        raise InputError("merge: no session in any shard")

    def total(key: str) -> dict[str, int]:
        c: collections.Counter[str] = collections.Counter()
        for card in cards:
            c.update(card.get(key) or {})
        return dict(sorted(c.items()))

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        from datasets.utils.logging import disable_progress_bar, enable_progress_bar

        disable_progress_bar()
        DatasetDict(splits).save_to_disk(str(tmp), num_shards={s: 1 for s in SPLITS if rows[s] == 0})
        enable_progress_bar()
        shutil.copytree(dirs[0] / "tokenizer", tmp / "tokenizer")
        wall = round(time.time() - t0, 2)
        audio_hours = round(sum(c["audio_hours"] for c in cards), 4)
        summary = SynthSummary(
            out_dir=str(out_dir),
            rows=rows,
            rejects=total("rejects"),
            per_scenario=total("per_scenario"),
            per_family=total("per_family"),
            audio_hours=audio_hours,
            units=sum(c["units"] for c in cards),
            wall_s=wall,
            sessions_per_s=0.0,
            audio_s_per_s=0.0,
            extra={
                "reject_examples": [e for c in cards for e in c.get("reject_examples", [])][:10],
                "voices": total("voices"),
                "text_only": any(c.get("text_only") for c in cards),
                "teacher_usage": _sum_usage([r.get("teacher_usage") or c.get("teacher_usage") for c, r in zip(cards, runs, strict=True)]),
                "sessions": [cards[0]["sessions"][0], cards[-1]["sessions"][1]] if cards[0].get("sessions") else None,
                "timings": {"merge_s": wall, "duplicates_dropped": dupes},
                "shards": [
                    {"shard": c.get("shard") or [k, len(cards)], "sessions": c.get("sessions") or [0, 0],
                     "rows": sum(c["rows"].values()), "rejects": sum(c["rejects"].values()),
                     "timings": r.get("timings") or c.get("timings", {})}
                    for k, (c, r) in enumerate(zip(cards, runs, strict=True))
                ],
            },
        )
        write_card(tmp, cfg, summary, cards[0]["teacher"], sum(c["requested_sessions"] for c in cards))
        replace_dir(tmp, out_dir)
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def synthesize_sharded(cfg, out_dir: str | Path, shards: int, work_dir: str | Path | None = None,  # noqa: ANN001
                       **kwargs: Any) -> SynthSummary:
    """The fallback fan-out in one process (the pipeline's in-step mode, tests): each shard in turn, then the merge."""
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir else out_dir.parent / f".{out_dir.name}.shards"
    paths = []
    for k in range(shards):
        p = work / f"shard-{k:04d}"
        if not (p / "card.json").is_file():  # a finished shard is not made again (resume)
            synthesize(cfg, p, shard=(k, shards), **kwargs)
        paths.append(p)
    s = merge_shards(cfg, paths, out_dir)
    shutil.rmtree(work, ignore_errors=True)
    return s

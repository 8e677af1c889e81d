"""The dataset card: what is in a synthesized dataset and how it was made (card.json + README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lws_core.schema import SCHEMA_VERSION

# How one synthesis ran (wall time, per-step timings, the teacher's spend in this run): facts of the run, not
# of the data. They live beside the card, not in it, so that the same config synthesized twice writes the same
# card and README, and DVC versions equal data once (the workspace's .dvcignore leaves this file out).
RUN_FILE = "synthesis.json"
# What a dataset folder may hold that is not the dataset: the run's facts, and the cache files ``datasets`` writes
# beside a split's arrow files when a reader maps or filters it (``cache-<fingerprint>.arrow``). Neither is versioned
# (the .dvcignore of the workspace DVC repo and of the project's own) nor hashed for a resume (train.resume).
UNVERSIONED = (RUN_FILE, "cache-*.arrow")
# The teacher's spend that belongs to the data (what its replies cost, cached ones included); the rest of
# ``teacher_usage`` (requests paid, cache hits, retries, paid tokens) is the run's.
DATASET_USAGE = ("model", "dataset_prompt_tokens", "dataset_completion_tokens", "dataset_cost_usd",
                 "usd_per_1k_input", "usd_per_1k_output")

# What each split holds (card.json `splits`, README table); every split of synth.SPLITS has a line.
SPLIT_NOTES = {
    "train": "training phrasings, training voices",
    "validation": "training phrasings, training voices",
    "test": "held-out phrasings (each family's last), held-out voices",
    "test_seen": "training phrasings, held-out voices (separates a new voice from a new phrasing)",
}


def teacher_lines(u: dict[str, Any] | None) -> list[str]:
    """README lines for what the teacher's replies cost (none for an offline teacher); the run's spend is in RUN_FILE."""
    if not u:
        return []
    return [
        f"Teacher `{u['model']}`. Tokens for this dataset: {u['dataset_prompt_tokens']} prompt + "
        f"{u['dataset_completion_tokens']} completion, ${u['dataset_cost_usd']:.2f} (cached replies included; what this "
        f"run paid, its retries and cache hits are in `{RUN_FILE}`).",
        "",
    ]


def shard_lines(shards: list[dict[str, Any]]) -> list[str]:
    """README table of a merged dataset's shards: sessions, rows, rejects (where the time went is in RUN_FILE)."""
    if not shards:
        return []
    rows = [f"| {s['shard'][0]} | {s['sessions'][0]}-{s['sessions'][1] - 1} | {s['rows']} | {s['rejects']} |" for s in shards]
    return ["| shard | sessions | rows | rejects |", "|---|---|---|---|", *rows, ""]


def run_facts(summary) -> dict[str, Any]:  # noqa: ANN001
    """What RUN_FILE holds: how long the synthesis took, where the time went, and the teacher's spend in this run."""
    return {
        "wall_s": summary.wall_s,
        "sessions_per_s": summary.sessions_per_s,
        "audio_s_per_s": summary.audio_s_per_s,
        "workers": summary.extra.get("workers"),
        "timings": summary.extra.get("timings", {}),
        "teacher_usage": summary.extra.get("teacher_usage"),
        "shards": [{"shard": sh["shard"], "timings": sh.get("timings", {})} for sh in summary.extra.get("shards", [])],
    }


def write_card(directory: Path, cfg, summary, teacher: str, requested: int) -> dict[str, Any]:  # noqa: ANN001
    """Write card.json (machine-readable) and README.md (the same facts for people); return the card.

    Both hold only facts of the data, so equal configs write equal files; :func:`run_facts` goes to RUN_FILE.
    """
    usage = summary.extra.get("teacher_usage")
    card = {
        "schema_version": SCHEMA_VERSION,
        "config_digest": cfg.digest(),
        "seed": cfg.data.seed,
        "teacher": teacher,
        "requested_sessions": requested,
        "rows": summary.rows,
        "splits": dict(SPLIT_NOTES),
        "text_only": bool(summary.extra.get("text_only", False)),
        "rejects": summary.rejects,
        "reject_examples": summary.extra.get("reject_examples", []),
        "per_scenario": summary.per_scenario,
        "per_family": summary.per_family,
        "voices": summary.extra.get("voices", {}),
        "audio_hours": summary.audio_hours,
        "units": summary.units,
        "unit_s": cfg.schema_.unit_s,
        "max_write_tokens": cfg.schema_.max_write_tokens,
        "max_say_tokens": cfg.schema_.max_say_tokens,
        "budget_tokenizer": "tokenizer/ (byte-level BPE, vocab 512, trained from template text)",
        "scenario_weights": dict(cfg.data.scenarios),
        # what the dataset's teacher replies cost, cached ones included (this run's spend: RUN_FILE)
        "teacher_usage": {k: usage[k] for k in DATASET_USAGE if k in usage} if usage else None,
        "sessions": summary.extra.get("sessions"),  # [first, last + 1) session indices planned
        "shard": summary.extra.get("shard"),  # [k, N] for one shard of a fan-out, else None
        "shards": [  # a merged dataset: each shard's sessions, rows and rejects
            {k: v for k, v in sh.items() if k != "timings"} for sh in summary.extra.get("shards", [])
        ],
        "data_config": cfg.to_dict()["data"],
    }
    (directory / RUN_FILE).write_text(json.dumps(run_facts(summary), indent=2, sort_keys=True))
    (directory / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True))
    weights = card["scenario_weights"]
    total_w = sum(weights.values()) or 1.0
    lines = [
        "# LWS synthetic dataset",
        "",
        f"Schema `{SCHEMA_VERSION}`, config digest `{card['config_digest']}`, seed {card['seed']}, teacher `{teacher}`.",
        f"{sum(summary.rows.values())} sessions of {requested} requested "
        f"({', '.join(f'{k}: {v}' for k, v in summary.rows.items())}), "
        f"{summary.audio_hours:.3f} h of 16 kHz user audio, {summary.units} units of {cfg.schema_.unit_s:g} s."
        + (" **Text only**: the audio was synthesized for the word timings but not stored (`audio` is empty)."
           if card["text_only"] else ""),
        f"Budgets per unit: {card['max_write_tokens']} write tokens, {card['max_say_tokens']} say tokens, counted with "
        f"{card['budget_tokenizer']}. How this synthesis ran (wall time, timings, the teacher's spend): `{RUN_FILE}`.",
        "",
        "| split | sessions | phrasings, voices |",
        "|---|---|---|",
        *[f"| {k} | {v} | {SPLIT_NOTES.get(k, '')} |" for k, v in summary.rows.items()],
        "",
        "| scenario | weight | sessions |",
        "|---|---|---|",
        *[f"| {k} | {weights.get(k, 0) / total_w:.2f} | {summary.per_scenario.get(k, 0)} |"
          for k in sorted(set(weights) | set(summary.per_scenario))],
        "",
        "| task family | sessions |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in summary.per_family.items()],
        "",
        "| voice (espeak-ng lang+variant) | sessions |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in card["voices"].items()],
        "",
        *teacher_lines(card["teacher_usage"]),
        *shard_lines(card["shards"]),
        "| rejected because | count |",
        "|---|---|",
        *([f"| {k} | {v} |" for k, v in summary.rejects.items()] or ["| (none) | 0 |"]),
        "",
        *(["First rejects:", "", *[f"- {e}" for e in card["reject_examples"]], ""] if card["reject_examples"] else []),
        "Rows: `id, session (JSON timeline), audio (PCM16 LE mono 16 kHz, len(units)*unit_s s; empty when text only), "
        "scenario, task_family, "
        "question, answer, teacher, voice, schema_version, unit_s`. Load with `lws_core.data.dataset.load_dataset_dir`.",
        "The test split uses held-out phrasings and voices, test_seen held-out voices with training phrasings. "
        "The full data config is in `card.json` (`data_config`).",
        "",
    ]
    (directory / "README.md").write_text("\n".join(lines))
    return card

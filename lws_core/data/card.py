"""The dataset card: what is in a synthesized dataset and how it was made (card.json + README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lws_core.schema import SCHEMA_VERSION

# What each split holds (card.json `splits`, README table); every split of synth.SPLITS has a line.
SPLIT_NOTES = {
    "train": "training phrasings, training voices",
    "validation": "training phrasings, training voices",
    "test": "held-out phrasings (each family's last), held-out voices",
    "test_seen": "training phrasings, held-out voices (separates a new voice from a new phrasing)",
}


def teacher_lines(u: dict[str, Any] | None) -> list[str]:
    """README lines for the teacher's spend (none for an offline teacher)."""
    if not u:
        return []
    return [
        f"Teacher `{u['model']}`: {u['requests_paid']} paid requests, {u['cache_hits']} answered from the response cache, "
        f"{u['retries']} retries ({u['rate_limited']} rate-limited), {u['failures']} failed.",
        f"Tokens for this dataset: {u['dataset_prompt_tokens']} prompt + {u['dataset_completion_tokens']} completion, "
        f"${u['dataset_cost_usd']:.2f}; paid in this run: {u['paid_prompt_tokens']} + {u['paid_completion_tokens']}, "
        f"${u['paid_cost_usd']:.2f}.",
        "",
    ]


def shard_lines(shards: list[dict[str, Any]]) -> list[str]:
    """README table of a merged dataset's shards: sessions, rows, rejects and where the time went."""
    if not shards:
        return []
    rows = [
        f"| {s['shard'][0]} | {s['sessions'][0]}-{s['sessions'][1] - 1} | {s['rows']} | {s['rejects']} | "
        f"{s['timings'].get('scripts_s', 0):g} | {s['timings'].get('sessions_s', 0):g} | {s['timings'].get('wall_s', 0):g} |"
        for s in shards
    ]
    return ["| shard | sessions | rows | rejects | scripts s | sessions s | wall s |", "|---|---|---|---|---|---|---|", *rows, ""]


def write_card(directory: Path, cfg, summary, teacher: str, requested: int) -> dict[str, Any]:  # noqa: ANN001
    """Write card.json (machine-readable) and README.md (the same facts for people); return the card."""
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
        "wall_s": summary.wall_s,
        # teacher spend: paid in this run and what the dataset's replies cost (cache hits included)
        "teacher_usage": summary.extra.get("teacher_usage"),
        "sessions": summary.extra.get("sessions"),  # [first, last + 1) session indices planned
        "shard": summary.extra.get("shard"),  # [k, N] for one shard of a fan-out, else None
        "timings": summary.extra.get("timings", {}),
        "shards": summary.extra.get("shards", []),  # a merged dataset: each shard's rows, rejects and timings
        "data_config": cfg.to_dict()["data"],
    }
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
        f"{card['budget_tokenizer']}. Synthesis took {card['wall_s']:g} s.",
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

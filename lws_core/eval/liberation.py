"""The capability-liberation experiment in miniature: does writing keep what the LLM can do?

Four ways to answer the same spoken questions, all through the same free-running
streaming engine and the same grammar, graded the same way (the written
``**Answer:**`` line exactly; the spoken answer by its key facts):

- **text ceiling**: the backbone hears the question as text (the spoken form of
  the words heard in each unit, in place of the audio): what the LLM can do;
- **cascade**: the backbone hears the speech encoder's own transcript, unit by
  unit (a half-duplex ASR → LLM baseline);
- **LWS**: the LWS model hears the audio;
- ablations (other LWS models trained at equal compute) are scored like LWS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lws_core.eval.metrics import TaskTally, graded_turn

Heard = Callable[[dict[str, Any], Any], "list[str] | None"]


@dataclass
class ModeResult:
    mode: str
    split: str
    written: dict[str, float]
    spoken: dict[str, float]
    written_overall: float | None
    spoken_overall: float | None
    graded: int
    # row id -> its written answer's grade: pairs this mode with LWS session by session (session_scores.json)
    per_row: dict[str, bool] = field(default_factory=dict)


def heard_truth(engine: Any) -> Heard:
    """The text ceiling's ears: what the user said in each unit, as the backbone's text view (K slots)."""
    from lws_core.model.asr import heard_slots

    tok, k = engine.model.tokenizer, engine.model.spec.audio_tokens_per_unit
    return lambda row, labels: heard_slots(labels, tok, k)


def graded_rows(rows: Any, limit: int | None) -> Iterator[dict[str, Any]]:
    """Rows with a known answer (silence and small talk grade nothing)."""
    n = 0
    for i in range(len(rows)):
        row = rows[i]
        if not row["answer"]:
            continue
        yield row
        n += 1
        if limit is not None and n >= limit:
            return


def run_mode(engine: Any, rows: Any, mode: str, split: str, heard: Heard | None = None, limit: int | None = None) -> ModeResult:
    """Simulate each graded row through ``engine`` (audio, or ``heard`` text per unit) and tally its answers."""
    from lws_core.data.dataset import row_session

    tally = TaskTally()
    per_row: dict[str, bool] = {}
    for row in graded_rows(rows, limit):
        labels = row_session(row)
        n = len(labels.units)
        text = heard(row, labels) if heard is not None else None
        if text is None:
            from lws_core.data.dataset import row_audio

            audio = row_audio(row)
        else:
            audio = np.zeros(n * engine.unit_samples, dtype=np.float32)
        res = engine.simulate(audio, heard=text)
        spoken = " ".join(u.say for u in res.units if u.state == "speak")
        family, answer = graded_turn(labels.meta or {}, row["task_family"], row["answer"])
        written, _ = tally.add(family, answer, res.written, spoken)
        if written is not None:
            per_row[str(row["id"])] = written
    return ModeResult(mode, split, tally.per_family(), tally.per_family_spoken(), tally.overall(), tally.overall_spoken(),
                      sum(len(v) for v in tally.written.values()), per_row)


def heard_by(recognizer: Any, engine: Any) -> Heard:
    """The cascade's ears: the speech encoder's own greedy CTC transcript, unit by unit (no look-ahead),
    placed in the K slots at the positions where the recogniser emitted each token."""
    from lws_core.data.dataset import row_audio
    from lws_core.model.asr import greedy_path, slots_from_path, unit_log_probs

    k, filler = engine.model.spec.audio_tokens_per_unit, engine.model.tokenizer.special.audio

    def heard(row: dict[str, Any], labels: Any) -> list[list[int]]:
        audio = row_audio(row)
        u = recognizer.speech.unit_samples
        n = len(labels.units)
        audio = np.pad(audio, (0, max(0, n * u - len(audio))))[: n * u].reshape(n, u)
        lp = unit_log_probs(recognizer, audio)
        return [slots_from_path(p, recognizer.vocab, lp.shape[1], k, filler) for p in greedy_path(lp)]

    return heard


def text_engine(cfg: Any, backbone: str) -> Any:
    """The streaming engine on a backbone alone (no encoder, no TTS): the text ceiling's and the cascade's model."""
    from lws_core.engine.engine import Engine
    from lws_core.engine.types import EngineConfig
    from lws_core.model import LWSModel

    text_cfg = cfg.with_overrides({"model.backbone_path": backbone, "model.encoder_path": None})
    return Engine(LWSModel.build(text_cfg), EngineConfig(**{**cfg.engine.model_dump(), "tts": "none"}))


def ceiling_and_cascade(cfg: Any, spec: Any, splits: dict[str, Any], limit: int | None) -> dict[str, dict[str, ModeResult]]:
    """Text ceiling and cascade on each split, when the model records the backbone and encoder it started from.

    Returns ``{}`` for a model trained without them (or whose checkpoints are gone):
    then there is no ceiling to compare with.
    """
    from pathlib import Path

    from lws_core.model.asr import EncoderMeta, load_recognizer

    b, e = spec.backbone_source, spec.encoder_source
    if not b or not Path(b).is_dir():
        return {}
    engine = text_engine(cfg, b)
    rec = load_recognizer(e) if e and Path(e).is_dir() and EncoderMeta.load(Path(e)) is not None else None
    out: dict[str, dict[str, ModeResult]] = {}
    for split, rows in splits.items():
        out[split] = {"text_ceiling": run_mode(engine, rows, "text_ceiling", split, heard_truth(engine), limit)}
        if rec is not None:
            out[split]["cascade"] = run_mode(engine, rows, "cascade", split, heard_by(rec, engine), limit)
    return out


def liberation_metrics(results: dict[str, dict[str, ModeResult]], suffix_of: dict[str, str]) -> dict[str, float]:
    """``text_ceiling_accuracy<suffix>[.family]`` and ``cascade_accuracy<suffix>[.family]`` (MLflow-loggable)."""
    m: dict[str, float] = {}
    for split, modes in results.items():
        sfx = suffix_of.get(split, f"_{split}")
        for mode, r in modes.items():
            if r.written_overall is not None:
                m[f"{mode}_accuracy{sfx}"] = r.written_overall
            m.update({f"{mode}_accuracy{sfx}.{fam}": v for fam, v in r.written.items()})
    return m


def liberation_table(results: dict[str, dict[str, ModeResult]], lws: dict[str, dict[str, float]]) -> str:
    """Markdown: per split and family, the text ceiling, the cascade, LWS written, and LWS / ceiling."""
    lines = [
        "## Capability liberation (written task accuracy, one run)",
        "",
        "Text ceiling: the backbone LWS started from, hearing the question as text; cascade: that backbone hearing the",
        "speech encoder's own transcript; LWS: this model hearing the audio. Multi-seed intervals: `benchmarks/liberation.py`.",
        "",
    ]
    for split, modes in results.items():
        ceil, casc = modes.get("text_ceiling"), modes.get("cascade")
        fams = sorted((set(ceil.written if ceil else {}) | set(lws.get(split, {}))) - {"overall"})
        lines += [f"### {split}", "", "| family | text ceiling | cascade | LWS written | LWS / ceiling |", "|---|---|---|---|---|"]
        for fam in [*fams, "overall"]:
            def get(r: ModeResult | None, fam: str = fam) -> float | None:
                if r is None:
                    return None
                return r.written_overall if fam == "overall" else r.written.get(fam)

            c, k = get(ceil), get(casc)
            w = lws.get(split, {}).get(fam)
            ratio = f"{w / c:.2f}" if (w is not None and c) else "–"
            cells = ["–" if v is None else f"{v:.2f}" for v in (c, k, w)]
            lines.append(f"| {fam} | {' | '.join(cells)} | {ratio} |")
        lines.append("")
    return "\n".join(lines) + "\n"

"""VoiceBench-style spoken QA: answer audio prompts with the engine, write responses, judge open-ended ones.

Input rows (audio + ``prompt``) come from a local file: a jsonl whose rows name a
WAV (``audio``/``wav``/``path``/``source_wav``, relative to the jsonl), or a
Hugging Face dataset saved with ``save_to_disk`` (VoiceBench's own layout: an
``audio`` column and a ``prompt`` column; a DatasetDict is indexed by subset, else
``test``).  Each prompt is followed by ``answer_s`` seconds of silence so a
full-duplex model has room to answer.  The responses jsonl keeps every input field
except the audio and adds ``response`` (spoken text, written text, or both), plus
``spoken_response``/``written_response`` for auditing — VoiceBench's format.

Open-ended subsets (alpacaeval, alpacaeval_full, commoneval, wildvoice) are scored
by the judge on VoiceBench's 1-5 rubric, ``samples`` draws at temperature 0.5
averaged (VoiceBench asks its judge for n=3); the judged rows are written like
VoiceBench's ``result-*.jsonl`` (a ``score`` list) so its ``evaluate.py`` reads them.
Rows with a ``reference`` (sd-qa) use its yes/no correctness prompt.  Without a
judge the score is "not judged"; other subsets get responses only.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from lws_core.errors import InputError

OPEN_SUBSETS = ("alpacaeval", "alpacaeval_full", "commoneval", "wildvoice")
RESPONSE_MODES = ("spoken", "written", "both")
JUDGE_SYSTEM = "You are a helpful assistant who tries to help answer the user's question."

OPEN_PROMPT = """I need your help to evaluate the performance of several models in the speech interaction scenario. The models receive a speech input from the user, which they need to understand and respond to with a speech output.
Rate the model's response based on the transcription of the user's instruction [Instruction] and of the model's output [Response].

Rate the response on a scale of 1 to 5:
1 point: largely irrelevant, incorrect, or fails to address the user's query; may be off-topic or give incorrect information.
2 points: somewhat relevant but lacks accuracy or completeness; may only partially answer or include extraneous information.
3 points: relevant and mostly accurate, but may lack conciseness or include unnecessary details.
4 points: relevant, accurate, and concise; a clear answer without unnecessary elaboration.
5 points: exceptionally relevant, accurate, and to the point; directly and efficiently gives exactly the information needed.

### [Instruction]: {prompt}
### [Response]: {response}

After evaluating, output the score only, without anything else and without explanations."""

QA_PROMPT = """### Question
{prompt}

### Reference answer
{reference}

### Candidate answer
{response}

Is the candidate answer correct based on the question and reference answer?
Please only output a single "Yes" or "No". Do not output anything else."""

_BRACKET = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")


def parse_score(text: str) -> float | None:
    """VoiceBench's parse: the whole answer as a number, else a ``[[n]]`` rating; None if neither."""
    m = _NUMBER.match(text) or _BRACKET.search(text)
    return float(m.group(1)) if m else None


def compose_response(spoken: str, written: str, mode: str) -> str:
    if mode not in RESPONSE_MODES:
        raise InputError(f"--response must be one of {', '.join(RESPONSE_MODES)} (got {mode!r})")
    spoken, written = spoken.strip(), written.strip()
    if mode == "spoken":
        return spoken
    if mode == "written":
        return written
    return "\n\n".join(x for x in (spoken, written) if x)


def _decode_audio(value: Any, base: Path, where: str) -> np.ndarray:
    """A path, an HF audio dict (array+sampling_rate, bytes or path) -> float32 mono 16 kHz."""
    import soundfile as sf

    from lws_core.audio.io import load_audio, resample

    if isinstance(value, str):
        p = Path(value)
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            raise InputError(f"{where}: audio file not found: {p}")
        return load_audio(p)
    if isinstance(value, dict):
        if value.get("array") is not None:
            a = np.asarray(value["array"], dtype=np.float32)
            a = a.mean(axis=-1) if a.ndim > 1 else a
            return resample(a, int(value.get("sampling_rate") or 16000), 16000)
        if value.get("bytes"):
            data, sr = sf.read(io.BytesIO(value["bytes"]), dtype="float32", always_2d=True)
            return resample(data.mean(axis=1), sr, 16000)
        if value.get("path"):
            return _decode_audio(value["path"], base, where)
    raise InputError(f"{where}: no usable audio (expected a path or an audio dict)")


def load_rows(path: str | Path, subset: str) -> list[dict[str, Any]]:
    """Rows with a decoded ``_audio`` (16 kHz float32) and the original fields."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    if path.is_file():
        for i, line in enumerate(path.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{i + 1}: not valid JSON ({e.msg})") from None
            key = next((k for k in ("audio", "wav", "path", "source_wav") if k in r), None)
            if key is None or "prompt" not in r:
                raise InputError(f"{path}:{i + 1}: a row needs 'prompt' and an audio path ('audio', 'wav', 'path' or 'source_wav')")
            r = dict(r)
            r["_audio"] = _decode_audio(r.pop(key), path.parent, f"{path}:{i + 1}")
            rows.append(r)
    elif path.is_dir():
        from datasets import Audio, DatasetDict, load_from_disk

        try:
            ds = load_from_disk(str(path))
        except Exception as e:
            raise InputError(f"{path}: not a dataset saved with save_to_disk ({type(e).__name__})") from None
        if isinstance(ds, DatasetDict):
            split = subset if subset in ds else "test" if "test" in ds else next(iter(ds))
            ds = ds[split]
        if "audio" not in ds.column_names or "prompt" not in ds.column_names:
            raise InputError(f"{path}: needs 'audio' and 'prompt' columns (has {', '.join(ds.column_names)})")
        if isinstance(ds.features["audio"], Audio):
            ds = ds.cast_column("audio", Audio(decode=False))  # decode ourselves: no codec backend needed
        for i, r in enumerate(ds):
            r = dict(r)
            r["_audio"] = _decode_audio(r.pop("audio"), path, f"{path} row {i}")
            rows.append(r)
    else:
        raise InputError(f"VoiceBench data not found: {path}")
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def judge_rows(rows: list[dict[str, Any]], judge, subset: str, samples: int = 3) -> dict[str, Any]:  # noqa: ANN001
    """Add ``score`` (list of judge texts) to each row; returns the subset's aggregate (VoiceBench's)."""
    open_ended = subset in OPEN_SUBSETS
    scores: list[float] = []
    correct: list[bool] = []
    unparsed = 0
    for r in rows:
        if "reference" in r and not open_ended:
            prompt = QA_PROMPT.format(prompt=r["prompt"], reference=r["reference"], response=r["response"])
        elif open_ended:
            prompt = OPEN_PROMPT.format(prompt=r["prompt"], response=r["response"])
        else:
            continue
        r["score"] = [judge.complete(JUDGE_SYSTEM, prompt, sample=k, temperature=0.5) for k in range(samples)]
        for s in r["score"]:
            if open_ended:
                v = parse_score(s)
                if v is None:
                    unparsed += 1
                else:
                    scores.append(v)
            else:
                correct.append(s.strip().lower().startswith("yes"))
    if open_ended:
        gpt = float(np.mean(scores)) if scores else None
        return {"gpt": gpt, "gpt_x20": None if gpt is None else gpt * 20, "unparsed_verdicts": unparsed}
    if correct:
        return {"qa_accuracy": float(np.mean(correct))}
    return {"score": f"subset {subset!r} is not judge-scored here; run VoiceBench's evaluate.py on the responses"}


def run_voicebench(
    engine,  # noqa: ANN001
    data: str | Path,
    out_dir: str | Path,
    subset: str = "alpacaeval",
    response: str = "spoken",
    judge=None,  # noqa: ANN001 - JudgeClient | None
    samples: int = 3,
    answer_s: float = 10.0,
    limit: int | None = None,
    system: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Answer every row, write ``<subset>-responses.jsonl`` (+ judged ``result-...``) and ``metrics.json``."""
    from lws_core.progress import progress as bar

    compose_response("", "", response)  # validate the mode before any work
    rows = load_rows(data, subset)[: limit if limit is not None else None]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pad = np.zeros(int(answer_s * 16000), dtype=np.float32)
    results = []
    for r in bar(rows, desc=f"voicebench {subset}", unit="prompt", disable=not progress):
        res = engine.simulate(np.concatenate([r.pop("_audio"), pad]), system=system)
        spoken = " ".join(w.text for w in res.spoken_words) or res.session.spoken_text()
        row = {k: v for k, v in r.items() if not k.startswith("_")}
        row.update(response=compose_response(spoken, res.written, response), spoken_response=spoken, written_response=res.written)
        results.append(row)
    resp_path = out_dir / f"{subset}-responses.jsonl"
    _write_jsonl(resp_path, results)
    metrics: dict[str, Any] = {"subset": subset, "rows": len(results), "response": response}
    if judge is None:
        metrics["score"] = "not judged (no eval.judge.endpoint configured)"
    else:
        metrics.update(judge_rows(results, judge, subset, samples))
        _write_jsonl(out_dir / f"result-{subset}-responses.jsonl", results)
        metrics["judge"] = judge.stats.as_dict()
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r, default=str) + "\n")
    os.replace(tmp, path)

"""Run the streaming engine over a Full-Duplex-Bench tree and write the benchmark's output files.

For every sample folder, ``input.wav`` is streamed unit by unit through a fresh
engine session; ``output.wav`` is what the model said, time-synchronous with the
input and of exactly the same length (the engine pads its first unit with silence
and truncates at the input's end, like the reference clients).  v1.5 folders with
``clean_input.wav`` also get ``clean_output.wav`` / ``clean_output.json``.

``output.json`` normally comes from the benchmark's ASR step.  Our speech is
synthesized, and the TTS reports each word's exact start and end, so we write the
words from those events instead of transcribing (no ASR model needed offline).
For user interruption the official ASR step transcribes only the audio after the
interruption ends and adds that offset back; we keep the words that start after
it, plus a word cut by that point when at least half of it lies after (start
clipped to the cut), which is what an ASR of the cropped audio can hear.

The output tree mirrors the input tree (task files and ``input.wav`` copied) so the
official scripts and ``lws eval fdb-metrics`` can be pointed at it directly.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from lws_core.errors import InputError
from lws_core.eval.fdb_metrics import detect_task, read_json, sample_dirs, task_dirs
from lws_core.schema import Word

SR = 16000


def words_after(words: list[Word], cut_s: float) -> list[Word]:
    """Words an ASR of the audio after ``cut_s`` would return, with absolute times."""
    out = []
    for w in words:
        if w.start >= cut_s:
            out.append(w)
        elif w.end > cut_s and (w.end - cut_s) >= 0.5 * (w.end - w.start):
            out.append(Word(text=w.text, start=cut_s, end=w.end))
    return out


def fdb_output_json(words: list[Word]) -> dict[str, Any]:
    return {"text": " ".join(w.text for w in words), "chunks": [{"text": w.text, "timestamp": [round(w.start, 3), round(w.end, 3)]} for w in words]}


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_same_length(path: Path, audio16k: np.ndarray, n_in: int, sr_in: int) -> None:
    """Write the model's audio at the input's rate, exactly as many samples as the input."""
    import soundfile as sf

    from lws_core.audio.io import resample

    a = audio16k if sr_in == SR else resample(audio16k, SR, sr_in)
    a = np.pad(a, (0, max(0, n_in - len(a))))[:n_in]
    sf.write(str(path), np.clip(a, -1.0, 1.0), sr_in, subtype="PCM_16")


def _simulate(engine, wav: Path, system: str | None) -> tuple[Any, int, int]:  # noqa: ANN001
    import soundfile as sf

    from lws_core.audio.io import load_audio

    info = sf.info(str(wav))
    audio = load_audio(wav, sr=SR)
    if audio.size == 0:
        raise InputError(f"{wav}: empty audio")
    return engine.simulate(audio, system=system), info.frames, info.samplerate


def run_sample(engine, src: Path, dst: Path, task: str, system: str | None = None) -> dict[str, Any]:  # noqa: ANN001
    """Simulate one sample folder into ``dst`` (already holding copies of the inputs)."""
    res, n_in, sr_in = _simulate(engine, src / "input.wav", system)
    _write_same_length(dst / "output.wav", res.output_audio, n_in, sr_in)
    words = res.spoken_words
    if task == "user_interruption":
        words = words_after(words, float(read_json(src / "interrupt.json")[0]["timestamp"][1]))
    (dst / "output.json").write_text(json.dumps(fdb_output_json(words), indent=1))
    (dst / "written.md").write_text(res.written)
    with open(dst / "units.jsonl", "w") as f:
        for u in res.units:
            f.write(json.dumps(u.to_json()) + "\n")
    row = {"id": src.name, "task": task, "words": len(words), "written_chars": len(res.written), "rtf_p95": res.rtf_p95}
    if (src / "clean_input.wav").is_file():
        cres, cn, csr = _simulate(engine, src / "clean_input.wav", system)
        _write_same_length(dst / "clean_output.wav", cres.output_audio, cn, csr)
        (dst / "clean_output.json").write_text(json.dumps(fdb_output_json(cres.spoken_words), indent=1))
    return row


def run_fdb(
    engine,  # noqa: ANN001 - lws_core.engine.Engine
    root: str | Path,
    out: str | Path,
    limit: int | None = None,
    system: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every task folder of ``root`` (at most ``limit`` samples each) into the tree ``out``; returns a summary."""
    from lws_core.progress import progress as bar

    root, out = Path(root), Path(out)
    if out.resolve() == root.resolve():
        raise InputError("--out must differ from --data (the input tree is never modified)")
    if out.exists() and any(out.iterdir()) and not (out / "run.json").is_file():
        raise InputError(f"{out}: exists and is not an earlier `lws eval fdb` output; choose another --out")
    tds = task_dirs(root)
    jobs = []
    for td in tds:
        dirs = sample_dirs(td)
        dirs = [d for d in dirs if (d / "input.wav").is_file()][: limit if limit is not None else None]
        rel = td.relative_to(root) if td != root else Path(".")
        jobs += [(d, rel / d.name) for d in dirs]
    if not jobs:
        raise InputError(f"{root}: no sample folders with input.wav")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows = []
    try:
        for src, rel in bar(jobs, desc="fdb", unit="sample", disable=not progress):
            dst = tmp / rel
            dst.mkdir(parents=True)
            for f in src.iterdir():
                if f.is_file() and not f.name.startswith(("output", "clean_output")):
                    _link_or_copy(f, dst / f.name)
            rows.append(run_sample(engine, src, dst, detect_task(src), system))
        summary = {"source": str(root), "samples": len(rows), "per_sample": rows}
        (tmp / "run.json").write_text(json.dumps(summary, indent=1))
        if out.exists():
            shutil.rmtree(out)  # checked above: empty, or a previous run of ours
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary

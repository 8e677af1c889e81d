"""Full-Duplex-Bench v1 metrics, computed from a benchmark tree's ``output.json`` / ``output.wav`` files.

Definitions follow the official scripts in DanielLin94144/Full-Duplex-Bench
(``v1_v1.5/evaluation/eval_*.py``), including their edge cases, so that a user who
runs those scripts on our trees gets the numbers we report:

* takeover (TO) of one sample: no words -> 0; (last end - first start) < 1 s and
  <= 3 words -> 0; else 1.  A ``None`` end of the last word falls back to its start.
* smooth turn-taking / user interruption latency: first word start - reference
  time (``turn_taking.json`` timestamp[0], ``interrupt.json`` timestamp[1]),
  negatives clipped to 0, averaged over samples with TO = 1.
* backchannel: Silero VAD segments of ``output.wav``; the official loop keeps the
  verdict of the *last* segment it scores (a segment > 3 s stops the loop with
  TO = 1), and every scored segment (<= 3 s) counts as a backchannel prediction for
  the frequency and the JSD, whatever its words.  We reproduce that literally —
  these two quirks are documented in docs/eval.md.
* JSD: occupancy of predicted segments in 0.2 s bins (+1e-10, normalised) against
  the human reference distribution linearly resized to the same length, with
  SciPy's ``jensenshannon`` (natural log); 1.0 when no backchannel was predicted.

Pure functions take word chunks and segments, so every edge case is unit-tested
without audio; the tree functions add file reading and Silero VAD.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from lws_core.errors import InputError

TURN_DURATION_S = 1.0
TURN_MAX_WORDS = 3
BC_SEGMENT_MAX_S = 3.0
BC_MAX_WORDS = 3
BC_SHORT_S = 1.0
BC_SHORT_WORDS = 2
JSD_BIN_S = 0.2
JSD_EPS = 1e-10

TASKS = ("pause_handling", "smooth_turn_taking", "user_interruption", "backchannel")

Chunk = dict[str, Any]  # {"text": str, "timestamp": [start, end | None]}


# --------------------------------------------------------------------------- pure metrics
def takeover(chunks: Sequence[Chunk]) -> int:
    """TO of one sample from its output words (the official turn-length rule)."""
    if not chunks:
        return 0
    first = chunks[0]["timestamp"][0]
    last_end = chunks[-1]["timestamp"][-1]
    if last_end is None:
        last_end = chunks[-1]["timestamp"][0]
    duration = last_end - first
    if duration < TURN_DURATION_S and len(chunks) <= TURN_MAX_WORDS:
        return 0
    return 1


def response_latency(chunks: Sequence[Chunk], reference_s: float) -> float | None:
    """First word start - reference, clipped at 0; None when the sample has no takeover (TO = 0)."""
    if takeover(chunks) == 0:
        return None
    return max(0.0, float(chunks[0]["timestamp"][0]) - float(reference_s))


def words_in_segment(chunks: Sequence[Chunk], start: float, end: float) -> list[str]:
    """Words overlapping a VAD segment, by the official overlap test (null timestamps handled as there)."""
    out = []
    for c in chunks:
        t0, t1 = c["timestamp"][0], c["timestamp"][1]
        if t0 is None or (t1 is None and t0 < end):
            continue
        if t1 is None:
            t1 = t0
        if (t0 >= start and t1 <= end) or (t0 <= end and t1 > end) or (t0 <= start and t1 > start):
            out.append(c["text"])
    return out


def occupancy(intervals: Sequence[tuple[float, float]], duration_s: float, bin_s: float = JSD_BIN_S) -> np.ndarray:
    """Normalised count of intervals per ``bin_s`` bin (both end bins inclusive), +eps so no bin is empty."""
    bins = np.zeros(int(duration_s / bin_s) + 1)
    for s, e in intervals:
        for i in range(int(s / bin_s), int(e / bin_s) + 1):
            if i < len(bins):
                bins[i] += 1
    bins = bins + JSD_EPS
    return bins / bins.sum()


def jsd(pred: np.ndarray, reference: Sequence[float]) -> float:
    """SciPy Jensen-Shannon *distance* after resizing the reference to the prediction's length (linear)."""
    from scipy.interpolate import interp1d
    from scipy.spatial.distance import jensenshannon

    ref = np.asarray(reference, dtype=float)
    if len(ref) == 1:
        ref_resized = np.full(len(pred), ref[0])
    else:
        f = interp1d(np.linspace(0, 1, len(ref)), ref, kind="linear", fill_value="extrapolate")
        ref_resized = f(np.linspace(0, 1, len(pred)))
    return float(jensenshannon(np.asarray(pred, dtype=float), ref_resized))


@dataclass
class BackchannelScore:
    takeover: int
    backchannels: list[tuple[float, float]]
    frequency: float
    jsd: float


def score_backchannel(
    segments: Sequence[tuple[float, float]], chunks: Sequence[Chunk], duration_s: float, reference: Sequence[float] | None
) -> BackchannelScore:
    """One backchannel sample: VAD segments (s) of output.wav, its words, its length, the human reference."""
    to = 0
    predicted: list[tuple[float, float]] = []
    for start, end in segments:
        dur = end - start
        if dur > BC_SEGMENT_MAX_S:
            to = 1
            break
        n = len(words_in_segment(chunks, start, end))
        if n > BC_MAX_WORDS:
            to = 1
        elif dur < BC_SHORT_S and n <= BC_SHORT_WORDS:
            to = 0
        else:
            to = 1
        predicted.append((start, end))
    freq = len(predicted) / duration_s if duration_s > 0 else 0.0
    if not predicted:
        d = 1.0
    else:
        if reference is None:
            raise InputError("backchannel JSD needs a reference distribution for every sample")
        d = jsd(occupancy(predicted, duration_s), reference)
    return BackchannelScore(to, predicted, freq, d)


def derive_reference(user_words: Sequence[tuple[float, float]], duration_s: float, min_gap_s: float = 0.2, window_s: float = 0.6) -> list[float]:
    """Our stand-in for the human backchannel distribution when the official one does not cover a sample.

    Listeners backchannel in the speaker's pauses, so the reference occupies the first
    ``window_s`` of every gap of at least ``min_gap_s`` between consecutive user words
    (0.2 s bins, +eps, normalised like a prediction).  Uniform when there are no gaps.
    """
    gaps = []
    spans = sorted(user_words)
    for (_, e0), (s1, _) in zip(spans, spans[1:], strict=False):
        if s1 - e0 >= min_gap_s:
            gaps.append((e0, min(s1, e0 + window_s)))
    if not gaps:
        n = int(duration_s / JSD_BIN_S) + 1
        return [1.0 / n] * n
    return [float(x) for x in occupancy(gaps, duration_s)]


# --------------------------------------------------------------------------- relevance (judge)
RELEVANCE_SYSTEM = """You rate a spoken conversation between a user and an AI.
The user spoke first, the AI answered, and while the AI was speaking the user interrupted it.
Rate how well the AI's response after the interruption addresses the user's interrupting turn, 0 to 5:
0 = totally unrelated to the interrupting turn; 1 = not related; 2 = slightly related;
3 = related; 4 = highly related; 5 = perfectly related.
First briefly analyze the interrupting turn and the AI's response, then answer in exactly this format:
Analysis: [your analysis].
I would rate the AI's response as [rating]."""

_RATING = re.compile(r"Analysis:\s*(.*?)\nI would rate the AI's response as (\d+)", re.DOTALL)


def parse_relevance(text: str) -> int | None:
    """The official answer format; the last match wins (as in the official parser)."""
    found = _RATING.findall(text + "\n")
    return int(found[-1][1]) if found else None


RELEVANCE_MAX_ASKS = 4  # first ask + 3 re-asks


def rate_relevance(judge: Judge, user: str, max_asks: int = RELEVANCE_MAX_ASKS) -> tuple[int | None, int]:
    """Ask until the rating parses, at most ``max_asks`` times; (rating or None, asks used).

    Why: the official script re-asks the judge (``continue`` in a ``while True``) whenever
    its answer has no parsable rating, so an unparsable first answer never becomes a
    missing score there; we do the same but bounded, so a judge that never follows the
    format cannot loop forever.  Each re-ask is a new draw: with our ``JudgeClient`` it
    goes out as ``sample=i`` (another seed and cache key — re-reading the cached garbage
    would be no re-ask); a plain callable is simply called again.
    """
    complete = getattr(judge, "complete", None)
    for i in range(max_asks):
        text = complete(RELEVANCE_SYSTEM, user, sample=i) if complete is not None else judge(RELEVANCE_SYSTEM, user)
        rating = parse_relevance(text)
        if rating is not None:
            return rating, i + 1
    return None, max_asks


# --------------------------------------------------------------------------- tree reading
def read_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"required file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def read_chunks(path: Path) -> list[Chunk]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("chunks"), list):
        raise InputError(f"{path}: expected {{'text': ..., 'chunks': [...]}} (Full-Duplex-Bench output.json)")
    return data["chunks"]


def detect_task(sample_dir: Path) -> str:
    """Which v1 task a sample folder belongs to, from its task file ("v1.5" for v1.5 folders)."""
    if (sample_dir / "metadata.json").is_file():
        return "v1.5"
    if (sample_dir / "pause.json").is_file():
        return "pause_handling"
    if (sample_dir / "turn_taking.json").is_file():
        return "smooth_turn_taking"
    if (sample_dir / "interrupt.json").is_file():
        return "user_interruption"
    return "backchannel"


def sample_dirs(task_dir: Path) -> list[Path]:
    """Sample folders of a task folder, in numeric order when their names are numbers."""
    dirs = [
        p
        for p in task_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and ((p / "input.wav").is_file() or (p / "output.json").is_file())
    ]
    return sorted(dirs, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))


def task_dirs(root: Path) -> list[Path]:
    """The task folders under a tree root (or the root itself when it holds sample folders)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"Full-Duplex-Bench tree not found: {root}")
    if sample_dirs(root):
        return [root]
    found = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") and sample_dirs(d)]
    if not found:
        raise InputError(f"{root}: no Full-Duplex-Bench sample folders (folders with input.wav) found")
    return found


@lru_cache(maxsize=1)
def _vad_model():  # noqa: ANN202
    from silero_vad import load_silero_vad

    return load_silero_vad()


def vad_segments(wav_path: Path) -> tuple[list[tuple[float, float]], float]:
    """Silero VAD speech segments (s) of a WAV and its length (s), as the official backchannel script gets them."""
    import soundfile as sf
    import torch
    from silero_vad import get_speech_timestamps

    data, sr = sf.read(str(wav_path), dtype="float32", always_2d=True)
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sr != 16000:  # the official script passes 16 kHz regardless; our outputs are always 16 kHz
        from lws_core.audio.io import resample

        wav = resample(wav, sr, 16000)
    ts = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(wav)), _vad_model(), return_seconds=True)
    return [(float(t["start"]), float(t["end"])) for t in ts], data.shape[0] / sr


def _mean(xs: Sequence[float]) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


@dataclass
class TaskResult:
    """Metrics of one task folder plus per-sample rows (written to metrics.json for auditing)."""

    task: str
    name: str
    metrics: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)


Judge = Callable[[str, str], str]  # (system, user) -> model text


def evaluate_task_dir(
    task_dir: Path,
    task: str | None = None,
    judge: Judge | None = None,
    reference: dict[str, list[float]] | None = None,
    reference_name: str = "",
    max_asks: int = RELEVANCE_MAX_ASKS,
) -> TaskResult:
    """Compute one task folder's v1 metrics; ``judge`` rates interruption relevance (else "not judged")."""
    dirs = sample_dirs(task_dir)
    if not dirs:
        raise InputError(f"{task_dir}: no sample folders")
    task = task or detect_task(dirs[0])
    rows: list[dict[str, Any]] = []
    if task == "pause_handling":
        for d in dirs:
            rows.append({"id": d.name, "to": takeover(read_chunks(d / "output.json"))})
        m: dict[str, Any] = {"tor": _mean([r["to"] for r in rows])}
    elif task in ("smooth_turn_taking", "user_interruption"):
        ratings: list[int] = []
        unparsed = 0
        for d in dirs:
            chunks = read_chunks(d / "output.json")
            if task == "smooth_turn_taking":
                ref = float(read_json(d / "turn_taking.json")[0]["timestamp"][0])
            else:
                meta = read_json(d / "interrupt.json")[0]
                ref = float(meta["timestamp"][1])
            row: dict[str, Any] = {"id": d.name, "to": takeover(chunks), "latency_s": response_latency(chunks, ref)}
            if task == "user_interruption" and row["to"] == 1 and judge is not None:
                text = read_json(d / "output.json").get("text", "")
                user = f"- Contextual user turn: {meta.get('context', '')}\n- User interrupting turn: {meta.get('interrupt', '')}\n- AI's response: {text}"
                rating, asks = rate_relevance(judge, user, max_asks)
                row["relevance"], row["relevance_asks"] = rating, asks
                if rating is not None:
                    ratings.append(rating)
                else:
                    unparsed += 1
            rows.append(row)
        m = {"tor": _mean([r["to"] for r in rows]), "latency_s": _mean([r["latency_s"] for r in rows if r["latency_s"] is not None])}
        if task == "user_interruption":
            m["relevance"] = _mean(ratings) if judge is not None else "not judged"
            if judge is not None:
                m["relevance_unparsed"] = unparsed  # still unparsable after every re-ask
    elif task == "backchannel":
        scores = []
        for d in dirs:
            segs, dur = vad_segments(d / "output.wav")
            chunks = read_chunks(d / "output.json")
            ref = (reference or {}).get(d.name)
            src = reference_name
            if ref is None:
                ref, src = _derived_reference(d, dur), "derived from input pauses"
            sc = score_backchannel(segs, chunks, dur, ref)
            scores.append(sc)
            rows.append({"id": d.name, "to": sc.takeover, "backchannels": len(sc.backchannels), "frequency": sc.frequency, "jsd": sc.jsd, "reference": src})
        m = {
            "tor": _mean([s.takeover for s in scores]),
            "frequency": _mean([s.frequency for s in scores]),
            "jsd": _mean([s.jsd for s in scores]),
            "jsd_reference": sorted({r["reference"] for r in rows}),
        }
    else:
        raise InputError(f"unknown Full-Duplex-Bench task {task!r} (known: {', '.join(TASKS)})")
    m["samples"] = len(rows)
    return TaskResult(task, task_dir.name, m, rows)


def transcription_words(path: Path) -> list[tuple[float, float]]:
    """Word spans from a transcription.json (list of speakers with ``item`` words, or a plain chunk list)."""
    if not path.is_file():
        return []
    data = read_json(path)
    spans: list[tuple[float, float]] = []
    items = data if isinstance(data, list) else data.get("chunks", [])
    for it in items:
        words = it.get("item", [it]) if isinstance(it, dict) else []
        for w in words:
            ts = w.get("timestamp") or [None, None]
            if ts[0] is not None and ts[1] is not None:
                spans.append((float(ts[0]), float(ts[1])))
    return spans


def _derived_reference(sample_dir: Path, duration_s: float) -> list[float]:
    return derive_reference(transcription_words(sample_dir / "transcription.json"), duration_s)


def load_reference(path: Path | None) -> dict[str, list[float]] | None:
    """The official human distribution (``icc_gt_distribution.json``: {sample id: [...]}) when a user has it."""
    if path is None:
        return None
    data = read_json(Path(path))
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise InputError(f"{path}: expected {{sample id: [probabilities]}} (icc_gt_distribution.json format)")
    return {str(k): [float(x) for x in v] for k, v in data.items()}


def metric_key(task: str) -> str:
    """``fdb_<short task>``: the prefix of a task's metric names."""
    short = {"pause_handling": "pause", "smooth_turn_taking": "turn_taking", "user_interruption": "interruption", "backchannel": "backchannel"}[task]
    return f"fdb_{short}"


def evaluate_tree(
    root: Path, judge: Judge | None = None, reference_path: Path | None = None, write: bool = True, progress: bool = False
) -> dict[str, Any]:
    """All task folders of a tree -> flat metrics (``fdb_pause_tor``, ``fdb_turn_taking_latency_s``, ...).

    Several folders of one task (e.g. candor_ and synthetic_pause_handling) get the
    folder name as a suffix after the first.  Writes ``metrics.json`` in ``root``.
    """
    from lws_core.progress import progress as bar

    reference = load_reference(reference_path)
    ref_name = f"official ({Path(reference_path).name})" if reference_path else ""
    flat: dict[str, Any] = {}
    per_task: dict[str, Any] = {}
    for td in bar(task_dirs(Path(root)), desc="fdb-metrics", unit="task", disable=not progress):
        if detect_task(sample_dirs(td)[0]) == "v1.5":
            per_task[td.name] = {"task": "v1.5", "note": "v1.5 behaviour/timing need the official judge- and VAD-based scripts; not computed"}
            continue
        res = evaluate_task_dir(td, judge=judge, reference=reference, reference_name=ref_name)
        key = metric_key(res.task)
        if any(k.startswith(key + "_") for k in flat):
            key = f"{key}_{res.name}"
        for k, v in res.metrics.items():
            if k != "samples":
                flat[f"{key}_{k}"] = v
        per_task[res.name] = {"task": res.task, **res.metrics, "per_sample": res.samples}
    stats = getattr(judge, "stats", None)
    if stats is not None:  # judge spend and latency of this tree's relevance ratings (JudgeClient counters)
        flat.update({f"fdb_judge_{k}": v for k, v in stats.as_dict().items()})
    if write:
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in flat.items()}
        (Path(root) / "metrics.json").write_text(json.dumps({"metrics": clean, "tasks": per_task}, indent=1))
    return flat

"""The data synthesis driver: question -> teacher script -> timeline + user audio -> HF dataset on disk.

Reproducibility: session i draws everything from ``default_rng([seed, i])``
and reseeds espeak-ng's noise generator from ``(seed, i)`` (espeak-ng seeds it
from the wall clock otherwise); sessions run in fixed chunks, each in a process
forked from one freshly loaded, warmed-up espeak-ng (whose output also depends
on state carried between calls, see :mod:`lws_core.audio.tts`). So the same seed
and config give byte-identical rows, audio included, whatever the worker count
and whenever the run starts.

Bounded memory: at most ``2 × workers`` chunks are in flight (a killed worker is
an error, not a hang); finished rows
stream into per-split Arrow files, which are memory-mapped, saved as a
``DatasetDict`` into a hidden temp dir and renamed into place only at the end,
so a crash never leaves a directory that looks complete.
"""

from __future__ import annotations

import collections
import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from lws_core.audio.io import SAMPLE_RATE, pcm16_bytes
from lws_core.audio.tts import EspeakTTS, english_voices
from lws_core.data.budget import budget_tokenizer, count_tokens
from lws_core.data.fillers import draw_fillers
from lws_core.data.scenarios import Timeline, build_session, choose_voice
from lws_core.data.sources import FileQuestions
from lws_core.data.tasks import make_followup, make_question, written_answer
from lws_core.data.teachers import Teacher, make_teacher
from lws_core.data.trail_off import draw_trail_off
from lws_core.data.types import Question, Reject
from lws_core.errors import InputError, LWSError
from lws_core.schema import SCHEMA_VERSION, validate

# test: held-out phrasings and held-out voices; test_seen: held-out voices, training phrasings (so the two
# test splits together separate "new voice" from "new phrasing" in the task accuracy)
SPLITS = ("train", "validation", "test", "test_seen")
HELD_OUT_VOICE_SPLITS = ("test", "test_seen")
COLUMNS = ("id", "session", "audio", "scenario", "task_family", "question", "answer", "teacher", "voice", "schema_version", "unit_s")


def features():  # noqa: ANN201 - datasets.Features
    from datasets import Features, Value

    types = {c: Value("string") for c in COLUMNS}
    types["audio"] = Value("binary")
    types["unit_s"] = Value("float64")
    return Features(types)


@dataclass
class SynthSummary:
    out_dir: str
    rows: dict[str, int]
    rejects: dict[str, int]
    per_scenario: dict[str, int]
    per_family: dict[str, int]
    audio_hours: float
    units: int
    wall_s: float
    sessions_per_s: float
    audio_s_per_s: float
    extra: dict[str, Any] = field(default_factory=dict)


# State shared with forked workers (set in the parent right before forking).
_ENV: dict[str, Any] = {}


def split_of(seed: int, i: int, val_frac: float, test_frac: float, test_seen_frac: float = 0.0) -> str:
    """The split of session ``i``: one uniform draw per session, test at the bottom, test_seen at the top.

    test_seen takes ``[1 - test_seen_frac, 1)``, so adding it leaves every test and
    validation session where it was; only train sessions move.
    """
    x = np.random.default_rng([seed, i, 7]).random()
    if x < test_frac:
        return "test"
    if x < test_frac + val_frac:
        return "validation"
    return "test_seen" if x >= 1.0 - test_seen_frac else "train"


def phrasing_split(split: str) -> str:
    """The split whose phrasings a session of ``split`` draws from: test_seen uses the training phrasings."""
    return "train" if split == "test_seen" else split


def _question(
    rng: np.random.Generator, split: str, i: int, families: list[str], source: FileQuestions | None, session_split: str = "test"
) -> Question:
    """Question ``i``: from the file source, or a template question (with ``data.filler_rate``'s filler words and
    ``data.extra_phrasings``' phrasings in a train or validation session's question; graded splits never get them)."""
    if source is not None:
        return source.get(i)
    d = _ENV["cfg"].data
    fillers = None
    training = session_split in ("train", "validation")
    if training:
        fillers = draw_fillers(d.seed, i, d.filler_rate, d.filler_max, d.filler_vocab, d.filler_place)
    return make_question(str(rng.choice(families)), rng, split, fillers, extra=training and d.extra_phrasings)


def _filler_meta(i: int, split: str, scenario: str) -> dict[str, list[str]]:
    """``{"fillers": [...]}``: the filler words session ``i``'s questions carry (as :func:`_question` drew them), so
    the recogniser's pretraining can tell a filler from the question's own words; ``{}`` without any (the key is
    left out, so a dataset without fillers is what it was)."""
    d = _ENV["cfg"].data
    if _ENV["source"] is not None or scenario == "silence" or split not in ("train", "validation"):
        return {}
    draws = [draw_fillers(d.seed, j, d.filler_rate, d.filler_max, d.filler_vocab, d.filler_place)
             for j in ([i, i + 7919] if scenario == "barge_in" else [i])]
    words = sorted({w for f in draws if f is not None for w in f[0]})
    return {"fillers": words} if words else {}


def _plan(i: int) -> tuple[np.random.Generator, str, str, Any, Question, Any, Any]:
    """Stage 1 of session ``i``: its split, scenario, voice, questions and teacher scripts.

    Needs no TTS, so it can run ahead of the workers (see :func:`_prefetch_scripts`); it draws
    from the session's generator in a fixed order and returns the generator for stage 2, so a
    session is the same whether its scripts came from the network or from the cache.
    """
    cfg, teacher, source = _ENV["cfg"], _ENV["teacher"], _ENV["source"]
    d = cfg.data
    seed = d.seed
    rng = np.random.default_rng([seed, i])
    split = split_of(seed, i, d.validation_fraction, d.test_fraction, d.test_seen_fraction)
    qsplit = phrasing_split(split)
    names = sorted(d.scenarios)  # not dict order: a config that went through JSON (sort_keys, the pipeline) draws alike
    w = np.array([d.scenarios[n] for n in names], dtype=float)
    scenario = str(rng.choice(names, p=w / w.sum()))
    voice = choose_voice(rng, english_voices(held_out=split in HELD_OUT_VOICE_SPLITS, timbres=d.voice_timbres, accents=d.voice_accents))
    q1, s1, extra = Question(text=""), None, None
    if scenario != "silence":
        q1 = _question(rng, qsplit, i, d.task_families, source, split)
        if not q1.text.strip():
            raise Reject("empty_question")
        s1 = teacher.script(q1)
        if scenario == "barge_in":
            q2 = _question(rng, qsplit, i + 7919, d.task_families, source, split)
            extra = (q2, teacher.script(q2))
        elif scenario == "multi_turn":
            first = Question(q1.text, q1.answer or written_answer(s1.written), q1.task_family, q1.words, q1.phrasing, s1)
            q2 = make_followup(first, rng)
            extra = (q2, teacher.script(q2))  # the template teacher returns q2's own script
    return rng, split, scenario, voice, q1, s1, extra


def synth_one(i: int) -> dict[str, Any]:
    """Build row ``i`` or raise Reject with a counted reason."""
    cfg, teacher, tts = _ENV["cfg"], _ENV["teacher"], _ENV["tts"]
    d, sc = cfg.data, cfg.schema_
    seed = d.seed
    tts.reseed(int(np.random.default_rng([seed, i, 11]).integers(2**31)))
    rng, split, scenario, voice, q1, s1, extra = _plan(i)
    tl = Timeline(sc.unit_s, sc.max_write_tokens, sc.max_say_tokens, tts)
    trail = None
    if scenario == "pause" and split in ("train", "validation"):
        t_rng = draw_trail_off(seed, i, d.trail_off_rate)
        trail = None if t_rng is None else (t_rng, d.trail_off_wait_s)
    session, audio, meta = build_session(
        scenario, q1, s1, extra, tl, voice, rng, d.noise_snr_db, d.pause_position, d.pause_max_s, trail
    )
    if "trail_off" in meta:  # only the heard words were said, and the reply answers nothing
        heard = q1.words[: meta["trail_off"]["heard_words"]]
        q1 = Question.make(" ".join(heard), task_family=q1.task_family, phrasing=q1.phrasing)
    final_q = extra[0] if extra is not None else q1
    answer = final_q.answer or ""
    session.id = f"{seed}-{i:07d}"
    session.meta = {
        **meta,
        "task_family": q1.task_family if scenario != "silence" else "none",
        "split": split,
        "teacher": teacher.name,
        "voice": voice.label(),
        "seed": seed,
        "index": i,
        "phrasing": q1.phrasing,
        **_filler_meta(i, split, scenario),
        # per turn: its own task family, so grading files a barge-in's second answer under q2's family
        "turns": [
            {"question": q.text, "answer": q.answer or "", "task_family": q.task_family}
            for q in ([q1] + ([extra[0]] if extra else []))
            if q.text
        ],
    }
    violations = validate(session, sc.max_write_tokens, sc.max_say_tokens, count_tokens)
    if violations:
        v = str(violations[0])
        kind = "causality" if "causality" in v else "budget" if "budget" in v else "schema"
        raise Reject(kind, v)
    spu = int(round(sc.unit_s * SAMPLE_RATE))
    assert len(audio) == len(session.units) * spu
    return {
        "split": split,
        "n_units": len(session.units),  # popped before writing: the audio statistics, text-only rows included
        "id": session.id,
        "session": session.model_dump_json(),
        "audio": b"" if _ENV.get("text_only") else pcm16_bytes(audio),
        "scenario": scenario,
        "task_family": session.meta["task_family"],
        "question": " ".join(q["question"] for q in session.meta["turns"]),
        "answer": answer if scenario != "silence" else "",
        "teacher": teacher.name,
        "voice": voice.label(),
        "schema_version": SCHEMA_VERSION,
        "unit_s": float(sc.unit_s),
    }


def run_chunk(bounds: tuple[int, int]) -> tuple[list[dict[str, Any]], dict[str, int], list[str]]:
    rows, rejects, examples = [], collections.Counter(), []
    for i in range(*bounds):
        try:
            rows.append(synth_one(i))
        except Reject as e:
            rejects[e.reason] += 1
            if len(examples) < 3:
                examples.append(f"session {i}: {e}")
    return rows, dict(rejects), examples


class WorkerDiedError(LWSError):
    """A synthesis worker process was killed (out of memory, a signal) before sending its chunk."""


def _chunk_main(bounds: tuple[int, int], conn: Connection) -> None:
    """Worker body: run one chunk and send ("ok", result) or ("error", exception) to the parent."""
    try:
        msg: tuple[str, Any] = ("ok", run_chunk(bounds))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent, which re-raises it
        msg = ("error", e)
    try:
        conn.send(msg)
    except Exception:  # an unpicklable exception: send its text
        conn.send(("error", RuntimeError(f"{type(msg[1]).__name__}: {msg[1]}")))
    conn.close()


def _run_chunks(chunks: list[tuple[int, int]], workers: int) -> Iterator[tuple[tuple[int, int], Any]]:
    """Run each chunk in its own process forked from this one; yield results in chunk order.

    One fork per chunk keeps espeak-ng's state identical at the start of every
    chunk (reproducible audio). At most ``workers`` processes run and at most
    ``2 × workers`` chunks are started ahead of the next one to write (bounded
    memory). Unlike ``multiprocessing.Pool``, which waits forever for the result
    of a worker that was killed, a worker that dies is detected by its pipe
    closing and raises :class:`WorkerDiedError`; an exception in a worker is
    re-raised here. On any exit the remaining workers are killed.
    """
    ctx = mp.get_context("fork")
    running: dict[int, tuple[Any, Connection]] = {}
    done: dict[int, Any] = {}
    next_start = next_yield = 0
    try:
        while next_yield < len(chunks):
            while next_start < len(chunks) and len(running) < workers and next_start - next_yield < 2 * workers:
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_chunk_main, args=(chunks[next_start], send), daemon=True)
                proc.start()
                send.close()  # only the child holds the write end: its death closes the pipe
                running[next_start] = (proc, recv)
                next_start += 1
            by_conn = {conn: k for k, (_, conn) in running.items()}
            for conn in wait(list(by_conn)):
                k = by_conn[conn]
                proc, _ = running.pop(k)
                try:
                    status, payload = conn.recv()
                except EOFError:
                    proc.join()
                    a, b = chunks[k]
                    code = proc.exitcode
                    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    raise WorkerDiedError(
                        f"data synthesis worker for sessions {a}-{b - 1} died ({how}; out of memory?); nothing was written"
                    ) from None
                finally:
                    conn.close()
                proc.join()
                if status == "error":
                    raise payload
                done[k] = payload
            while next_yield in done:
                yield chunks[next_yield], done.pop(next_yield)
                next_yield += 1
    finally:
        for proc, conn in running.values():
            proc.kill()
            proc.join()
            conn.close()


def shard_chunks(n: int, chunk_sessions: int, shard: tuple[int, int] | None) -> list[tuple[int, int]]:
    """The work chunks of one shard: shard ``k`` of ``N`` takes a contiguous run of the unsharded run's chunks.

    Chunks, not sessions, are dealt out: a session's audio depends on the sessions before it in
    its chunk (espeak-ng carries state), so the shards together make exactly the unsharded chunks
    and their rows are byte-identical to the unsharded run's.
    """
    chunks = [(s, min(s + chunk_sessions, n)) for s in range(0, n, chunk_sessions)]
    if shard is None:
        return chunks
    k, count = shard
    if not 0 <= k < count:
        raise InputError(f"shard {k} of {count}: the index must be in 0..{count - 1}")
    lo, hi = len(chunks) * k // count, len(chunks) * (k + 1) // count
    return chunks[lo:hi]


def _prefetch_scripts(chunks: list[tuple[int, int]], concurrency: int, bar: Any = None) -> None:  # noqa: ANN401
    """Stage 1 ahead of the workers: every session's teacher calls, ``concurrency`` at a time.

    Threads run :func:`_plan` (the same code the workers run) against the teacher's client,
    whose one event loop holds the rate limit and the requests in flight; the replies land in
    the response cache, so the forked workers script each session from the cache (no network,
    same bytes) and a killed run resumes paying only for what it had not received.
    """
    import threading

    todo = (i for a, b in chunks for i in range(a, b))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            try:
                _plan(i)
            except Reject:
                pass  # the worker meets the same reject (cached reply or remembered failure) and counts it
            if bar is not None:
                with lock:
                    bar.update(1)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def replace_dir(new: Path, out_dir: Path) -> None:
    """Move the finished ``new`` onto ``out_dir``: the old dataset is renamed aside first and removed
    only after the rename, so a crash leaves either the old or the new dataset, never half of one."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        out_dir.rename(old)
    new.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _content_fingerprinted(arrow: Path):  # noqa: ANN202 - datasets.Dataset, imported lazily
    """Load a split's arrow file with a fingerprint taken from its bytes.

    ``datasets`` otherwise fingerprints a file-backed table by hashing where it lies, here a
    temp folder named after the process id. So the same config, synthesized twice, saved
    byte-identical rows under a different ``state.json``. That made ``lws train`` refuse to
    resume ("dataset differs") and DVC version identical data as new data. A content hash is
    the fingerprint ``datasets`` means: equal only for equal rows, so its map cache stays sound.
    """
    import hashlib

    from datasets import Dataset

    loaded = Dataset.from_file(str(arrow))
    with open(arrow, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()[:16]
    return Dataset(loaded.data, info=loaded.info, split=loaded.split, fingerprint=digest)


def synthesize(
    cfg,  # noqa: ANN001 - LWSConfig
    out_dir: str | Path,
    sessions: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    teacher: Teacher | None = None,
    text_only: bool = False,
    shard: tuple[int, int] | None = None,
) -> SynthSummary:
    """Synthesize ``sessions`` sessions into a DatasetDict at ``out_dir`` (+ card.json, README.md, tokenizer/).

    ``text_only``: rows keep the whole session (user words with their TTS timings, units)
    but store ``audio`` as empty bytes, for a text-only LM corpus that costs little disk.
    The TTS still runs (it gives the word timings), so the timelines are exactly those of
    a full run with the same seed; the audio statistics count the synthesized length
    (units × unit_s) and ``card.json`` records ``text_only: true``. Anything that reads
    audio from such a dataset fails loudly (an empty unit).

    ``shard=(k, N)``: only shard ``k`` of ``N`` of the ``sessions`` (see :func:`shard_chunks`);
    :func:`lws_core.data.shards.merge_shards` puts the N shard datasets back together.

    A teacher with an LLM client (``kind=openai``) is called for every session first, many
    requests in flight (:func:`_prefetch_scripts`), before the workers fork; its token and cost
    counts go into the card.
    """
    from datasets import DatasetDict
    from datasets.arrow_writer import ArrowWriter

    from lws_core.data.card import write_card

    t0 = time.time()
    d = cfg.data
    n = int(sessions or d.sessions)
    w = max(1, int(workers or d.workers))
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a directory")
    teacher = teacher or make_teacher(d.teacher, cache_dir=str(Path(cfg.pipeline.workspace) / "teacher_cache"))
    source = None
    if d.source.kind == "file":
        if not d.source.path:
            raise InputError("data.source.path is required when data.source.kind=file")
        source = FileQuestions(d.source.path, d.source.question_column, d.source.answer_column)
    budget_tokenizer()
    tts = EspeakTTS(fresh=True)
    tts.synthesize("warm up")  # every chunk process starts from this exact engine state
    _ENV.update(cfg=cfg, teacher=teacher, source=source, tts=tts, text_only=bool(text_only))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shards = tmp / "_shards"
    shards.mkdir(parents=True)
    feats = features()
    writers = {s: ArrowWriter(features=feats, path=str(shards / f"{s}.arrow")) for s in SPLITS}
    counts = {s: 0 for s in SPLITS}
    rejects: collections.Counter[str] = collections.Counter()
    examples: list[str] = []
    per_scenario: collections.Counter[str] = collections.Counter()
    per_family: collections.Counter[str] = collections.Counter()
    voices: collections.Counter[str] = collections.Counter()
    total_units = 0
    audio_s = 0.0
    chunks = shard_chunks(n, d.chunk_sessions, shard)
    planned = sum(b - a for a, b in chunks)
    client = getattr(teacher, "client", None)
    scripts_s = 0.0
    bar = None
    try:
        if client is not None:
            t_scripts = time.time()
            if progress:
                from lws_core.progress import progress as progress_bar

                bar = progress_bar(total=planned, desc="scripts", unit="session")
            _prefetch_scripts(chunks, client.concurrency, bar)
            client.close()  # no client thread may live across the fork
            scripts_s = time.time() - t_scripts
            if bar is not None:
                bar.close()
                bar = None
        t_sessions = time.time()
        if progress:
            from lws_core.progress import progress as progress_bar

            bar = progress_bar(total=planned, desc="synth", unit="session")
        for c, (rows, rej, ex) in _run_chunks(chunks, w):
            rejects.update(rej)
            examples += ex[: max(0, 10 - len(examples))]
            for row in rows:
                split = row.pop("split")
                n_units = row.pop("n_units")
                writers[split].write(row)
                counts[split] += 1
                per_scenario[row["scenario"]] += 1
                per_family[row["task_family"]] += 1
                voices[row["voice"].split("@")[0]] += 1
                audio_s += n_units * row["unit_s"]  # the synthesized length, also when the audio is not stored
                total_units += n_units
            if bar is not None:
                bar.update(c[1] - c[0])
                bar.set_postfix(rows=sum(counts.values()), rejects=sum(rejects.values()))
        for wr in writers.values():
            wr.finalize()
            wr.close()
        if sum(counts.values()) == 0 and planned:  # an empty shard (more shards than chunks) is an empty dataset
            raise InputError(f"no session survived ({dict(rejects)}); first: {examples[0] if examples else '-'}")
        from datasets.utils.logging import disable_progress_bar, enable_progress_bar

        disable_progress_bar()  # our own bar is the one to watch
        dd = DatasetDict({s: _content_fingerprinted(shards / f"{s}.arrow") for s in SPLITS})
        final = tmp / "out"
        # datasets writes no shard for an empty split and then cannot load it back: give it one empty shard
        dd.save_to_disk(str(final), num_shards={s: 1 for s in SPLITS if counts[s] == 0})
        enable_progress_bar()
        del dd
        budget_tokenizer().save(final / "tokenizer")
        wall = time.time() - t0
        summary = SynthSummary(
            out_dir=str(out_dir),
            rows=counts,
            rejects=dict(sorted(rejects.items())),
            per_scenario=dict(sorted(per_scenario.items())),
            per_family=dict(sorted(per_family.items())),
            audio_hours=round(audio_s / 3600, 4),
            units=total_units,
            wall_s=round(wall, 2),
            sessions_per_s=round(sum(counts.values()) / wall, 2),
            audio_s_per_s=round(audio_s / wall, 1),
            extra={
                "reject_examples": examples,
                "voices": dict(sorted(voices.items())),
                "workers": w,
                "text_only": bool(text_only),
                "teacher_usage": teacher_usage(client),
                "sessions": [chunks[0][0], chunks[-1][1]] if chunks else [0, 0],
                "shard": list(shard) if shard else None,
                "timings": {"scripts_s": round(scripts_s, 2), "sessions_s": round(time.time() - t_sessions, 2),
                            "wall_s": round(wall, 2)},
            },
        )
        write_card(final, cfg, summary, teacher.name, planned)
        replace_dir(final, out_dir)
        return summary
    finally:
        if bar is not None:
            bar.close()
        _ENV.clear()
        shutil.rmtree(tmp, ignore_errors=True)


def teacher_usage(client: Any) -> dict[str, Any] | None:  # noqa: ANN401 - LLMClient | None
    """The card's teacher spend: paid in this run, and what the whole dataset's replies cost (cached ones too)."""
    if client is None:
        return None
    st = client.stats
    pin, pout = client.prices
    pt, ct = st.prompt_tokens + st.cached_prompt_tokens, st.completion_tokens + st.cached_completion_tokens
    return {
        "model": client.model,
        "requests_paid": st.requests,
        "cache_hits": st.cache_hits,
        "retries": st.retries,
        "rate_limited": st.rate_limited,
        "failures": st.failures,
        "paid_prompt_tokens": st.prompt_tokens,
        "paid_completion_tokens": st.completion_tokens,
        "paid_cost_usd": round(st.cost_usd, 6),
        "dataset_prompt_tokens": pt,
        "dataset_completion_tokens": ct,
        "dataset_cost_usd": round(pt / 1000 * pin + ct / 1000 * pout, 6),
        "usd_per_1k_input": pin,
        "usd_per_1k_output": pout,
    }


def summary_dict(s: SynthSummary) -> dict[str, Any]:
    return asdict(s)


def _json(o: Any) -> str:
    return json.dumps(o, indent=2, sort_keys=True)

"""The Engine: a loaded model + TTS, a factory of streaming sessions, and offline simulation.

``simulate`` streams a recording through a session as if live and assembles the
time-synchronous output: output sample i is what the model said while input
sample i was heard. A unit's speech plays during the following unit, so the
stream starts with at least one unit of silence; the output is cut to the
input's length (speech still queued when the input ends is not played).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lws_core.engine.activity import SpeechActivity
from lws_core.engine.fastpath import FastPath, Feed
from lws_core.engine.session import AudioRequest, FeedRequest, Policy, Request, StreamingSession
from lws_core.engine.types import EngineConfig, SimulationResult, UnitOutput
from lws_core.errors import InputError
from lws_core.hardware import native_bf16
from lws_core.schema import Session, Unit, Word

if TYPE_CHECKING:
    from lws_core.audio.tts import TTS
    from lws_core.config import LWSConfig
    from lws_core.model import LWSModel

OUTPUT_FILES = ("output.wav", "output.json", "written.md", "units.jsonl", "timeline.png")
TIMELINE_TITLE = "simulated session: user speech activity, state, writing, speech as played"


# characters of written layout (markdown emphasis, code, tables, headings, line breaks) that speech never carries
UNSPOKEN = frozenset("*`|#\n\t")
ENCODER_BATCH_WINDOWS = 8  # audio windows from which the encoder runs under engine.batch_dtype


class Engine:
    """Holds the model and the TTS; every conversation is a ``session()``."""

    def __init__(self, model: LWSModel, config: EngineConfig | None = None, tts: TTS | None = None) -> None:
        self.model = model.eval()
        self.config = config or EngineConfig()
        self._tts = tts
        tok = model.tokenizer
        device = next(model.parameters()).device
        vocab = model.lm.get_output_embeddings().weight.shape[0]
        mask = torch.zeros(vocab, dtype=torch.bool, device=device)
        mask[: tok.vocab_size] = True
        mask[list(tok.special_set)] = False
        self.text_mask = mask
        self._masks: dict[tuple[frozenset[int], bool, bool], torch.Tensor] = {}
        self._say_mask: torch.Tensor | None = None
        # decoding a small model is overhead-bound, and sessions share weight reads only in one
        # forward: use the fused, batched forward wherever the backbone allows it
        w = model.lm.get_input_embeddings().weight
        wd, bd = _weight_dtype(self.config.weight_dtype, w), _batch_dtype(self.config.batch_dtype, w)
        self.fast_path = (
            FastPath(model.lm, wd, bd, self.config.batch_rows, self.config.weight_rows) if self.config.fast_path and FastPath.supports(model.lm) else None
        )
        if self.fast_path is not None and self.config.cuda_graphs and w.device.type == "cuda":
            # plain rotary only: the graph indexes a position table (scaled variants compute theirs per call)
            self.fast_path.graphs = self.fast_path._table
        self.compile_s = 0.0  # seconds engine.compile_decode took at start-up
        if self.fast_path is not None and self.config.compile_decode:
            # the compiled step is guarded on torch's thread count: set engine.threads before compiling, or the
            # command's own use_threads() afterwards would make the first session compile again
            self.use_threads()
            kv = None if self.config.kv_dtype == "model" else getattr(torch, self.config.kv_dtype)
            self.compile_s = self.fast_path.compile_decode(kv)
        # the audio encoder over many windows (a server's round) runs under bf16 autocast, like the LM's big forwards:
        # 128 windows 265 -> 181 ms, 16 windows 36 -> 22 ms; from 8 windows on (1 window: slower in bf16)
        self.encoder_autocast = bd
        self.encoder_batch_windows = ENCODER_BATCH_WINDOWS

    @classmethod
    def from_dir(
        cls,
        model_dir: str | Path,
        cfg: LWSConfig | None = None,
        device: str = "cpu",
        tts: TTS | None = None,
        config: EngineConfig | None = None,
        lean: bool = False,
    ) -> Engine:
        """Load a saved LWS model directory (offline); bad directories fail with one line (InputError).

        Engine settings come from ``config``, else from ``cfg.engine`` when the project
        config has that section, else the defaults. ``lean=True`` (the commands that only
        decode: ``lws simulate``, ``lws serve``, the MLflow model) loads the model
        decode-only, without transformers' modeling code, when the fused path covers the
        backbone: seconds less start-up, and ``engine.model`` cannot run its HF forward.
        """
        from lws_core.model import LWSModel

        if config is None and cfg is not None and getattr(cfg, "engine", None) is not None:
            config = EngineConfig.model_validate(cfg.engine.model_dump())
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"device {device!r} requested but CUDA is not available")
        lean = lean and (config or EngineConfig()).fast_path
        model = LWSModel.load(model_dir, device=device, lean=lean)
        return cls(model, config, tts)

    def use_threads(self) -> None:
        """Apply ``config.threads`` to torch (process-wide: for the commands that own the process)."""
        if self.config.threads > 0 and self.text_mask.device.type == "cpu":
            torch.set_num_threads(self.config.threads)

    @property
    def speaks(self) -> bool:
        """Whether say text is rendered: ``speak`` on, and a TTS given or named (``tts`` not "none")."""
        return self.config.speak and (self._tts is not None or self.config.tts != "none")

    @property
    def tts(self) -> TTS:
        """The speech synthesizer (the one given, else the one ``config.tts`` names), created on first use."""
        if self._tts is None:
            if self.config.tts == "none":
                raise InputError("engine.tts is 'none': no speech synthesizer is configured")
            from lws_core.audio import get_tts

            self._tts = get_tts()
        return self._tts

    @property
    def unit_samples(self) -> int:
        return self.model.spec.unit_samples

    def allowed_mask(self, allowed: frozenset[int], text_ok: bool, spoken: bool = False) -> torch.Tensor:
        """Boolean vocabulary mask for the grammar's current choice (cached: a handful of distinct sets).

        ``spoken``: the text is the say channel's, which is never offered a token carrying written
        layout (:data:`UNSPOKEN`): a small model sometimes carried its written answer's markdown
        (``**Answer:**``) into speech, and the TTS read the asterisks' words aloud.
        """
        key = (allowed, text_ok, spoken)
        m = self._masks.get(key)
        if m is None:
            m = (self.say_text_mask if spoken else self.text_mask).clone() if text_ok else torch.zeros_like(self.text_mask)
            m[list(allowed)] = True
            self._masks[key] = m
        return m

    @property
    def say_text_mask(self) -> torch.Tensor:
        """The text tokens the say channel may use: every text token whose text carries no written layout."""
        if self._say_mask is None:
            tok = self.model.tokenizer
            ids = [i for i in range(tok.vocab_size) if bool(self.text_mask[i])]
            m = self.text_mask.clone()
            for i, text in zip(ids, tok.token_texts(ids), strict=True):
                if any(c in text for c in UNSPOKEN):
                    m[i] = False
            self._say_mask = m
        return self._say_mask

    def session(
        self,
        system: str | None = None,
        naive: bool = False,
        policy: Policy | None = None,
        trace: bool = False,
    ) -> StreamingSession:
        """A new conversation with its own cache, document, speech queue and clock."""
        return StreamingSession(self, system=system, naive=naive, policy=policy, trace=trace)

    # -- model calls: one session's, or many sessions' in shared batches -------------------------
    def execute(self, requests: Sequence[Request]) -> list[Any]:
        """Answer sessions' model calls: every audio window in one encoder batch, every feed in one
        fused forward (ragged: each session's tokens at its own positions, on its own cache).

        Without the fused path (other backbones, LoRA) feeds run one by one through the HF forward.
        """
        out: list[Any] = [None] * len(requests)
        audio = [i for i, r in enumerate(requests) if isinstance(r, AudioRequest)]
        if audio:
            device = self.text_mask.device
            windows = torch.from_numpy(np.stack([requests[i].window for i in audio])).to(device)
            if self.encoder_autocast is not None and len(audio) >= self.encoder_batch_windows:
                with torch.autocast(device.type, dtype=self.encoder_autocast):
                    emb = self.model.audio(windows)
            else:
                emb = self.model.audio(windows)
            emb = emb.to(self.model.lm.get_input_embeddings().weight.dtype)
            for row, i in enumerate(audio):
                out[i] = emb[row]
        feeds = [i for i, r in enumerate(requests) if isinstance(r, FeedRequest)]
        if feeds and self.fast_path is not None:
            logits = self.fast_path.forward(
                [Feed(r.embeds[0], r.session._cache, r.start, r.want_logits) for r in (requests[i] for i in feeds)]
            )
            for i, lg in zip(feeds, logits, strict=True):
                out[i] = lg
        elif feeds:
            for i in feeds:
                r = requests[i]
                res = self.model.lm(inputs_embeds=r.embeds, cache=r.session._cache, use_cache=True, logits_to_keep=1)
                out[i] = res.logits[0, -1] if r.want_logits else None
        return out

    def step_many(
        self,
        pairs: Sequence[tuple[StreamingSession, np.ndarray]],
        return_exceptions: bool = False,
    ) -> list[UnitOutput | BaseException]:
        """Advance several sessions by one unit each, their model calls answered together.

        Each round gathers the next call of every session still working on its unit and answers
        them in one :meth:`execute`: the audio encoder runs once for all units, and the LM's
        weights are read once per decoded position for every session (listening sessions finish
        after a round or two; speaking ones keep decoding). Sessions stay isolated: own cache,
        document, speech queue, clock and sampling generator. With ``return_exceptions`` one
        session's failure (say, a bad audio block) is returned in its place and the others go on;
        otherwise the first failure is raised after every session has finished its unit.
        """
        from lws_core.engine.batch import UnitBatch

        sessions = [s for s, _ in pairs]
        if len({id(s) for s in sessions}) != len(sessions):
            raise ValueError("step_many: a session appears twice (one unit per session per call)")
        results: list[UnitOutput | BaseException | None] = [None] * len(pairs)
        batch = UnitBatch(self)
        # locks are taken in one order for everyone (no deadlock between two callers); each is
        # released as soon as its session's unit ends
        for i in sorted(range(len(pairs)), key=lambda j: id(sessions[j])):
            batch.add(sessions[i], pairs[i][1], functools.partial(results.__setitem__, i))
        while batch:
            batch.tick()
        if not return_exceptions:
            for r in results:
                if isinstance(r, BaseException):
                    raise r
        return results  # type: ignore[return-value]

    # -- offline simulation ----------------------------------------------------------------
    def iter_units(self, audio: np.ndarray) -> Iterator[np.ndarray]:
        n = self.unit_samples
        for start in range(0, len(audio), n):
            yield audio[start : start + n]

    def simulate(
        self,
        audio: np.ndarray,
        system: str | None = None,
        progress: bool = False,
        naive: bool = False,
        policy: Policy | None = None,
        heard: list[list[int]] | None = None,
    ) -> SimulationResult:
        """Run a whole recording (float32 mono, 16 kHz) through a fresh session, as if live.

        ``naive`` runs the recompute-everything baseline; ``policy`` scripts decisions (tests).
        ``heard`` (K token ids per unit) feeds the text of what was said instead of
        the audio: the text ceiling and the ASR→LLM cascade of the liberation benchmark.
        """
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size == 0:
            raise InputError("empty audio: nothing to simulate")
        if not np.isfinite(audio).all():
            raise InputError("audio contains NaN or infinite samples")
        out = np.zeros(len(audio), dtype=np.float32)
        tl = _Timeline(self.model.spec.unit_s)
        total = -(-len(audio) // self.unit_samples)
        for block, u in self._run(self.iter_units(audio), system, progress, naive, total, policy, heard):
            tl.add(u, block)
            if u.speech.size:  # plays during the next unit
                start = (u.index + 1) * self.unit_samples
                seg = u.speech[: max(0, len(out) - start)]
                out[start : start + len(seg)] = seg
        return self._result(tl, out, len(audio), system)

    def _run(
        self,
        blocks: Iterable[np.ndarray],
        system: str | None,
        progress: bool,
        naive: bool,
        total: int | None = None,
        policy: Policy | None = None,
        heard: list[list[int]] | None = None,
    ) -> Iterator[tuple[np.ndarray, UnitOutput]]:
        from lws_core.progress import progress as bar

        with self.session(system=system, naive=naive, policy=policy) as sess:
            for i, block in enumerate(bar(blocks, total=total, unit="unit", disable=not progress, desc="simulate")):
                slots = None if heard is None else (heard[i] if i < len(heard) else [self.model.tokenizer.special.audio] * self.model.spec.audio_tokens_per_unit)
                yield block, sess.step(block, heard=slots)

    def _result(self, tl: _Timeline, out: np.ndarray, n_in: int, system: str | None) -> SimulationResult:
        spec = self.model.spec
        session = Session(
            unit_s=spec.unit_s,
            system=system,
            units=[
                Unit(state=u.state, write=u.write, say=u.say if u.state == "speak" else "", eot=u.eot)
                for u in tl.units
            ],
            meta={"generated": True},
        )
        end_s = n_in / spec.sample_rate
        words = [Word(text=w.text, start=w.start, end=min(w.end, end_s)) for w in tl.words if w.start < end_s]
        return SimulationResult(
            tl.units,
            out,
            words,
            "".join(u.write for u in tl.units),
            session,
            spec.unit_s,
            n_in,
            tl.activity.segments(),
        )

    def simulate_file(
        self,
        path: str | Path,
        out_dir: str | Path,
        system: str | None = None,
        progress: bool = True,
        policy: Policy | None = None,
    ) -> SimulationResult:
        """Stream a file of any length from disk and write the outputs atomically.

        Memory is bounded: input blocks are read one unit at a time, output audio and
        units.jsonl are written as they come, and only the (audio-free) unit records
        are kept for the timeline. The result's ``output_audio`` is empty: read output.wav.
        A WAV whose header promises more frames than the file holds is refused
        (libsndfile would silently read the part that is there).
        """
        import soundfile as sf

        from lws_core.audio import iter_audio_blocks

        out_dir = _check_out_dir(out_dir)
        _check_wav_complete(Path(path))
        tmp = _tmp_dir(out_dir)
        try:
            tl = _Timeline(self.model.spec.unit_s, keep_audio=False)
            n_in = 0
            blocks = iter_audio_blocks(path, self.unit_samples)
            with (
                sf.SoundFile(
                    str(tmp / "output.wav"), "w", samplerate=16000, channels=1, subtype="PCM_16"
                ) as wav,
                open(tmp / "units.jsonl", "w") as ul,
            ):
                playing = np.zeros(0, dtype=np.float32)  # the previous unit's speech plays during this unit
                for block, u in self._run(blocks, system, progress, naive=False, policy=policy):
                    n_in += len(block)
                    seg = np.zeros(len(block), dtype=np.float32)
                    seg[: min(len(block), playing.size)] = playing[: len(block)]
                    wav.write(np.clip(seg, -1.0, 1.0))
                    playing = u.speech
                    ul.write(json.dumps(u.to_json()) + "\n")
                    tl.add(u, block)
            if n_in == 0:
                raise InputError(f"{path}: audio file has no samples")
            result = self._result(tl, np.zeros(0, dtype=np.float32), n_in, system)
            self._write_text_outputs(result, tmp)
            _publish(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return result

    def write_outputs(self, result: SimulationResult, out_dir: str | Path) -> Path:
        """output.wav, output.json, written.md, units.jsonl, timeline.png — all or nothing."""
        from lws_core.audio import write_wav

        out_dir = _check_out_dir(out_dir)
        tmp = _tmp_dir(out_dir)
        try:
            write_wav(tmp / "output.wav", result.output_audio)
            with open(tmp / "units.jsonl", "w") as f:
                for u in result.units:
                    f.write(json.dumps(u.to_json()) + "\n")
            self._write_text_outputs(result, tmp)
            _publish(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out_dir

    def _write_text_outputs(self, result: SimulationResult, directory: Path) -> None:
        from lws_core.schema.render import render_simulation

        (directory / "output.json").write_text(json.dumps(result.fdb_json(), indent=1))
        (directory / "written.md").write_text(result.written)
        render_simulation(
            result.session,
            directory / "timeline.png",
            user_speech=result.user_speech,
            spoken=result.spoken_words,
            duration_s=result.input_samples / self.model.spec.sample_rate,
            title=TIMELINE_TITLE,
        )


class _Timeline:
    """Collects units, the spoken words in output-stream time (cut at a barge-in) and the
    input's speech activity (for the timeline's user lane)."""

    def __init__(self, unit_s: float, keep_audio: bool = True) -> None:
        self.unit_s = unit_s
        self.keep_audio = keep_audio
        self.units: list[UnitOutput] = []
        self.words: list[Word] = []
        self.activity = SpeechActivity()

    def add(self, u: UnitOutput, block: np.ndarray) -> None:
        self.activity.feed(block)
        if u.barge_in:
            # the chunk that was playing stops at the end of this unit; a word it had started is cut there
            cut = (u.index + 1) * self.unit_s
            self.words = [
                Word(text=w.text, start=w.start, end=min(w.end, cut)) if w.end > cut else w
                for w in self.words
            ]
        self.words += u.speech_words
        self.units.append(u if self.keep_audio else _light(u))


def _light(u: UnitOutput) -> UnitOutput:
    """The unit without its audio (long simulations keep only the records)."""
    return dataclasses.replace(u, speech=np.zeros(0, dtype=np.float32))


def _check_wav_complete(path: Path) -> None:
    """Refuse a RIFF/WAVE file whose ``data`` chunk is cut short (a copy or download that stopped).

    libsndfile quietly reports the frames that are there, so the simulation would run on
    part of the recording without a word. A data size of 0 or 0xFFFFFFFF (what streaming
    recorders write when the length is not known yet) is accepted as "to the end of file".
    Other formats are left to the decoder, which fails on them mid-read.
    """
    import struct

    if not path.is_file():
        return  # the loader names a missing file
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return
            block_align = 0
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                cid, n = struct.unpack("<4sI", f.read(8))
                if cid == b"fmt ":
                    fmt = f.read(min(n, 16))
                    if len(fmt) >= 14:
                        block_align = struct.unpack("<H", fmt[12:14])[0]
                elif cid == b"data":
                    have = size - (pos + 8)
                    if n not in (0, 0xFFFFFFFF) and have < n:
                        if block_align:
                            what = f"header declares {n // block_align} frames, file holds {have // block_align}"
                        else:
                            what = f"header declares {n} data bytes, file holds {have}"
                        raise InputError(f"{path}: truncated WAV ({what})")
                    return
                pos += 8 + n + (n & 1)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None


def _check_out_dir(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a directory")
    return out_dir


def _tmp_dir(out_dir: Path) -> Path:
    """A hidden sibling of the output directory (same filesystem, so the final moves are renames)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _publish(tmp: Path, out_dir: Path) -> None:
    """Make the outputs visible only once they are complete: one rename when the directory is new."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    for f in tmp.iterdir():
        os.replace(f, out_dir / f.name)
    tmp.rmdir()


def engine_overrides(sets: list[str] | None) -> tuple[dict[str, Any], list[str]]:
    """Split ``--set`` items into EngineConfig overrides (``engine.*``) and project-config ones."""
    import yaml

    from lws_core.errors import ConfigError

    engine: dict[str, Any] = {}
    rest: list[str] = []
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip()
        if k.startswith("engine."):
            name = k[len("engine.") :]
            if name not in EngineConfig.model_fields:
                raise ConfigError(
                    f"unknown config key {k!r} (allowed: {', '.join('engine.' + f for f in EngineConfig.model_fields)})"
                )
            engine[name] = yaml.safe_load(v)
        else:
            rest.append(item)
    return engine, rest


def _weight_dtype(setting: str, weight: torch.Tensor) -> torch.dtype | None:
    """``engine.weight_dtype`` for this model: None for the model's own weights, else the copies' precision."""
    if setting == "int8" and weight.device.type != "cpu":
        raise InputError(f"engine.weight_dtype=int8 is a CPU decode format (aten's int8 kernel); this model is on {weight.device.type}: use float16 or model")
    if setting == "auto":
        if weight.device.type != "cpu" or weight.dtype != torch.float32:
            return None
        return torch.int8 if int8_kernel() else torch.float16
    return None if setting == "model" else getattr(torch, setting)


@functools.cache
def int8_kernel() -> bool:
    """Whether this torch build runs aten's weight-only int8 product on CPU (``engine.weight_dtype=auto``
    takes int8 copies where it does, float16 ones where it does not): one tiny call, once per process."""
    from lws_core.engine.fastpath import _int8_rows

    try:
        q, scale = _int8_rows(torch.ones(8, 32))
        y = torch._weight_int8pack_mm(torch.ones(1, 32, dtype=torch.bfloat16), q, scale)
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return bool(torch.isfinite(y).all()) and abs(float(y[0, 0]) - 32.0) < 1.0


def _batch_dtype(setting: str, weight: torch.Tensor) -> torch.dtype | None:
    """``engine.batch_dtype`` for this model: None for the model's own weights, else the copies' precision."""
    if setting == "auto":
        return torch.bfloat16 if weight.device.type == "cpu" and weight.dtype == torch.float32 and native_bf16() else None
    return None if setting == "model" else getattr(torch, setting)


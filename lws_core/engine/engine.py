"""The Engine: a loaded model + TTS, a factory of streaming sessions, and offline simulation.

``simulate`` streams a recording through a session as if live and assembles the
time-synchronous output: output sample i is what the model said while input
sample i was heard. A unit's speech plays during the following unit, so the
stream starts with at least one unit of silence, as in the reference clients of
Full-Duplex-Bench; the output is cut to the input's length.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from lws_core.engine.session import StreamingSession
from lws_core.engine.types import EngineConfig, SimulationResult, UnitOutput
from lws_core.errors import InputError
from lws_core.schema import Session, Unit, Word


class Engine:
    """Holds the model and TTS; every conversation is a ``session()``."""

    def __init__(self, model, config: EngineConfig | None = None, tts=None) -> None:  # noqa: ANN001
        self.model = model.eval()
        self.config = config or EngineConfig()
        self._tts = tts
        tok = model.tokenizer
        vocab = model.lm.get_output_embeddings().weight.shape[0]
        mask = torch.zeros(vocab, dtype=torch.bool)
        mask[: tok.vocab_size] = True
        for s in tok.special_set:
            mask[s] = False
        self.text_mask = mask

    @classmethod
    def from_dir(cls, model_dir: str | Path, cfg=None, device: str = "cpu", tts=None, config: EngineConfig | None = None) -> Engine:  # noqa: ANN001
        """Load a saved LWS model directory (offline); one-line errors for bad directories."""
        from lws_core.model import LWSModel

        model = LWSModel.load(model_dir, device=device)
        return cls(model, config, tts)

    @property
    def tts(self):  # noqa: ANN201
        if self._tts is None:
            from lws_core.audio import get_tts

            self._tts = get_tts()
        return self._tts

    @property
    def unit_samples(self) -> int:
        return self.model.spec.unit_samples

    def session(self, system: str | None = None, naive: bool = False) -> StreamingSession:
        return StreamingSession(self, system=system, naive=naive)

    # -- offline simulation ----------------------------------------------------------------
    def iter_units(self, audio: np.ndarray) -> Iterator[np.ndarray]:
        n = self.unit_samples
        for start in range(0, len(audio), n):
            yield audio[start : start + n]

    def simulate(self, audio: np.ndarray, system: str | None = None, progress: bool = False, naive: bool = False) -> SimulationResult:
        """Run a whole recording (float32, 16 kHz) through a fresh session."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size == 0:
            raise InputError("empty audio: nothing to simulate")
        if not np.isfinite(audio).all():
            raise InputError("audio contains NaN or infinite samples")
        out = np.zeros(len(audio), dtype=np.float32)
        units: list[UnitOutput] = []
        words: list[Word] = []
        for u in self._run(self.iter_units(audio), system, progress, naive, total=-(-len(audio) // self.unit_samples)):
            units.append(u)
            start = (u.index + 1) * self.unit_samples
            if u.speech.size and start < len(out):
                seg = u.speech[: len(out) - start]
                out[start : start + len(seg)] = seg
            words += [w for w in u.speech_words if w.start < len(audio) / 16000]
        return self._result(units, out, words, len(audio), system)

    def _run(self, blocks: Iterable[np.ndarray], system, progress: bool, naive: bool, total: int | None = None) -> Iterator[UnitOutput]:  # noqa: ANN001
        from tqdm.auto import tqdm

        with self.session(system=system, naive=naive) as sess:
            for block in tqdm(blocks, total=total, unit="unit", disable=not progress, desc="simulate"):
                yield sess.step(block)

    def _result(self, units: list[UnitOutput], out: np.ndarray, words: list[Word], n_in: int, system: str | None) -> SimulationResult:
        spec = self.model.spec
        session = Session(
            unit_s=spec.unit_s,
            system=system,
            units=[Unit(state=u.state, write=u.write, say=u.say if u.state == "speak" else "", eot=u.eot) for u in units],
            meta={"generated": True},
        )
        clipped = [Word(text=w.text, start=w.start, end=min(w.end, n_in / 16000)) for w in words]
        return SimulationResult(units, out, clipped, "".join(u.write for u in units), session, spec.unit_s, n_in)

    def simulate_file(self, path: str | Path, out_dir: str | Path, system: str | None = None, progress: bool = True) -> SimulationResult:
        """Stream a file of any length from disk in bounded memory and write the outputs atomically."""
        import soundfile as sf

        from lws_core.audio import iter_audio_blocks

        out_dir = Path(out_dir)
        tmp = _tmp_dir(out_dir)
        n_in = 0
        units: list[UnitOutput] = []
        words: list[Word] = []
        try:
            blocks = iter_audio_blocks(path, self.unit_samples)
            first = next(blocks, None)
            if first is None or first.size == 0:
                raise InputError(f"{path}: empty audio")

            def all_blocks() -> Iterator[np.ndarray]:
                nonlocal n_in
                for b in [first, *[]]:
                    n_in += len(b)
                    yield b
                for b in blocks:
                    n_in += len(b)
                    yield b

            with sf.SoundFile(str(tmp / "output.wav"), "w", samplerate=16000, channels=1, subtype="PCM_16") as wav, open(
                tmp / "units.jsonl", "w"
            ) as ul:
                pending = np.zeros(self.unit_samples, dtype=np.float32)  # output lags input by one unit
                lengths: list[int] = []
                for u in self._run(all_blocks(), system, progress, naive=False):
                    lengths.append(n_in)
                    wav.write(pending[: self.unit_samples])
                    pending = u.speech if u.speech.size else np.zeros(self.unit_samples, dtype=np.float32)
                    ul.write(json.dumps(u.to_json()) + "\n")
                    units.append(_light(u))
                    words += u.speech_words
            _truncate_wav(tmp / "output.wav", n_in)
            words = [w for w in words if w.start < n_in / 16000]
            result = self._result(units, np.zeros(0, dtype=np.float32), words, n_in, system)
            self._write_text_outputs(result, tmp)
            _move_into(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return result

    def write_outputs(self, result: SimulationResult, out_dir: str | Path) -> Path:
        """output.wav, output.json, written.md, units.jsonl, timeline.png — all or nothing."""
        from lws_core.audio import write_wav

        out_dir = Path(out_dir)
        tmp = _tmp_dir(out_dir)
        try:
            write_wav(tmp / "output.wav", result.output_audio)
            with open(tmp / "units.jsonl", "w") as f:
                for u in result.units:
                    f.write(json.dumps(u.to_json()) + "\n")
            self._write_text_outputs(result, tmp)
            _move_into(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out_dir

    def _write_text_outputs(self, result: SimulationResult, directory: Path) -> None:
        from lws_core.schema.render import render_timeline

        (directory / "output.json").write_text(json.dumps(result.fdb_json(), indent=1))
        (directory / "written.md").write_text(result.written)
        render_timeline(result.session, directory / "timeline.png", title="simulated session")


def _light(u: UnitOutput) -> UnitOutput:
    """Drop the audio of a unit kept for the result of a streamed (long) simulation."""
    return UnitOutput(u.index, u.state, u.write, u.say, u.eot, u.forced, np.zeros(0, dtype=np.float32), u.speech_words, u.barge_in, u.timings, u.issues)


def _tmp_dir(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _move_into(tmp: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        os.replace(f, out_dir / f.name)
    tmp.rmdir()


def _truncate_wav(path: Path, n: int) -> None:
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="int16")
    if len(data) < n:
        data = np.pad(data, (0, n - len(data)))
    sf.write(str(path), data[:n], sr, subtype="PCM_16")

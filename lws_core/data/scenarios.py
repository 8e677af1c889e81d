"""Stage 2: place a teacher's script on the unit timeline against real (synthesized) user speech.

Rules (``../shared/design/token-schema.md``): a note goes to the first unit in
which its word has ended (later if the write budget is full); the response starts
in the first unit that begins after the user's turn ended; the written answer is
spread by the write budget; the spoken answer is cut into pieces whose
synthesized duration fits one unit; ``eot`` marks the last unit of a response.
A unit's output is played during the next unit, which is when barge-ins and
backchannels overlap it. Units with content or a state change set
``depends_on_word``; empty listen units leave it None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lws_core.audio.io import SAMPLE_RATE
from lws_core.audio.noise import add_noise, gain_db, noise
from lws_core.audio.tts import EspeakTTS, UnspeakableError, VoiceSpec
from lws_core.data.budget import count_tokens, fit_prefix
from lws_core.data.trail_off import reply_script
from lws_core.data.types import Question, Reject, Script
from lws_core.schema import Session, Unit, Word

BACKCHANNELS = ("mm-hmm", "right", "okay", "yeah", "I see", "uh-huh")
MODEL_VOICE = VoiceSpec()  # the engine speaks with the default voice; pieces are cut to its timing


@dataclass
class Timeline:
    unit_s: float
    max_write: int
    max_say: int
    tts: EspeakTTS
    words: list[Word] = field(default_factory=list)
    segments: list[tuple[float, np.ndarray]] = field(default_factory=list)
    units: list[dict[str, Any]] = field(default_factory=list)
    end_t: float = 0.0

    def unit(self, u: int) -> dict[str, Any]:
        while len(self.units) <= u:
            self.units.append({"state": "listen", "write": "", "say": "", "eot": False, "dep": None})
        return self.units[u]

    def heard_unit(self, t: float) -> int:
        """The unit by whose end time ``t`` has been heard."""
        return max(0, math.ceil(t / self.unit_s - 1e-9) - 1)

    def first_unit_after(self, t: float) -> int:
        return max(0, math.ceil(t / self.unit_s - 1e-9))

    def _dep(self, u: int, dep: int | None) -> None:
        if dep is not None:
            d = self.unit(u)
            d["dep"] = dep if d["dep"] is None else max(d["dep"], dep)

    # -- user side -------------------------------------------------------------------
    def say_user(self, text: str, voice: VoiceSpec, t0: float, gain: float, pause: tuple[int, float] | None = None) -> int:
        """Add the user's utterance at ``t0``; return the global index of its first word."""
        if not text.strip():
            raise Reject("empty_question")
        try:
            sp = self.tts.synthesize(text, voice)
        except UnspeakableError as e:
            raise Reject("unspeakable", str(e)) from None
        audio, words = gain_db(sp.audio, gain), list(sp.words)
        if pause is not None:
            k, p = pause  # pause after word k, p seconds
            cut_t = (words[k].end + words[k + 1].start) / 2
            cut = int(cut_t * SAMPLE_RATE)
            shift = int(round(p * SAMPLE_RATE)) / SAMPLE_RATE
            audio = np.concatenate([audio[:cut], np.zeros(int(round(shift * SAMPLE_RATE)), np.float32), audio[cut:]])
            words = [w if i <= k else Word(text=w.text, start=w.start + shift, end=w.end + shift) for i, w in enumerate(words)]
        first = len(self.words)
        self.words += [Word(text=w.text, start=round(w.start + t0, 4), end=round(w.end + t0, 4)) for w in words]
        self.segments.append((t0, audio))
        self.end_t = max(self.end_t, t0 + len(audio) / SAMPLE_RATE)
        return first

    # -- model side ------------------------------------------------------------------
    def place_writes(self, items: list[tuple[int, str, int]]) -> int:
        """Place (earliest unit, text, depends_on_word) in order under the write budget; return the last unit used."""
        u = 0
        last = -1
        for earliest, text, dep in items:
            u = max(u, earliest)
            while text:
                d = self.unit(u)
                n = fit_prefix(text, self.max_write, head=d["write"])
                if n == 0:
                    if not d["write"]:
                        raise Reject("budget", f"cannot fit any of {text[:20]!r} in {self.max_write} write tokens")
                    u += 1
                    continue
                d["write"] += text[:n]
                self._dep(u, dep)
                last = max(last, u)
                text = text[n:]
                if text:
                    u += 1
        return last

    def cut_speech(self, spoken: str) -> list[str]:
        """Cut the spoken answer into pieces of at most one unit of synthesized speech and ``max_say`` tokens."""
        try:
            sp = self.tts.synthesize(spoken, MODEL_VOICE)
        except UnspeakableError as e:
            raise Reject("unspeakable", f"spoken answer: {e}") from None
        ws, pieces, i = sp.words, [], 0
        while i < len(ws):
            j = i + 1
            while j < len(ws):
                text = " ".join(w.text for w in ws[i : j + 1])
                if ws[j].end - ws[i].start > self.unit_s or count_tokens(text) > self.max_say:
                    break
                j += 1
            piece = " ".join(w.text for w in ws[i:j])
            if count_tokens(piece) > self.max_say:
                raise Reject("budget", f"word {piece!r} exceeds the say budget")
            pieces.append(piece)
            i = j
        return pieces

    def respond(
        self, first_word: int, script: Script, min_pieces: int = 1, wait_s: float | None = None
    ) -> tuple[int, int, list[str]]:
        """Place notes and the response for the question whose words start at ``first_word``.

        ``wait_s``: reply only in the first unit by whose end the silence has lasted this long (a
        trailed-off question, :mod:`lws_core.data.trail_off`); by default, in the first unit that
        begins after the turn ended. Returns (first response unit, last response unit, spoken pieces).
        """
        last_word = len(self.words) - 1
        turn_end = self.words[last_word].end
        r = self.first_unit_after(turn_end)
        if wait_s is not None:
            r = max(r, self.heard_unit(turn_end + wait_s))
        items = []
        for nt in script.notes:
            g = first_word + nt.depends_on_word
            if not first_word <= g <= last_word:
                raise Reject("inconsistent", f"note depends on word {nt.depends_on_word} outside the question")
            items.append((self.heard_unit(self.words[g].end), nt.text, g))
        spoken = script.spoken
        pieces = self.cut_speech(spoken)
        if len(pieces) < min_pieces:
            pieces = self.cut_speech("Well, let me see. " + spoken)
        items.append((r, script.written, last_word))
        w_last = self.place_writes(items)
        for k, piece in enumerate(pieces):
            self.unit(r + k)["say"] = piece
        r_end = max(w_last, r + len(pieces) - 1)
        for u in range(r, r_end + 1):
            d = self.unit(u)
            d["state"] = "speak"
            self._dep(u, last_word)
        self.unit(r_end)["eot"] = True
        return r, r_end, pieces

    def truncate_from(self, y: int, dep: int) -> None:
        """Barge-in: from unit ``y`` the model listens, and the rest of its planned output is dropped."""
        for u in range(y, len(self.units)):
            self.units[u] = {"state": "listen", "write": "", "say": "", "eot": False, "dep": None}
        self.unit(y)["dep"] = dep

    # -- output ----------------------------------------------------------------------
    def render(self, tail_s: float, rng: np.random.Generator, snr_db: float | None) -> tuple[list[Unit], np.ndarray]:
        spu = int(round(self.unit_s * SAMPLE_RATE))
        n_units = max(len(self.units), math.ceil((self.end_t + tail_s) / self.unit_s - 1e-9))
        self.unit(n_units - 1)
        audio = np.zeros(n_units * spu, np.float32)
        for t0, seg in self.segments:
            s = int(round(t0 * SAMPLE_RATE))
            seg = seg[: max(0, len(audio) - s)]
            audio[s : s + len(seg)] += seg
        if snr_db is not None:
            audio = add_noise(audio, snr_db, rng)
        units = [Unit(state=d["state"], write=d["write"], say=d["say"], eot=d["eot"], depends_on_word=d["dep"]) for d in self.units]
        return units, np.clip(audio, -1, 1)


def choose_voice(rng: np.random.Generator, voices: list[str]) -> VoiceSpec:
    return VoiceSpec(str(rng.choice(voices)), int(rng.integers(140, 211)), int(rng.integers(30, 71)), 100)


def build_session(
    scenario: str,
    q1: Question,
    s1: Script | None,
    extra: tuple[Question, Script] | None,
    tl: Timeline,
    voice: VoiceSpec,
    rng: np.random.Generator,
    snr_db: float | None,
    pause_position: str = "middle",
    pause_max_s: float = 3.0,
    trail_off: tuple[np.random.Generator, float] | None = None,
) -> tuple[Session, np.ndarray, dict[str, Any]]:
    """Lay out one scenario; ``extra`` is the second request (barge-in) or follow-up (multi-turn).

    ``pause_position`` (``data.pause_position``): where a pause scenario's mid-question pause
    falls: ``middle`` after a word of the question's middle third, ``anywhere`` after any word but
    the last (a user hesitates before the second operand as well as after the first words).
    ``pause_max_s`` (``data.pause_max_s``): the longest such pause. ``trail_off`` (a pause session's
    generator and ``data.trail_off_wait_s``): the user stops at the pause and never goes on, and the
    model asks for the question again once the silence has lasted the wait (:mod:`lws_core.data.trail_off`).
    """
    meta: dict[str, Any] = {"scenario": scenario}
    gain = float(rng.uniform(-10, 0))
    if scenario == "silence":
        n = int(rng.integers(3, 9))
        tl.unit(n - 1)
        units, audio = tl.render(0.0, rng, None)
        level = 10 ** (float(rng.uniform(-50, -30)) / 20)
        audio = (audio + level * noise(len(audio), rng, "pink")).clip(-1, 1)
        return Session(unit_s=tl.unit_s, user_words=[], units=units), audio.astype(np.float32), meta
    assert s1 is not None
    lead = float(rng.uniform(0.2, 1.0))
    pause = None
    if scenario == "pause":
        nw = len(q1.words)
        if nw < 3:
            raise Reject("too_short", "pause needs at least 3 words")
        if pause_position == "anywhere":
            k = int(rng.integers(0, nw - 1))  # after word k of 0..nw-2: every boundary inside the question
        else:
            k = int(rng.integers(max(0, nw // 3 - 1), max(1, (2 * nw) // 3)))
        k = min(max(k, 0), nw - 2)
        pause = (k, float(rng.uniform(1.0, pause_max_s)))
    if pause is not None and trail_off is not None:
        t_rng, wait_s = trail_off
        f1 = tl.say_user(" ".join(q1.words[: pause[0] + 1]), voice, lead, gain)
        meta["trail_off"] = {"heard_words": pause[0] + 1, "wait_s": wait_s}
        meta["turn_end"] = [tl.words[-1].end]
        tl.respond(f1, reply_script(s1, pause[0], t_rng), wait_s=wait_s)
        return _finish(tl, rng, snr_db, meta)
    f1 = tl.say_user(q1.text, voice, lead, gain, pause)
    if pause is not None:
        w = tl.words[f1 + pause[0]]
        meta["pause"] = [w.end, tl.words[f1 + pause[0] + 1].start]
    meta["turn_end"] = [tl.words[-1].end]
    need = 2 if scenario in ("barge_in", "backchannel") else 1
    r, r_end, pieces = tl.respond(f1, s1, min_pieces=need)
    play_end = (r + len(pieces) + 0.0) * tl.unit_s  # the last piece plays during unit r+len(pieces)
    u = tl.unit_s
    if scenario == "barge_in":
        assert extra is not None
        q2, s2 = extra
        first_len = tl.tts.synthesize(q2.words[0], voice).words[0].end if q2.words else 0.3
        lo, hi = (r + 1) * u + 0.05, (r + len(pieces)) * u - first_len - 0.05
        t_b = float(rng.uniform(lo, hi)) if hi > lo else lo
        f2 = tl.say_user(q2.text, voice, t_b, gain)
        y = tl.heard_unit(tl.words[f2].end)
        tl.truncate_from(y, f2)
        meta["barge_in"] = {"start": round(t_b, 4), "yield_unit": y, "dropped": [p for k, p in enumerate(pieces) if r + k >= y]}
        meta["turn_end"].append(tl.words[-1].end)
        tl.respond(f2, s2)
    elif scenario == "backchannel":
        bc = str(rng.choice(BACKCHANNELS))
        dur = tl.tts.synthesize(bc, voice).duration_s
        lo, hi = (r + 1) * u + 0.05, play_end - dur
        t_c = float(rng.uniform(lo, hi)) if hi > lo else lo
        fb = tl.say_user(bc, voice, t_c, gain)
        meta["backchannel"] = {"start": round(t_c, 4), "end": tl.words[-1].end, "text": bc, "first_word": fb}
    elif scenario == "multi_turn":
        assert extra is not None
        q2, s2 = extra
        t_free = max(play_end, (r_end + 1) * u) + float(rng.uniform(0.4, 1.2))
        f2 = tl.say_user(q2.text, voice, t_free, gain)
        meta["turn_end"].append(tl.words[-1].end)
        tl.respond(f2, s2)
    return _finish(tl, rng, snr_db, meta)


def _finish(tl: Timeline, rng: np.random.Generator, snr_db: float | None, meta: dict[str, Any]) -> tuple[Session, np.ndarray, dict[str, Any]]:
    """Let the last spoken piece play out, add a short tail of silence and render."""
    u = tl.unit_s
    last = max((i for i, d in enumerate(tl.units) if d["state"] == "speak"), default=0)
    tl.end_t = max(tl.end_t, (last + 2) * u)  # let the last piece play out
    units, audio = tl.render(float(rng.uniform(0.3, 1.0)), rng, snr_db)
    return Session(unit_s=tl.unit_s, user_words=tl.words, units=units), audio, meta

"""Scenario structure (multi-turn, silence), noise SNR, file sources end to end, rejects in the card, crash clean-up.

All with real espeak-ng speech and real synthesis runs on a handful of sessions.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lws_core.audio.noise import rms
from lws_core.audio.tts import EspeakTTS, VoiceSpec
from lws_core.config import LWSConfig
from lws_core.data import grade_written, load_dataset_dir, row_audio, row_session, synthesize
from lws_core.data.scenarios import Timeline, build_session
from lws_core.data.sources import FileQuestions
from lws_core.data.tasks import make_followup, make_question
from lws_core.data.teachers import TemplateTeacher, _user_prompt
from lws_core.data.types import Question, Script
from lws_core.schema import validate

CFG = LWSConfig()


def _tl() -> Timeline:
    return Timeline(1.0, 24, 12, EspeakTTS(fresh=True))


def _q(seed: int = 1, family: str = "arithmetic") -> Question:
    return make_question(family, np.random.default_rng(seed), "train")


def test_multi_turn_follow_up_refers_to_the_written_answer():
    q1 = _q(5)
    q2 = make_followup(q1, np.random.default_rng(3))
    assert q2.context == ((q1.text, q1.script.written),)
    assert "that" in q2.text.lower().split() or "that." in q2.text.lower().split()
    s, _, meta = build_session("multi_turn", q1, q1.script, (q2, q2.script), _tl(), VoiceSpec(), np.random.default_rng(0), None)
    assert [w.text for w in s.user_words] == q1.words + q2.words  # two user turns, nothing else
    assert len(meta["turn_end"]) == 2
    eots = [i for i, u in enumerate(s.units) if u.eot]
    assert len(eots) == 2  # two responses
    second_words_start = s.user_words[len(q1.words)].start
    assert eots[0] * 1.0 < second_words_start  # the first answer ends before the follow-up is asked
    between = s.units[eots[0] + 1 : math.ceil(meta["turn_end"][1])]
    assert between and all(u.state == "listen" and not u.say for u in between)  # listens to the follow-up
    second = "".join(u.write for u in s.units[eots[0] + 1 :])
    assert q1.answer in second  # the follow-up's written answer works from the first written answer
    assert grade_written(q2.answer, s.written_document())
    assert int(q2.answer) in {int(q1.answer) * 2} | {int(q1.answer) + k for k in range(2, 20)}
    assert validate(s, 24, 12) == []


def test_silence_only_listens():
    s, audio, meta = build_session("silence", Question(""), None, None, _tl(), VoiceSpec(), np.random.default_rng(2), None)
    assert meta["scenario"] == "silence" and s.user_words == []
    assert len(s.units) >= 3 and all(u.state == "listen" and not u.write and not u.say and not u.eot for u in s.units)
    assert len(audio) == len(s.units) * 16000
    level = 20 * math.log10(rms(audio))
    assert -55 < level < -25  # faint room noise, no speech
    assert validate(s, 24, 12) == []


@pytest.mark.parametrize("snr_db", [5.0, 20.0])
def test_noise_at_requested_snr(snr_db):
    """Same session clean and noisy (same seeds): speech RMS over the added noise's RMS is the requested SNR."""
    q = _q(4, "compare")
    clean_s, clean, _ = build_session("single_turn", q, q.script, None, _tl(), VoiceSpec(), np.random.default_rng(0), None)
    noisy_s, noisy, _ = build_session("single_turn", q, q.script, None, _tl(), VoiceSpec(), np.random.default_rng(0), snr_db)
    assert noisy_s.units == clean_s.units and len(noisy) == len(clean)
    added = noisy.astype(np.float64) - clean
    speech = clean[np.abs(clean) > 1e-4]
    measured = 20 * math.log10(rms(speech) / rms(added))
    assert abs(measured - snr_db) < 0.5, measured


def _write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_file_source_synthesis_counts_rejects_in_card(tmp_path):
    """A jsonl source end to end: good rows written; empty, unspeakable and unanswerable rows counted by reason."""
    src = tmp_path / "q.jsonl"
    _write_jsonl(src, [
        {"question": "What is 2 plus 3?", "answer": "5"},
        {"question": "", "answer": "1"},  # empty -> bad_row
        {"question": "?!", "answer": "1"},  # nothing to say -> unspeakable
        {"question": "What is \u6771\u4eac plus 1?", "answer": "2"},  # symbols espeak cannot say -> unspeakable
        {"question": "Name the largest planet.", "answer": "Jupiter"},
        {"question": "What is the capital of France?", "answer": None},  # template teacher needs an answer
    ])
    cfg = CFG.with_overrides({
        "data.source": {"kind": "file", "path": str(src)},
        "data.scenarios": {"single_turn": 1.0},
    })
    s = synthesize(cfg, tmp_path / "ds", sessions=6, workers=1, progress=False)
    card = json.loads((tmp_path / "ds" / "card.json").read_text())
    assert card["rejects"] == {"bad_row": 1, "no_answer": 1, "unspeakable": 2} == s.rejects
    assert sum(card["rows"].values()) == 2 and card["per_family"] == {"file": 2}
    readme = (tmp_path / "ds" / "README.md").read_text()
    assert "| unspeakable | 2 |" in readme and "| bad_row | 1 |" in readme
    assert any("symbols the TTS cannot say" in e for e in card["reject_examples"])
    dd = load_dataset_dir(tmp_path / "ds")
    assert min(len(d) for d in dd.values()) == 0  # an empty split is saved so that it loads back
    rows = [r for split in dd.values() for r in split]
    assert {r["question"] for r in rows} == {"What is 2 plus 3?", "Name the largest planet."}
    for r in rows:
        sess = row_session(r)
        assert grade_written(r["answer"], sess.written_document())
        assert [w.text for w in sess.user_words] == r["question"].split()
        assert rms(row_audio(r)) > 1e-3


def test_arrow_and_saved_dataset_sources(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"q": ["What is 7 plus 1?", "Is 3 bigger than 2?"], "a": ["8", "yes"]})
    ds.save_to_disk(str(tmp_path / "saved"))
    arrow = sorted((tmp_path / "saved").glob("*.arrow"))
    assert arrow
    for path in (arrow[0], tmp_path / "saved"):
        fq = FileQuestions(path, "q", "a")
        assert len(fq) == 2 and fq.get(1).text == "Is 3 bigger than 2?" and fq.get(1).answer == "yes"
        assert fq.get(0).words == ["What", "is", "7", "plus", "1?"] and fq.get(0).task_family == "file"


class _ContextTeacher:
    """A real teacher (not a mock): template scripts, but follow-ups must cite the earlier turn it was given."""

    name = "ctx"

    def script(self, q: Question) -> Script:
        base = TemplateTeacher().script(q)
        if not q.context:
            return base
        prev_q, prev_written = q.context[-1]
        assert "**Answer:**" in prev_written
        return Script(base.notes, f"Re: {prev_q}\n{base.written}", "Going by what I wrote, " + base.spoken)


def test_follow_ups_go_through_the_configured_teacher(tmp_path):
    cfg = CFG.with_overrides({"data.scenarios": {"multi_turn": 1.0}, "data.task_families": ["arithmetic"]})
    synthesize(cfg, tmp_path / "ds", sessions=4, workers=1, progress=False, teacher=_ContextTeacher())
    dd = load_dataset_dir(tmp_path / "ds")
    rows = [r for split in dd.values() for r in split]
    assert len(rows) >= 3 and all(r["teacher"] == "ctx" for r in rows)
    for r in rows:
        sess = row_session(r)
        first_q = sess.meta["turns"][0]["question"]
        assert len(sess.meta["turns"]) == 2
        assert f"Re: {first_q}" in sess.written_document()
        assert sess.spoken_text().count("Going by what I wrote") == 1
    q2 = make_followup(_q(5), np.random.default_rng(3))
    prompt = _user_prompt(q2)
    assert prompt.index(_q(5).text) < prompt.index("Question words:")  # LLM teachers see the earlier turn


class _CrashingTeacher:
    """Raises (a bug, not a Reject) on its third question in each worker: synthesis must leave nothing behind."""

    name = "crash"
    calls = 0

    def script(self, q: Question) -> Script:
        type(self).calls += 1
        if type(self).calls >= 3:
            raise RuntimeError("teacher bug")
        return TemplateTeacher().script(q)


def test_crash_mid_run_leaves_old_output_and_no_temp(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "old.txt").write_text("previous dataset")
    with pytest.raises(RuntimeError, match="teacher bug"):
        synthesize(CFG, out, sessions=6, workers=1, progress=False, teacher=_CrashingTeacher())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no hidden temp dir left
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]  # the old output untouched, nothing half-written


class _KilledTeacher:
    """Its worker process is killed (SIGKILL, as the OOM killer does) on its third question."""

    name = "killed"
    calls = 0

    def script(self, q: Question) -> Script:
        import os
        import signal

        type(self).calls += 1
        if type(self).calls >= 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return TemplateTeacher().script(q)


def test_killed_worker_is_an_error_not_a_hang(tmp_path):
    from lws_core.data.synth import WorkerDiedError

    with pytest.raises(WorkerDiedError, match=r"sessions \d+-\d+ died \(killed by signal 9"):
        synthesize(CFG.with_overrides({"data.chunk_sessions": 3}), tmp_path / "ds", sessions=9, workers=2,
                   progress=False, teacher=_KilledTeacher())
    assert list(tmp_path.iterdir()) == []  # no output, no temp dir

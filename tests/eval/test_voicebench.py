"""VoiceBench rows, responses and judging (the judge is a local HTTP stand-in for an LLM endpoint)."""

from __future__ import annotations

import json

import pytest

from lws_core.errors import InputError
from lws_core.eval.judge import JudgeClient
from lws_core.eval.voicebench import compose_response, judge_rows, load_rows, parse_score


def test_parse_and_compose():
    assert parse_score(" 4 ") == 4.0 and parse_score("Rating: [[3]]") == 3.0 and parse_score("good") is None
    assert compose_response(" It is 42. ", "6*7=42\n**Answer:** 42\n", "both") == "It is 42.\n\n6*7=42\n**Answer:** 42"
    assert compose_response("a", "b", "written") == "b"
    with pytest.raises(InputError, match="--response"):
        compose_response("a", "b", "audio")


@pytest.fixture(scope="module")
def prompt_wav(tmp_path_factory):
    from lws_core.audio.io import write_wav
    from lws_core.audio.tts import get_tts

    d = tmp_path_factory.mktemp("vb")
    write_wav(d / "q0.wav", get_tts().synthesize("what is 6 times 7").audio, 22050)  # another rate: resampled on load
    return d


def test_load_jsonl_and_hf_dataset(prompt_wav):
    jl = prompt_wav / "rows.jsonl"
    jl.write_text(json.dumps({"prompt": "what is 6 times 7", "audio": "q0.wav", "id": 7}) + "\n")
    rows = load_rows(jl, "alpacaeval")
    assert rows[0]["id"] == 7 and rows[0]["_audio"].dtype.name == "float32" and 0.5 < len(rows[0]["_audio"]) / 16000 < 3
    from datasets import Audio, Dataset, DatasetDict

    ds = Dataset.from_dict({"audio": [str(prompt_wav / "q0.wav")], "prompt": ["what is 6 times 7"]}).cast_column("audio", Audio())
    DatasetDict({"test": ds}).save_to_disk(str(prompt_wav / "hf"))
    hf = load_rows(prompt_wav / "hf", "alpacaeval")
    assert hf[0]["prompt"] == "what is 6 times 7" and abs(len(hf[0]["_audio"]) - len(rows[0]["_audio"])) < 160
    bad = prompt_wav / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(InputError, match="bad.jsonl:1"):
        load_rows(bad, "alpacaeval")


def test_open_ended_judging_averages_three_samples(endpoint, tmp_path):
    scores = iter(["5", "[[4]]", "3", "2", "2", "2"])
    endpoint.reply = lambda body: next(scores)
    judge = JudgeClient(endpoint.url, "judge", cache_dir=tmp_path / "c")
    rows = [{"prompt": "tell me a joke", "response": "why did the chicken"}, {"prompt": "what is 2+2", "response": "4"}]
    m = judge_rows(rows, judge, "alpacaeval", samples=3)
    assert m["gpt"] == pytest.approx((5 + 4 + 3 + 2 + 2 + 2) / 6) and m["gpt_x20"] == pytest.approx(m["gpt"] * 20)
    assert rows[0]["score"] == ["5", "[[4]]", "3"] and len(endpoint.calls) == 6
    assert all(c["body"]["temperature"] == 0.5 for c in endpoint.calls)
    assert "what is 2+2" in endpoint.calls[3]["body"]["messages"][1]["content"]
    # QA subsets with a reference: yes/no correctness
    endpoint.reply = lambda body: "Yes" if "Paris" in body["messages"][1]["content"].split("### Candidate answer")[1] else "No"
    qa = [{"prompt": "capital of France?", "reference": "Paris", "response": "Paris"}, {"prompt": "capital of Spain?", "reference": "Madrid", "response": "Rome"}]
    assert judge_rows(qa, judge, "sd-qa", samples=1) == {"qa_accuracy": 0.5}

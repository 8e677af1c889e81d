"""Robustness of lws.v1 on a real server: an engine fault ends only its own session (close 1011), and a
seeded fuzz run (random, truncated, oversized and out-of-order frames, before and after hello) gets the
documented error for every frame while a concurrent clean session streams on unaffected."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np
import pytest
from websockets.sync.client import connect

from lws_core.serve.protocol import MAX_JSON_BYTES
from tests.serve.conftest import pcm16, recv_until, running_server
from tests.serve.test_protocol import closed_with, errors, hello, is_type

FAULT_PROMPT = "inject an engine fault"
FRAME_LIMIT = 16 * 1024


class FaultyEngine:
    """The real engine; a session opened with FAULT_PROMPT gets a ``step`` that raises (a stand-in for an
    engine bug: nothing a client sends can make the real engine fail, which is the point of the test)."""

    def __init__(self, engine) -> None:  # noqa: ANN001 - Engine
        self._engine = engine

    def __getattr__(self, name: str):  # noqa: ANN204 - delegate model, spec, simulate ...
        return getattr(self._engine, name)

    def session(self, system: str | None = None, **kw):  # noqa: ANN201 - StreamingSession
        sess = self._engine.session(system, **kw)
        if system == FAULT_PROMPT:

            def broken_step(_audio: np.ndarray, heard: list[int] | None = None):  # noqa: ANN202 - a unit's coroutine
                raise RuntimeError("injected engine fault")
                yield  # the real one is a coroutine that the engine drives (alone or batched)

            sess._step = broken_step
        return sess


def _metrics(base: str) -> dict:
    with urllib.request.urlopen(f"http://{base}/metrics?format=json", timeout=10) as r:
        return json.loads(r.read())


def _clean_session(base: str, speech16k: np.ndarray, out: dict, seconds: int = 2) -> None:
    """A well-behaved client streaming real speech at real time (100 ms frames)."""
    try:
        with connect(f"ws://{base}/ws") as ws:
            ws.send(hello())
            recv_until(ws, is_type("ready"))
            data = pcm16(speech16k[: 16000 * seconds])
            for i in range(0, len(data), 3200):
                ws.send(data[i : i + 3200])
                time.sleep(0.1)
            ws.send(json.dumps({"type": "end"}))
            out["msgs"] = recv_until(ws, is_type("end"), timeout=120)
            out["code"], _ = closed_with(ws)
    except Exception as e:  # noqa: BLE001 - reported by the main thread's assertions
        out["error"] = repr(e)


def test_engine_fault_closes_only_that_session_with_1011(engine, speech16k):
    with running_server(FaultyEngine(engine), max_sessions=3, measured_admission=False, warmup=False) as base:
        other: dict = {}
        t = threading.Thread(target=_clean_session, args=(base, speech16k, other))
        t.start()
        with connect(f"ws://{base}/ws") as ws:
            ws.send(hello(system=FAULT_PROMPT))
            recv_until(ws, is_type("ready"))
            ws.send(pcm16(speech16k[:16000]))  # one full unit: the engine step runs and fails
            code, msgs = closed_with(ws, timeout=60)
        assert code == 1011
        fatal = [m for m in msgs if is_type("error")(m)]
        assert [m["code"] for m in fatal] == ["engine"] and fatal[0]["fatal"] is True
        t.join(timeout=150)
        assert "error" not in other, other.get("error")
        assert other["code"] == 1000 and [m["index"] for m in other["msgs"] if is_type("unit")(m)] == [0, 1]
        assert not errors(other["msgs"])
        # the server goes on: a new session is served, and the fault is counted
        with connect(f"ws://{base}/ws") as ws:
            ws.send(hello())
            assert recv_until(ws, is_type("ready"))
        m = _metrics(base)
        assert m["errors"].get("engine", 0) >= 1 and m["active_sessions"] <= 1


def _fuzz_cases(rng: np.random.Generator, ready: bool) -> list[tuple[str | bytes, str | None]]:
    """(frame, expected error code or None for "no error"), generated from ``rng``.

    Every expectation follows from the protocol (docs/serving.md), not from what the server happens to do.
    """
    cases: list[tuple[str | bytes, str | None]] = []
    for _ in range(8):  # random printable text: never a JSON object with a string type
        n = int(rng.integers(1, 300))
        cases.append((bytes(rng.integers(0x20, 0x7F, n, dtype=np.uint8)).decode(), "bad_json"))
    valid = [hello(), json.dumps({"type": "ping", "t": 3}), json.dumps({"type": "reset"}), json.dumps({"type": "hello", "sample_rate": 22050})]
    for _ in range(8):  # truncated JSON objects: a proper prefix of an object is never valid JSON
        msg = valid[int(rng.integers(len(valid)))]
        cases.append((msg[: int(rng.integers(0, len(msg) - 1))], "bad_json"))
    for _ in range(5):  # non-object JSON values
        v = [int(rng.integers(-1e6, 1e6)), None, [1, 2], "text", True, 1.5][int(rng.integers(6))]
        cases.append((json.dumps(v), "bad_json"))
    for _ in range(5):  # objects whose type is missing or not a string
        t = [None, 1, [], {}, False][int(rng.integers(5))]
        cases.append((json.dumps({"type": t} if t is not None else {"kind": "hello"}), "bad_message"))
    for _ in range(5):  # unknown message types
        word = "".join(chr(int(c)) for c in rng.integers(ord("a"), ord("z") + 1, int(rng.integers(3, 12))))
        cases.append((json.dumps({"type": "x_" + word, "sample_rate": 16000}), "not_ready" if not ready else "unknown_type"))
    for _ in range(4):  # huge JSON: over the 8 KiB control-message limit (text frames still under the frame limit)
        n = int(rng.integers(MAX_JSON_BYTES + 1, FRAME_LIMIT))
        cases.append((json.dumps({"type": "ping", "pad": "x" * n}), "too_large"))
    for _ in range(3):  # binary frames over max_frame_bytes (under the transport limit)
        cases.append((bytes(rng.integers(0, 256, int(rng.integers(FRAME_LIMIT + 1, 3 * FRAME_LIMIT)), dtype=np.uint8)), "too_large"))
    for _ in range(3):  # deep nesting
        d = int(rng.integers(500, 3000))
        cases.append(("[" * d + "]" * d, "bad_json"))
    # binary that looks like a truncated server audio header ("LWSA" + part of the 16-byte header), odd sizes:
    # before hello it is audio too early; after, it is just (noisy) PCM16 audio, buffered, never an error
    for _ in range(4):
        frame = b"LWSA"[: int(rng.integers(1, 5))] + bytes(rng.integers(0, 256, int(rng.integers(0, 12)), dtype=np.uint8))
        cases.append((frame, "not_ready" if not ready else None))
    if ready:  # a second hello on a ready session (even with a foreign rate or a path in it)
        cases.append((hello(44100), "already_ready"))
        cases.append((json.dumps({"type": "hello", "path": "/etc/passwd"}), "already_ready"))
    else:  # bad hellos are reported and the connection keeps waiting for a good one
        cases += [(hello(int(rng.integers(1, 7999))), "bad_sample_rate"), (hello(int(rng.integers(96001, 10**7))), "bad_sample_rate")]
        cases += [(hello(16000, version="lws.v" + str(int(rng.integers(2, 99)))), "bad_version"), (json.dumps({"type": "end"}), "not_ready")]
    order = rng.permutation(len(cases))
    return [cases[i] for i in order]


def _expect(ws, frame: str | bytes, code: str | None, k: int) -> None:  # noqa: ANN001
    ws.send(frame)
    ws.send(json.dumps({"type": "ping", "t": k}))  # a marker after every frame: the session still answers
    got = recv_until(ws, lambda m: isinstance(m, dict) and m.get("type") == "pong" and m.get("t") == k, timeout=30)
    errs = [m for m in got if is_type("error")(m)]
    what = frame[:60] if isinstance(frame, str) else f"<{len(frame)} bytes>"
    if code is None:
        assert not errs, (what, errs)
    else:
        assert [e["code"] for e in errs] == [code] and errs[0]["fatal"] is False, (what, errs)


@pytest.mark.parametrize("seed", [11, 2026])
def test_seeded_fuzz_before_and_after_hello(engine, speech16k, seed):
    rng = np.random.default_rng(seed)
    with running_server(
        engine, max_frame_bytes=FRAME_LIMIT, transport_max_bytes=64 * 1024, max_sessions=3, measured_admission=False, warmup=False
    ) as base:
        other: dict = {}
        t = threading.Thread(target=_clean_session, args=(base, speech16k, other))
        t.start()
        before = _metrics(base)
        assert before["engine_rtf_ema"] is None  # nothing measured yet (no warm-up): JSON null, not NaN
        with connect(f"ws://{base}/ws", max_size=None) as ws:
            pre = _fuzz_cases(rng, ready=False)
            for k, (frame, code) in enumerate(pre):
                _expect(ws, frame, code, k)
            ws.send(hello(48000))
            assert recv_until(ws, is_type("ready"))[-1]["input_sample_rate"] == 48000
            post = _fuzz_cases(rng, ready=True)
            for k, (frame, code) in enumerate(post, start=len(pre)):
                _expect(ws, frame, code, k)
            # after all that the session still streams: 1.2 s of real speech at 48 kHz gives a unit (the streaming
            # resampler holds back a few ms, so exactly 1.0 s would wait for more audio)
            from lws_core.audio import resample

            ws.send(json.dumps({"type": "reset"}))
            recv_until(ws, is_type("reset"), timeout=60)
            unit48 = pcm16(resample(speech16k[:19200], 16000, 48000))
            for i in range(0, len(unit48), 9600):  # 100 ms frames, under max_frame_bytes
                ws.send(unit48[i : i + 9600])
            got = recv_until(ws, is_type("unit"), timeout=60)
            assert not errors(got)
            ws.send(json.dumps({"type": "end"}))
            assert recv_until(ws, is_type("end"), timeout=60)[-1]["units"] >= 1
            code, _ = closed_with(ws)
        assert code == 1000
        t.join(timeout=150)
        assert "error" not in other, other.get("error")
        assert other["code"] == 1000 and [m["index"] for m in other["msgs"] if is_type("unit")(m)] == [0, 1]
        assert not errors(other["msgs"])
        after = _metrics(base)
        expected = sum(c is not None for _, c in pre + post)
        assert sum(after["errors"].values()) - sum(before["errors"].values()) == expected
        assert after["active_sessions"] == 0

"""lws.v1 over a real uvicorn server on loopback with the real engine (random-init tiny model).

Covers streaming at a foreign sample rate in odd frame sizes, health/metrics, fuzzed
and malformed frames (error event, session goes on, a concurrent session is
unaffected), auth, origin, and every limit's close code.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
import urllib.request

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from lws_core.audio import resample
from lws_core.serve.protocol import MAX_JSON_BYTES, PROTOCOL_VERSION, unpack_audio
from tests.serve.conftest import pcm16, recv_until, running_server


def hello(sr: int = 16000, **kw) -> str:
    return json.dumps({"type": "hello", "version": PROTOCOL_VERSION, "sample_rate": sr, **kw})


def is_type(t: str):  # noqa: ANN201
    return lambda m: isinstance(m, dict) and m.get("type") == t


def closed_with(ws, timeout: float = 20.0) -> tuple[int, list]:  # noqa: ANN001
    """Read until the server closes; return (close code, messages read)."""
    got = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            raw = ws.recv(timeout=deadline - time.monotonic())
            got.append(json.loads(raw) if isinstance(raw, str) else raw)
    except ConnectionClosed as e:
        return (e.rcvd.code if e.rcvd else 1006), got
    raise AssertionError(f"server did not close; got {got[-5:]}")


def errors(msgs: list) -> list[str]:
    return [m["code"] for m in msgs if isinstance(m, dict) and m.get("type") == "error"]


def get_json(base: str, path: str) -> dict:
    with urllib.request.urlopen(f"http://{base}{path}", timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(engine):
    with running_server(engine, max_frame_bytes=16 * 1024, transport_max_bytes=64 * 1024, max_sessions=3, max_backlog_s=4, measured_admission=False) as base:
        yield base


def test_streams_units_events_and_speech_at_any_rate(server, speech16k):
    audio48 = resample(speech16k[: 16000 * 3 - 500], 16000, 48000)  # 3 units, the last one partial
    data = pcm16(audio48)
    before = get_json(server, "/metrics?format=json")
    with connect(f"ws://{server}/ws", subprotocols=[PROTOCOL_VERSION]) as ws:
        assert ws.subprotocol == PROTOCOL_VERSION
        ws.send(hello(48000))
        ready = json.loads(ws.recv(timeout=20))
        assert ready["type"] == "ready" and ready["unit_s"] == 1.0 and ready["output_sample_rate"] == 16000
        for i in range(0, len(data), 1921):  # odd-sized frames split samples across frames
            ws.send(data[i : i + 1921])
        ws.send(json.dumps({"type": "ping", "t": 42}))
        ws.send(json.dumps({"type": "end"}))
        msgs = recv_until(ws, is_type("end"), timeout=90)
        code, _ = closed_with(ws)
    assert code == 1000
    units = [m for m in msgs if is_type("unit")(m)]
    assert [u["index"] for u in units] == [0, 1, 2]
    assert all(u["state"] in ("listen", "speak") and u["timings"]["total_ms"] > 0 and u["latency_ms"] >= 0 for u in units)
    assert {"type": "pong", "t": 42} in msgs
    states = [m for m in msgs if is_type("state")(m)]
    assert states and states[0]["index"] == 0  # the first unit always announces its state
    end = msgs[-1]
    written = "".join(m["text"] for m in msgs if is_type("write")(m))
    assert end["units"] == 3 and end["written_chars"] == len(written)
    for frame in (m for m in msgs if isinstance(m, bytes)):  # speech, if the random model spoke
        idx, sr, pcm = unpack_audio(frame)
        assert sr == 16000 and len(pcm) == 2 * 16000 and idx in (0, 1, 2)
    speaking = [u for u in units if u["speech_s"] > 0]
    assert len(speaking) == sum(isinstance(m, bytes) for m in msgs)
    after = get_json(server, "/metrics?format=json")
    assert after["units_total"] - before["units_total"] == 3 and after["rtf_p50"] > 0
    assert after["active_sessions"] == 0 and after["sessions_total"] == before["sessions_total"] + 1
    with urllib.request.urlopen(f"http://{server}/metrics", timeout=10) as r:
        prom = r.read().decode()
    assert "lws_units_total" in prom and 'lws_rtf{quantile="0.95"}' in prom
    assert get_json(server, "/healthz")["status"] == "ok"


def test_fuzzed_frames_get_errors_and_sessions_go_on(server, speech16k):
    """Garbage on one session: an error event per bad frame, the session still works; a concurrent session is unaffected."""
    other: dict = {}

    def clean_session() -> None:
        with connect(f"ws://{server}/ws") as ws:
            ws.send(hello())
            recv_until(ws, is_type("ready"))
            data = pcm16(speech16k[: 16000 * 2])
            for i in range(0, len(data), 3200):  # real time: 100 ms frames
                ws.send(data[i : i + 3200])
                time.sleep(0.1)
            ws.send(json.dumps({"type": "end"}))
            other["msgs"] = recv_until(ws, is_type("end"), timeout=90)

    t = threading.Thread(target=clean_session)
    t.start()
    rng = np.random.default_rng(7)
    cases: list[tuple[object, str]] = [
        ("not json", "bad_json"),
        ('{"type": "hel', "bad_json"),  # truncated
        ("[1, 2, 3]", "bad_json"),
        ('{"no": "type"}', "bad_message"),
        ('{"type": 5}', "bad_message"),
        ('{"type": "launch_missiles"}', "unknown_type"),
        (hello(), "already_ready"),
        ('{"type": "ping", "pad": "' + "x" * MAX_JSON_BYTES + '"}', "too_large"),
        (b"\x00" * (16 * 1024 + 2), "too_large"),
        ("[" * 3000 + "]" * 3000, "bad_json"),  # deep nesting: no RecursionError escapes
        (json.dumps({"type": "hello", "path": "/etc/passwd"}), "already_ready"),
    ]
    for _ in range(6):  # random text frames: never valid JSON objects with a known type
        cases.append((bytes(rng.integers(0x20, 0x7F, int(rng.integers(1, 200)), dtype=np.uint8)).decode(), "bad_json"))
    with connect(f"ws://{server}/ws") as ws:
        ws.send(hello())
        recv_until(ws, is_type("ready"))
        for frame, code in cases:
            ws.send(frame)
            got = recv_until(ws, is_type("error"))
            assert got[-1]["code"] == code and got[-1]["fatal"] is False, (frame if isinstance(frame, str) else len(frame), got[-1])
        for n in (1, 3, 999):  # random binary of odd sizes is just (noisy) audio: buffered, never an error
            ws.send(bytes(rng.integers(0, 256, n, dtype=np.uint8)))
        speech = pcm16(speech16k[:16000])
        for i in range(0, len(speech), 8000):
            ws.send(speech[i : i + 8000])
        ws.send(json.dumps({"type": "ping", "t": 1}))
        got = recv_until(ws, is_type("unit"), timeout=60)
        assert {"type": "pong", "t": 1} in got and not errors(got)
        ws.send(json.dumps({"type": "reset"}))
        recv_until(ws, is_type("reset"), timeout=60)
    t.join(timeout=120)
    assert [m["index"] for m in other["msgs"] if is_type("unit")(m)] == [0, 1] and not errors(other["msgs"])


def test_hello_is_validated_and_the_connection_waits_for_a_good_one(server):
    with connect(f"ws://{server}/ws") as ws:
        ws.send(b"\x01\x02" * 100)
        bad = [
            hello(16000, version="lws.v0"),
            hello(7),
            hello(10**9),
            json.dumps({"type": "hello", "sample_rate": "16000"}),
            json.dumps({"type": "hello", "sample_rate": True}),
            json.dumps({"type": "hello", "system": "x" * 3000}),
            json.dumps({"type": "reset"}),
        ]
        for b in bad:
            ws.send(b)
        ws.send(hello(22050))
        msgs = recv_until(ws, is_type("ready"))
    assert errors(msgs) == ["not_ready", "bad_version", "bad_sample_rate", "bad_sample_rate", "bad_sample_rate", "bad_sample_rate", "bad_message", "not_ready"]
    assert msgs[-1]["input_sample_rate"] == 22050


def test_transport_limit_and_backlog_close_the_session(server):
    with connect(f"ws://{server}/ws", max_size=None) as ws:
        ws.send(hello())
        recv_until(ws, is_type("ready"))
        ws.send(b"\x00" * (70 * 1024))  # over transport_max_bytes: the transport closes
        code, _ = closed_with(ws)
    assert code == 1009
    with connect(f"ws://{server}/ws") as ws:
        ws.send(hello())
        recv_until(ws, is_type("ready"))
        chunk = b"\x00" * 16000  # 0.5 s per frame, sent far faster than real time
        code = None
        try:
            for _ in range(40):
                ws.send(chunk)
        except ConnectionClosed:
            pass
        code, msgs = closed_with(ws)
    assert code == 1013 and "behind" in errors(msgs)
    assert get_json(server, "/metrics?format=json")["refusals"].get("behind", 0) >= 1


def test_auth_origin_and_admission(engine):
    with running_server(
        engine, token="s3cret", max_sessions=1, max_connections=3, allowed_origins=["https://app.example"], measured_admission=False
    ) as base:
        url = f"ws://{base}/ws"
        for kw, hello_kw in [({}, {}), ({}, {"token": "wrong"}), ({"additional_headers": {"Authorization": "Bearer nope"}}, {"token": "s3cret"})]:
            with connect(url, **kw) as ws:
                with contextlib.suppress(ConnectionClosed):  # a wrong header token is refused before hello
                    ws.send(hello(**hello_kw))
                code, msgs = closed_with(ws)
            assert code == 1008 and errors(msgs) == ["unauthorized"]
        with connect(url, origin="http://evil.example") as ws:
            code, msgs = closed_with(ws)
        assert code == 1008 and errors(msgs) == ["origin"]
        # the right token three ways; our own origin and a configured one pass
        with connect(url + "?token=s3cret", origin=f"http://{base}") as ws:
            ws.send(hello())
            assert recv_until(ws, is_type("ready"))
        with connect(url, additional_headers={"Authorization": "Bearer s3cret"}, origin="https://app.example") as ws:
            ws.send(hello())
            assert recv_until(ws, is_type("ready"))
            # max_sessions=1: a second session is refused with 1013 while this one lives
            with connect(url) as ws2:
                ws2.send(hello(token="s3cret"))
                code, msgs = closed_with(ws2)
            assert code == 1013 and errors(msgs) == ["busy"]
            # max_connections=3: two more idle sockets fill it, the next is refused at once
            with connect(url) as a, connect(url) as b:
                with connect(url) as c:
                    code, msgs = closed_with(c)
                assert code == 1013 and errors(msgs) == ["busy"]
                a.close()
                b.close()
        time.sleep(0.3)
        with connect(url) as ws:  # capacity is released when sessions end
            ws.send(hello(token="s3cret"))
            assert recv_until(ws, is_type("ready"))
        m = get_json(base, "/metrics?format=json")
        assert m["refusals"] == {"unauthorized": 3, "origin": 1, "max_sessions": 1, "connections": 1}
        assert get_json(base, "/healthz")["auth"] is True


def test_session_length_and_hello_timeout(engine):
    with running_server(engine, max_session_s=1.5, hello_timeout_s=0.5, warmup=False) as base:
        with connect(f"ws://{base}/ws") as ws:
            t0 = time.monotonic()
            code, msgs = closed_with(ws)
        assert code == 1002 and errors(msgs) == ["hello_timeout"] and time.monotonic() - t0 < 5
        with connect(f"ws://{base}/ws") as ws:
            ws.send(hello())
            recv_until(ws, is_type("ready"))
            t0 = time.monotonic()
            code, msgs = closed_with(ws)
        assert code == 1008 and "session_limit" in errors(msgs) and 1.0 < time.monotonic() - t0 < 5


def test_measured_capacity_refuses_sessions_it_cannot_keep_real_time(engine):
    """Admission from the warm-up's measured RTF: a target no real machine meets admits one session, refuses the next."""
    with running_server(engine, target_utilization=1e-6, max_sessions=8) as base:
        assert get_json(base, "/healthz")["capacity_sessions"] == 0
        with connect(f"ws://{base}/ws") as first:
            first.send(hello())
            assert recv_until(first, is_type("ready"))  # the first session is always served
            with connect(f"ws://{base}/ws") as second:
                second.send(hello())
                code, msgs = closed_with(second)
        assert code == 1013 and errors(msgs) == ["busy"]
        assert get_json(base, "/metrics?format=json")["refusals"] == {"capacity": 1}


def test_a_process_admits_at_most_the_processes_mean_limit(engine):
    """`lws serve --processes N`: beside its own measured capacity, a process admits at most the mean of every
    process's own limit (what lws_core.serve.processes wires to Balancer.mean_limit; set by hand here)."""
    share = [1.5]
    with running_server(engine, max_sessions=8, configure=lambda srv: setattr(srv, "share_limit", lambda: share[0])) as base:
        assert get_json(base, "/metrics?format=json")["admission_limit_sessions"] == 1.5
        with connect(f"ws://{base}/ws") as first:
            first.send(hello())
            assert recv_until(first, is_type("ready"))
            with connect(f"ws://{base}/ws") as second:
                second.send(hello())
                code, msgs = closed_with(second)
            assert code == 1013 and errors(msgs) == ["busy"]
            share[0] = math.inf  # the same second session, once the mean leaves room: its own capacity admits it
            with connect(f"ws://{base}/ws") as again:
                again.send(hello())
                assert recv_until(again, is_type("ready"))
        assert get_json(base, "/metrics?format=json")["refusals"] == {"capacity": 1}


def test_mean_limit_counts_the_processes_that_published():
    import multiprocessing as mp
    import socket

    from lws_core.serve.balance import Balancer

    limits, rooms = mp.RawArray("d", [math.nan] * 3), mp.RawArray("d", [-1e9] * 3)
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        bs = [Balancer(i, rooms, pairs[i][0], [w for _, w in pairs], limits) for i in range(3)]
        assert bs[0].mean_limit() == math.inf  # nobody has published
        for b, own in zip(bs, (40.0, 100.0, 60.0), strict=True):
            b.own_limit = lambda own=own: own
            b.limit = lambda b=b: min(b.own_limit(), b.mean_limit())
        bs[0].publish()
        bs[1].publish()
        assert bs[2].mean_limit() == 70.0  # the third has not published yet
        assert rooms[1] == 70.0  # room by the capped limit: the optimistic process takes no more than the mean
        bs[2].publish()
        assert bs[0].mean_limit() == bs[1].mean_limit() == 200.0 / 3
        limits[1] = math.nan  # a process shutting down leaves the mean
        assert bs[0].mean_limit() == 50.0
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_continuous_batching_server_streams_concurrent_sessions(engine, speech16k):
    """`lws serve --continuous`: two real-time clients on one engine thread that batches per model call;
    every unit comes back in order to its own session, and the calls were shared."""
    results: dict[int, list] = {}

    def client(k: int) -> None:
        with connect(f"ws://{base}/ws", subprotocols=[PROTOCOL_VERSION]) as ws:
            ws.send(hello())
            recv_until(ws, is_type("ready"))
            time.sleep(0.3 * k)  # staggered: the second session's units arrive while the first's run
            data = pcm16(speech16k[: 16000 * 3])
            for i in range(0, len(data), 3200):
                ws.send(data[i : i + 3200])
                time.sleep(0.1)
            ws.send(json.dumps({"type": "end"}))
            results[k] = recv_until(ws, is_type("end"), timeout=90)

    with running_server(engine, continuous_batching=True, max_sessions=3, measured_admission=False) as base:
        m0 = get_json(base, "/metrics?format=json")  # after the warm-up's rounds
        threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        m = get_json(base, "/metrics?format=json")
    for k in range(2):
        units = [x for x in results[k] if is_type("unit")(x)]
        assert [u["index"] for u in units] == [0, 1, 2] and results[k][-1]["units"] == 3
    assert m["units_total"] >= 6 and m["engine_rounds"] > m["units_total"]  # a round is one model call
    # two sessions are fewer than BLOCK_MIN_FEEDS: whatever forwards they shared attended one session at a time
    assert m["engine_batched_forwards"] >= m0["engine_batched_forwards"]
    assert m["engine_block_attention_forwards"] == m0["engine_block_attention_forwards"]


def test_websocket_compression_is_declined_unless_asked_for(engine, speech16k):
    """PCM speech barely deflates and deflate costs CPU on both ends, so the server answers a client that
    offers permessage-deflate (websockets and browsers do by default) without it; ``compression`` turns it on.
    Either way a session streams."""
    for on in (False, True):
        with running_server(engine, compression=on, measured_admission=False) as base:
            with connect(f"ws://{base}/ws", subprotocols=[PROTOCOL_VERSION], compression="deflate") as ws:
                negotiated = [type(e).__name__ for e in ws.protocol.extensions]
                ws.send(hello(16000))
                assert json.loads(ws.recv(timeout=20))["type"] == "ready"
                ws.send(pcm16(speech16k[:16000]))
                ws.send(json.dumps({"type": "end"}))
                msgs = recv_until(ws, is_type("end"), timeout=60)
            assert [m["index"] for m in msgs if is_type("unit")(m)] == [0]
            assert negotiated == (["PerMessageDeflate"] if on else []), on

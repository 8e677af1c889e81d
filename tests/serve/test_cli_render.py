"""`lws serve` as a real process, its refusals, and the server-side markdown renderer (escaping, highlighting)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
from websockets.sync.client import connect

from lws_core.serve.render import highlight, render_markdown
from tests.serve.conftest import free_port, pcm16, recv_until


def _lws(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LWS_SERVE_TOKEN", None)
    return subprocess.Popen([sys.executable, "-m", "lws_core.cli.main", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw)


def interrupt(p: subprocess.Popen, timeout_s: float) -> None:
    """Ctrl-C the server process as a user would; kill it only if it does not stop in time."""
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def test_cli_refuses_open_port_without_token_and_missing_model(tmp_path, monkeypatch, capsys):
    """In-process through the real entry point (one-line errors, exit 2), before any model is loaded."""
    import pytest

    from lws_core.cli.main import run

    monkeypatch.delenv("LWS_SERVE_TOKEN", raising=False)
    for args, expect in [
        (["serve", "--model", str(tmp_path), "--host", "0.0.0.0"], "refusing to start without --token"),
        (["serve", "--model", str(tmp_path / "nope")], "model directory not found"),
        (["serve", "--model", str(tmp_path), "--max-sessions", "0"], "--max-sessions: Input should be greater than or equal to 1"),
        (["serve", "--model", str(tmp_path), "--target-utilization", "1.5"], "--target-utilization: Input should be less than or equal to 1"),
    ]:
        monkeypatch.setattr(sys, "argv", ["lws", *args])
        with pytest.raises(SystemExit) as e:
            run()
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error:") and expect in err and len(err.strip().splitlines()) == 1


def _wait_healthy(p, port: int, timeout_s: float) -> dict:  # noqa: ANN001
    """Poll /healthz until the server process answers; fail with its stderr if it dies first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            assert p.poll() is None, p.stderr.read()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.5)


def test_cli_serves_page_health_and_a_session(serve_model_dir, speech16k):
    port = free_port()
    p = _lws("serve", "--model", str(serve_model_dir), "--port", str(port), "--token", "tok", "--max-sessions", "2")
    try:
        health = _wait_healthy(p, port, 120)
        assert health["auth"] is True and health["max_sessions"] == 2
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            page = r.read().decode()
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert '<script src="/static/app.js"' in page
        for asset in ("app.js", "worklet.js", "style.css"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/{asset}", timeout=5) as r:
                assert r.status == 200
        for evil in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2fserver.py"):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{evil}", timeout=5)
                raise AssertionError(f"{evil} was served")
            except urllib.error.HTTPError as e:
                assert e.code == 404
        with connect(f"ws://127.0.0.1:{port}/ws?token=tok") as ws:
            ws.send(json.dumps({"type": "hello", "version": "lws.v1", "sample_rate": 16000}))
            recv_until(ws, lambda m: isinstance(m, dict) and m["type"] == "ready")
            ws.send(pcm16(speech16k[:16000]))
            ws.send(json.dumps({"type": "end"}))
            msgs = recv_until(ws, lambda m: isinstance(m, dict) and m["type"] == "end", timeout=60)
        assert sum(isinstance(m, dict) and m["type"] == "unit" for m in msgs) == 1
    finally:
        interrupt(p, 20)
    assert p.returncode in (0, -signal.SIGINT, 130)


def test_markdown_is_escaped_and_code_highlighted():
    doc = "# Title\n<script>alert(1)</script>\n[x](javascript:alert(1)) <img src=x onerror=alert(1)>\n\n```python\ndef add(a, b):  # sum\n    return a + 'b' + 2\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    html = render_markdown(doc)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="javascript' not in html and "<img" not in html
    assert '<span class="tok-kw">def</span>' in html and '<span class="tok-com"># sum</span>' in html
    assert '<span class="tok-str">&#x27;b&#x27;</span>' in html and '<span class="tok-num">2</span>' in html
    assert "<table>" in html and "<h1>Title</h1>" in html
    # an unclosed fence (mid-stream) still renders as code; unknown languages are only escaped
    assert "<pre><code" in render_markdown("```js\nconst x = 1")
    assert highlight("<b>", "brainfuck") == "&lt;b&gt;"
    assert 'tok-kw">SELECT' in highlight("SELECT 1 -- c", "sql")


def test_cli_serves_a_registered_champion(serve_model_dir, tmp_path, monkeypatch, capsys):
    """`lws serve --model models:/NAME@champion`: registered into a real MLflow SQLite store, resolved by
    alias, downloaded into the workspace cache, served; a missing alias is a one-line error, exit 2."""
    from lws_core.config import LWSConfig
    from lws_core.ops.registry import register_model

    sets = {"registry.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "pipeline.workspace": str(tmp_path / "ws"),
            "registry.model_name": "lws-serve-test"}
    from tests.ops.planted import planted

    reg = register_model(LWSConfig().with_overrides(sets), serve_model_dir, planted(0), {})  # drawn per-session scores above the floors
    assert "champion" in reg.aliases
    set_args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    import pytest

    from lws_core.cli.main import run

    monkeypatch.setattr(sys, "argv", ["lws", "serve", "--model", "models:/lws-serve-test@nosuch", *set_args])
    capsys.readouterr()  # MLflow's own INFO lines from creating the store above
    with pytest.raises(SystemExit) as e:  # in-process through the real entry point: no second server start-up
        run()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error:") and "alias 'nosuch'" in err and len(err.strip().splitlines()) == 1
    uri = "models:/lws-serve-test@champion"
    port = free_port()
    p = _lws("serve", "--model", uri, *set_args, "--port", str(port))
    try:
        health = _wait_healthy(p, port, 180)
        assert health["model"] == uri and health["status"] == "ok"
        assert (tmp_path / "ws" / "cache" / "models" / "lws-serve-test" / reg.version).is_dir()  # loaded from the registry copy
        with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            ws.send(json.dumps({"type": "hello", "version": "lws.v1", "sample_rate": 16000}))
            ready = recv_until(ws, lambda m: isinstance(m, dict) and m["type"] == "ready")[-1]
            assert ready["model"] == uri
            ws.send(pcm16(np.zeros(16000, dtype=np.float32)))
            ws.send(json.dumps({"type": "end"}))
            msgs = recv_until(ws, lambda m: isinstance(m, dict) and m["type"] == "end", timeout=60)
        assert sum(isinstance(m, dict) and m["type"] == "unit" for m in msgs) == 1
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()

"""A real headless Chromium (Debian's) opens the page with a WAV file as its microphone.

The model is the hand-set turn-taking model (tests/serve/turn_model.py): it
listens while the WAV speaks, speaks in the pauses, writes a word every unit and
yields when the user talks over it, so the page must show written text, play
speech and stop playback on barge-in.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.serve.conftest import running_server
from tests.serve.turn_model import WRITE_WORD, build_turn_model

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


def _require_chromium() -> None:
    """CI must run the browser test: there a missing chromium fails it; elsewhere it skips with the fix named."""
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI=true but Debian's chromium is not installed: the browser test cannot be skipped in CI (make test-deps)")
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium, or make test-deps)")


@pytest.fixture(autouse=True)
def _chromium_present() -> None:
    _require_chromium()


@pytest.fixture(scope="module")
def turn_engine(tmp_path_factory, speech16k):
    from lws_core.engine import Engine

    return Engine.from_dir(build_turn_model(tmp_path_factory.mktemp("turn") / "m", speech16k))


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory, speech16k) -> Path:
    """User speaks, pauses (the model answers), then talks over the model's answer, pauses again."""
    from lws_core.audio import get_tts, write_wav

    interrupt = np.asarray(get_tts().synthesize("Wait, stop, I have another question about this.").audio, dtype=np.float32)
    gap = np.zeros(16000 * 3, dtype=np.float32)
    return write_wav(tmp_path_factory.mktemp("mic") / "mic.wav", np.concatenate([speech16k, gap, interrupt, gap]))


def wait_for(page, pred, timeout_s: float) -> dict:  # noqa: ANN001
    """Poll the page's counters from Python: the page's CSP (script-src 'self') forbids Playwright's eval-based waits."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = page.evaluate("() => window.lws")
        if pred(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"page did not reach the expected state in {timeout_s} s: {state}")
        time.sleep(0.25)


def test_page_listens_writes_speaks_and_yields(turn_engine, mic_wav, tmp_path):
    from playwright.sync_api import sync_playwright

    artifacts = Path(os.environ.get("LWS_TEST_ARTIFACTS", tmp_path))
    with running_server(turn_engine, token="s3cret") as base, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*FLAGS, f"--use-file-for-fake-audio-capture={mic_wav}"]  # Playwright gives each launch a fresh temporary profile,
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            console_errors: list[str] = []
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.goto(f"http://{base}/?token=s3cret")
            page.click("#start")
            wait_for(page, lambda s: s["status"] == "live", 20)
            # a speaking unit arrives, its audio is scheduled and played to its end through Web Audio
            wait_for(page, lambda s: s["audioFrames"] >= 1 and s["played"] >= 1, 60)
            # the user talks over the model: it yields and the page stops the scheduled speech
            lws = wait_for(page, lambda s: s["bargeIns"] >= 1, 60)
            doc = page.inner_text("#document")
            rtf_shown, last_ms, unit_s = page.evaluate("() => [document.getElementById('s-rtf').textContent, window.lws.lastComputeMs, window.lws.unitS]")
            rtf_half_unit = page.evaluate("() => window.lwsRtf(250, 0.5)")  # the page's formula at a 0.5 s unit
            cells = page.eval_on_selector_all("#timeline .cell", "els => els.map(e => e.className)")
            page.screenshot(path=str(artifacts / "serve_page.png"), full_page=True)
            page.click("#stop")
            final = wait_for(page, lambda s: s["closeCode"] is not None, 30)
        finally:
            browser.close()
    assert lws["units"] >= 3 and lws["sentBytes"] > 16000 * 2 * 2  # > 2 s of 16 kHz PCM16 from the worklet
    assert lws["states"].get("listen", 0) >= 1 and lws["states"].get("speak", 0) >= 1
    assert WRITE_WORD.strip() in doc and WRITE_WORD.strip() in lws["written"]
    assert "answer" in lws["said"] and lws["audioSamples"] >= 16000
    assert lws["stopped"] >= 1  # barge-in silenced scheduled speech at once
    assert any("speak" in c for c in cells) and any("listen" in c for c in cells) and any("barge" in c for c in cells)
    # RTF shown = the unit's compute time over its audio length (unit_s from `ready`), not compute seconds
    assert unit_s == turn_engine.model.spec.unit_s and rtf_half_unit == "0.50"
    assert last_ms > 0 and abs(float(rtf_shown) - last_ms / 1000 / unit_s) <= 0.006
    assert final["closeCode"] == 1000 and not lws["errors"]
    assert not [e for e in console_errors if "favicon" not in e]

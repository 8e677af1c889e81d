"""How sure is the model when it takes the turn? The speak-vs-listen margin on an FDB probe.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/turn_margin.py --model MODEL_DIR --probe PROBE_DIR [--out F.json]

For every pause-handling and smooth-turn-taking sample of a probe tree (``lws eval fdb-probe``)
the free-running engine is run as ``lws eval fdb`` runs it, and at each unit's state decision
the logit margin ``speak - listen`` is recorded (greedy decoding takes the turn when it is > 0).
Per sample it reports the largest margin **inside the mid-question pause** (pause samples:
decisions whose audio ends between the pause's start and end) and **after the question**
(turn-taking samples: decisions within 4 s of the last word), then the pause and turn-taking
take-over rates a start threshold t on the margin would give (``engine.speak_margin``),
approximated from the unthresholded run (a refused onset changes the later history).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--probe", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="engine.KEY=VALUE")
    a = ap.parse_args()
    import torch

    from lws_core.audio.io import load_audio
    from lws_core.cli.common import resolve_config
    from lws_core.engine import Engine
    from lws_core.engine.session import StreamingSession as Session

    torch.set_num_threads(1)
    cfg = resolve_config(None, a.overrides)
    engine = Engine.from_dir(a.model, cfg=cfg, lean=True)
    ids = engine.model.tokenizer.special
    state_set = frozenset({ids.listen, ids.speak})
    margins: list[float] = []
    orig = Session._choose

    def spy(self, logits, allowed, text_ok, greedy=False, spoken=False):  # noqa: ANN001, ANN202
        if allowed == state_set and not text_ok:
            margins.append(float(logits[ids.speak] - logits[ids.listen]))
        return orig(self, logits, allowed, text_ok, greedy, spoken)

    Session._choose = spy  # a diagnostic wrapper around the real decision, not a replacement
    u = engine.model.spec.unit_s
    rows = []
    try:
        for task in ("pause_handling", "smooth_turn_taking"):
            for d in sorted((a.probe / task).iterdir(), key=lambda p: int(p.name)):
                margins.clear()
                res = engine.simulate(load_audio(d / "input.wav", sr=16000))
                states = [x.state for x in res.session.units]
                ends = np.arange(1, len(margins) + 1) * u  # decision i has heard audio up to (i+1) * u
                if task == "pause_handling":
                    p0, p1 = json.loads((d / "pause.json").read_text())[0]["timestamp"]
                    win = (ends > p0) & (ends <= p1)
                else:
                    t_end = json.loads((d / "turn_taking.json").read_text())[0]["timestamp"][0]
                    win = (ends > t_end) & (ends <= t_end + 4.0)
                m = np.asarray(margins)
                rows.append({
                    "task": task, "id": d.name, "max_margin": float(m[win].max()) if win.any() else None,
                    "spoke_in_window": bool(any(s == "speak" for s, w in zip(states, win, strict=False) if w)),
                    "margins": [round(x, 3) for x in m.tolist()], "states": states,
                })
    finally:
        Session._choose = orig
    pause = [r["max_margin"] for r in rows if r["task"] == "pause_handling" and r["max_margin"] is not None]
    turn = [r["max_margin"] for r in rows if r["task"] == "smooth_turn_taking" and r["max_margin"] is not None]
    sweep = {
        f"{t:+.1f}": {"pause_takeover": round(float(np.mean([x > t for x in pause])), 3),
                      "turn_takeover": round(float(np.mean([x > t for x in turn])), 3)}
        for t in np.arange(-2.0, 6.01, 0.5)
    }
    summary = {"model": a.model, "probe": str(a.probe), "pause_samples": len(pause), "turn_samples": len(turn),
               "pause_max_margin_sorted": sorted(round(x, 2) for x in pause),
               "turn_max_margin_sorted": sorted(round(x, 2) for x in turn), "threshold_sweep": sweep}
    print(json.dumps(summary, indent=1))
    if a.out:
        a.out.write_text(json.dumps({"summary": summary, "samples": rows}, indent=1))


if __name__ == "__main__":
    main()

"""Train the LWS stage alone from a liberation seed's stand-ins, with config overrides, and score it.

For comparing LWS-stage settings at equal everything else: the backbone, the encoder
and the dataset come from one seed's work directory of ``benchmarks/liberation.py``
(``<work>/seed<N>/{backbone,encoder,ds}``), so only the overrides differ. Prints the
validation losses and written / spoken task accuracy per split on the free-running
engine (the liberation benchmark's ``run_mode``, the same sessions and grading).
One run is one seed: quote it as a single run.

    .venv/bin/python benchmarks/lws_stage.py --seed-dir /tmp/lib/seed0 --out /tmp/lws_j01 \\
        --set pretrain.warmup.joint_lr_scale=0.1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed-dir", required=True, type=Path, help="a liberation seed's work directory")
    ap.add_argument("--seed", type=int, default=0, help="the seed that directory was made with")
    ap.add_argument("--out", required=True, type=Path, help="where the LWS model goes (reused when already trained)")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--limit", type=int, default=60, help="graded sessions per split")
    a = ap.parse_args()

    import yaml
    from datasets import load_from_disk
    from liberation import seed_overrides  # beside this script: the same seed rule as the benchmark

    from lws_core.config import load_config
    from lws_core.engine.engine import Engine
    from lws_core.engine.types import EngineConfig
    from lws_core.eval.liberation import run_mode
    from lws_core.train import train

    d, s = a.seed_dir, a.seed
    sets = {k: yaml.safe_load(v) for k, v in (x.split("=", 1) for x in a.set)}
    cfg = load_config(Path(__file__).resolve().parents[1] / "params.yaml").with_overrides({
        **seed_overrides(s),
        "model.backbone_path": str(d / "backbone"), "model.encoder_path": str(d / "encoder"), **sets,
    })
    t = time.time()
    if not (a.out / "lws_model.json").is_file():
        train(cfg, d / "ds", a.out, progress=True, resume=False)
    train_s = round(time.time() - t)  # 0-ish when the model was already there
    summary = json.loads((a.out / "train_summary.json").read_text())
    engine = Engine.from_dir(a.out, config=EngineConfig.model_validate({**cfg.engine.model_dump(), "tts": "none"}))
    ds = load_from_disk(str(d / "ds"))
    out = {"set": a.set, "train_s": train_s, "val_losses": summary["val_losses"]}
    for split in ("test_seen", "test"):
        r = run_mode(engine, ds[split], "lws", split, None, a.limit)
        out[split] = {"written": r.written_overall, "spoken": r.spoken_overall, "graded": r.graded, "per_family": r.written,
                      "per_family_spoken": r.spoken}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

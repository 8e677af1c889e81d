"""`lws train` under torchrun with two processes (DeepSpeed ZeRO-2 over gloo on CPU).

What a multi-node TrainJob does on a cluster, with real processes and a real process
group: every rank trains, only global rank 0 validates, saves (atomically) and reports,
so ranks that share a volume cannot race on the output or delete each other's work.
(On CPU accelerate sees no accelerator and does not shard the data between ranks, so
this checks the process-group plumbing and the output, not data-parallel speed-up.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lws_core.train.deepspeed_config import free_port


def test_two_process_torchrun_saves_once(tiny_cfg, tiny_dataset, tmp_path):
    from lws_core.model import LWSModel

    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "model"
    sets = {"train.max_steps": 3, "train.batch_size": 2, "train.save_steps": 2, "train.backend": "deepspeed",
            "train.zero_stage": 2}
    cfg = tiny_cfg.with_overrides(sets)
    cfg_path = tmp_path / "params.yaml"
    cfg_path.write_text(cfg.to_yaml())
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR")}
    env["OMP_NUM_THREADS"] = "1"
    p = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "lws_core.cli.main", "train",
         "--config", str(cfg_path), "--data", str(tiny_dataset), "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("trained model ->") == 1, p.stdout  # rank 0 reports, rank 1 stays quiet
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["backend"] == "deepspeed" and summary["zero_stage"] == 2
    assert summary["val_losses"], "rank 0 validates"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["model", "params.yaml"]  # no temp or checkpoint dirs left
    LWSModel.load(out)

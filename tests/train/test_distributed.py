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
    # rank 0 is made slow to save and every rank notes when it leaves (a sitecustomize on the path): a rank
    # that did not wait for rank 0 would exit mid-save, the race that once aborted this run in CI (gloo's
    # threads torn down at interpreter exit: "terminate called without an active exception", SIGABRT)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import atexit, os, time\n"
        "if 'LOCAL_RANK' in os.environ:\n"
        "    import lws_core.train.trainer as t\n"
        "    _save, _mark = t._save_atomically, os.path.join(os.environ['LWS_TEST_MARKS'], '')\n"
        "    def _slow(*a, **k):\n"
        "        time.sleep(3)\n"
        "        _save(*a, **k)\n"
        "        open(_mark + 'saved', 'w').write(repr(time.time()))\n"
        "    t._save_atomically = _slow\n"
        "    atexit.register(lambda: open(_mark + 'left' + os.environ['RANK'], 'w').write(repr(time.time())))\n"
    )
    marks = tmp_path / "hook" / "marks"
    marks.mkdir()
    env["LWS_TEST_MARKS"] = str(marks)
    env["PYTHONPATH"] = os.pathsep.join([str(hook), *filter(None, [env.get("PYTHONPATH")])])
    p = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "lws_core.cli.main", "train",
         "--config", str(cfg_path), "--data", str(tiny_dataset), "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "terminate called" not in p.stderr, p.stderr[-3000:]
    left = float((marks / "left1").read_text())
    assert left >= float((marks / "saved").read_text()), "rank 1 left while rank 0 was still saving"
    assert p.stdout.count("trained model ->") == 1, p.stdout  # rank 0 reports, rank 1 stays quiet
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["backend"] == "deepspeed" and summary["zero_stage"] == 2
    assert summary["val_losses"], "rank 0 validates"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["hook", "model", "params.yaml"]  # no temp or checkpoint dirs left
    LWSModel.load(out)

"""Resume only the run the checkpoints belong to: another training config or dataset is refused."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from lws_core.errors import ConfigError
from lws_core.train import train
from lws_core.train.resume import RUN_FILE
from lws_core.train.trainer import checkpoint_dir_for


class _Interrupted(Exception):
    pass


class _StopAt:
    """Stops training at ``step`` (after the checkpoint of the step before), like a killed job."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        if step >= self.step:
            raise _Interrupted(step)

    def on_end(self, summary) -> None:  # noqa: ANN001
        pass


@pytest.fixture(scope="module")
def interrupted(tiny_cfg, tiny_dataset, tmp_path_factory):
    """A run stopped after its step-1 checkpoint: (config, dataset, output dir)."""
    cfg = tiny_cfg.with_overrides({
        "train.backend": "torch", "train.max_steps": 2, "train.save_steps": 1, "train.logging_steps": 1,
        "train.batch_size": 2,
    })
    out = tmp_path_factory.mktemp("resume") / "m"
    with pytest.raises(_Interrupted):
        train(cfg, tiny_dataset, out, callbacks=[_StopAt(2)], progress=False)
    ckpt = checkpoint_dir_for(out)
    assert (ckpt / "checkpoint-1").is_dir() and (ckpt / RUN_FILE).is_file()
    return cfg, tiny_dataset, out


def test_another_training_config_is_refused(interrupted):
    cfg, data, out = interrupted
    with pytest.raises(ConfigError) as e:
        train(cfg.with_overrides({"train.learning_rate": 1e-4}), data, out, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "cannot resume" in msg and "checkpoint-1" in msg
    assert "train.learning_rate 0.002 -> 0.0001" in msg and "--no-resume" in msg and "dataset" not in msg


def test_another_dataset_is_refused(interrupted, tmp_path):
    cfg, data, out = interrupted
    other = tmp_path / "ds"
    shutil.copytree(data, other)
    tok = next(p for p in sorted((other / "tokenizer").iterdir()) if p.is_file())
    tok.write_bytes(tok.read_bytes() + b" ")  # same rows, another tokenizer: a different dataset
    with pytest.raises(ConfigError, match=r"cannot resume .*dataset differs .*--no-resume"):
        train(cfg, other, out, progress=False)


def test_the_cli_refuses_with_one_line_and_exit_2(interrupted, tmp_path):
    cfg, data, out = interrupted
    params = tmp_path / "params.yaml"
    params.write_text(cfg.to_yaml())
    p = subprocess.run(
        [sys.executable, "-m", "lws_core.cli.main", "train", "--data", str(data), "--out", str(out),
         "--config", str(params), "--set", "train.warmup_steps=7", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 2, p.stderr[-2000:]
    assert "train.warmup_steps 30 -> 7" in p.stderr and "Traceback" not in p.stderr


def test_same_config_resumes_and_bookkeeping_may_change(interrupted):
    cfg, data, out = interrupted
    s = train(cfg.with_overrides({"train.logging_steps": 5}), data, out, progress=False)  # not a training setting
    assert s.resumed_from is not None and s.resumed_from.endswith("checkpoint-1") and s.steps == 2
    assert not checkpoint_dir_for(out).exists()

"""Bad checkpoints are one line and exit code 2 before any step of the main job runs (issue: the model hears).

Each case runs the real `lws pipeline run` in a fresh workspace: the preflight must
refuse before the KFP runner starts, so no workspace, MLflow store or dataset appears.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.model.test_local_backbone import dirs  # noqa: F401 - the tiny Qwen3 + Whisper checkpoints fixture

LWS = [sys.executable, "-m", "lws_core.cli.main"]


def run_main_job(ws: Path, *sets: str) -> subprocess.CompletedProcess:
    args = [*LWS, "pipeline", "run", "--quiet", "--set", f"pipeline.workspace={ws}"]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def assert_refused(p: subprocess.CompletedProcess, ws: Path, needle: str) -> None:
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], p.stderr
    assert not ws.exists(), "nothing may run before the checkpoints are checked"


def test_real_checkpoints_pass_the_preflight(dirs) -> None:  # noqa: F811
    from lws_core.config import LWSConfig
    from lws_core.model.preflight import check_model_paths

    lm_dir, wh_dir, _ = dirs
    check_model_paths(LWSConfig().with_overrides({"model.backbone_path": str(lm_dir), "model.encoder_path": str(wh_dir)}))


@pytest.mark.parametrize("case", ["missing", "not_an_lm", "no_weights"])
def test_backbone_that_does_not_load_is_refused(case, dirs, tmp_path) -> None:  # noqa: F811
    lm_dir, wh_dir, _ = dirs
    bad = tmp_path / "bad"
    if case == "not_an_lm":
        from transformers import ViTConfig

        shutil.copytree(lm_dir, bad)
        ViTConfig().save_pretrained(str(bad))  # an image model's config over LM weights: no causal LM
    elif case == "no_weights":
        shutil.copytree(lm_dir, bad)
        for f in bad.glob("*.safetensors"):
            f.unlink()
    p = run_main_job(tmp_path / "ws", f"model.backbone_path={bad}")
    needle = {"missing": "not found", "not_an_lm": "not a causal LM", "no_weights": "no weights"}[case]
    assert_refused(p, tmp_path / "ws", needle)


def test_tokenizer_whose_digits_do_not_round_trip_is_refused(dirs, tmp_path) -> None:  # noqa: F811
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lm_dir, _, _ = dirs
    bad = tmp_path / "nodigits"
    shutil.copytree(lm_dir, bad)
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()  # trained without the byte alphabet: no digits at all
    bpe.train_from_iterator(["what is twelve plus three"] * 20, trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "<eos>"]))
    PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", eos_token="<eos>").save_pretrained(str(bad))
    p = run_main_job(tmp_path / "ws", f"model.backbone_path={bad}")
    assert_refused(p, tmp_path / "ws", "digits do not round-trip")


def test_encoder_made_for_another_sample_rate_is_refused(dirs, tmp_path) -> None:  # noqa: F811
    _, wh_dir, _ = dirs
    bad = tmp_path / "whisper8k"
    shutil.copytree(wh_dir, bad)
    pre = json.loads((bad / "preprocessor_config.json").read_text())
    pre["sampling_rate"] = 8000
    (bad / "preprocessor_config.json").write_text(json.dumps(pre))
    p = run_main_job(tmp_path / "ws", f"model.encoder_path={bad}")
    assert_refused(p, tmp_path / "ws", "8000 Hz")

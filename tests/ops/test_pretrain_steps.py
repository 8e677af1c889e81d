"""The pretrain steps (lws_core.ops.steps) on a real MLflow SQLite store and the workspace's DVC repo: loss
curves, reports and system metrics logged; skipped when the config names real checkpoints; the LWS stage
starting from the stand-ins or from the real ones; the registered version's lineage tags."""

from __future__ import annotations

import json

import pytest

from lws_core.errors import InputError
from lws_core.ops.steps import (
    pretrained_config,
    run_pretrain_backbone,
    run_pretrain_encoder,
    run_register,
    run_train,
)
from tests.model.test_local_backbone import dirs  # noqa: F401 - the tiny Qwen3 + Whisper checkpoints fixture
from tests.ops.planted import planted

# tiny stand-ins: the same code paths in seconds
PRETRAIN = {
    "pretrain.backbone.sessions": 16, "pretrain.backbone.max_steps": 2, "pretrain.backbone.batch_size": 4,
    "pretrain.encoder.max_steps": 2, "pretrain.encoder.batch_size": 8, "pretrain.encoder.sessions": 6, "pretrain.encoder.eval_sessions": 2,
}


def test_pretrain_steps_log_skip_and_record_lineage(tiny_cfg, tiny_dataset, tmp_path):
    from mlflow.tracking import MlflowClient

    ws = tmp_path / "ws"
    cfg = tiny_cfg.with_overrides({**PRETRAIN, "pipeline.workspace": str(ws), "train.backend": "torch", "train.max_steps": 2})
    cj = json.dumps(cfg.to_dict())
    bb, enc = tmp_path / "backbone", tmp_path / "encoder"
    bb_run = run_pretrain_backbone(cj, str(bb))
    enc_run = run_pretrain_encoder(cj, str(tiny_dataset), str(enc))
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    client = MlflowClient(uri, uri)

    b = client.get_run(bb_run)
    assert b.info.status == "FINISHED" and b.data.tags["lws.step"] == "pretrain_backbone" and "lws.skipped" not in b.data.tags
    assert [m.step for m in client.get_metric_history(bb_run, "text_loss")] == [2]  # every 20 steps, and the last
    for k in ("wall_s", "parameters", "final_loss", "tokens_per_s", "system/peak_rss_mb", "system/cpu_s"):
        assert k in b.data.metrics, k
    assert b.data.metrics["parameters"] > 1e6
    # its own config as params: the keys it depends on, nothing else
    assert b.data.params["pretrain.backbone.max_steps"] == "2" and b.data.params["model.preset"] == "tiny"
    assert "train.max_length" in b.data.params and not any(k.startswith(("eval.", "train.lr", "model.lora")) for k in b.data.params)
    assert "pretrain_report.json" in {f.path for f in client.list_artifacts(bb_run)}
    e = client.get_run(enc_run)
    assert e.data.tags["lws.step"] == "pretrain_encoder" and client.get_metric_history(enc_run, "ctc_loss")
    assert {"wall_s", "final_loss", "wer_sessions", "train_units"} <= set(e.data.metrics)
    report = json.loads((enc / "pretrain_report.json").read_text())
    # the WER per accent and the numbers / words missed are metrics too, named as in the report
    assert all(e.data.metrics[k] == pytest.approx(v) for k, v in report["wer_breakdown"].items())
    assert (report["wer"] is None) or any(k.startswith("wer_accent.") for k in e.data.metrics)
    assert "pretrain.encoder.max_steps" in e.data.params and not any(k.startswith(("train.", "eval.")) for k in e.data.params)
    assert (enc / "lws_encoder.json").is_file() and (bb / "config.json").is_file()

    # real checkpoints configured (the stand-ins above play them): both steps skip, leaving only a marker
    real = cfg.with_overrides({"model.backbone_path": str(bb), "model.encoder_path": str(enc)})
    rj = json.dumps(real.to_dict())
    bb_skip, enc_skip = tmp_path / "bb-skip", tmp_path / "enc-skip"
    for rid, out, path in ((run_pretrain_backbone(rj, str(bb_skip)), bb_skip, bb),
                           (run_pretrain_encoder(rj, str(tiny_dataset), str(enc_skip)), enc_skip, enc)):
        r = client.get_run(rid)
        assert r.info.status == "FINISHED" and r.data.tags["lws.skipped"] == str(path)
        assert "final_loss" not in r.data.metrics and not client.get_metric_history(rid, "text_loss")
        assert [p.name for p in out.iterdir()] == ["skipped.json"]
        assert json.loads((out / "skipped.json").read_text())["path"] == str(path)
    # a configured checkpoint that is not there fails the step with one line
    with pytest.raises(InputError, match="model.backbone_path not found"):
        run_pretrain_backbone(json.dumps(cfg.with_overrides({"model.backbone_path": str(tmp_path / "nope")}).to_dict()), str(tmp_path / "x"))

    # the LWS stage starts from the steps' outputs; from what a skip marker names; a configured path always wins
    assert pretrained_config(cfg, str(bb), str(enc)).model.backbone_path == str(bb)
    assert pretrained_config(cfg, str(bb_skip), str(enc_skip)).model.encoder_path == str(enc)
    assert pretrained_config(real, "/elsewhere", "/elsewhere").model.backbone_path == str(bb)
    assert pretrained_config(cfg).model.backbone_path is None

    # train from the user's checkpoints (handed over as the skipped steps' markers) ...
    model = tmp_path / "model"
    train_run = run_train(cj, str(tiny_dataset), str(model), str(bb_skip), str(enc_skip))
    spec = json.loads((model / "lws_model.json").read_text())
    assert spec["backbone_source"] == str(bb) and spec["encoder_source"] == str(enc)
    assert client.get_run(train_run).data.tags["lws.backbone_path"] == str(bb)

    # ... and register it: the version says where it started from
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps({"schema_valid_rate": 1.0, "state_accuracy": 0.5, "task_accuracy": 0.0}))
    planted(0).write(ev)  # the per-session scores the gate reads (planted: this test is about lineage)
    made = run_register(cj, "run-made", str(model), str(ev), "0" * 32 + ".dir", [bb_run, enc_run], backbone_path=str(bb),
                        encoder_path=str(enc), backbone_run=bb_run, encoder_run=enc_run)
    tags = client.get_model_version("lws", made["version"]).tags
    bb_hash = tags["lineage.backbone_dvc_hash"]
    assert bb_hash.endswith(".dir") and tags["lws.backbone"] == f"run:{bb_run} dvc:{bb_hash}"
    assert tags["lws.encoder"] == f"run:{enc_run} dvc:{tags['lineage.encoder_dvc_hash']}"
    assert tags["lineage.backbone_run"] == bb_run and made["started_from"]["lws.backbone"] == tags["lws.backbone"]
    parent = client.get_run(made["parent_run_id"])
    assert parent.data.tags["lws.encoder"] == tags["lws.encoder"]
    assert {r.data.tags["lws.step"] for r in client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")} >= {"pretrain_backbone", "pretrain_encoder"}
    # the checkpoint is in the workspace's DVC repo under its own kind
    assert (ws / "dvc" / "backbone.dvc").is_file() and (ws / "dvc" / "encoder.dvc").is_file()

    skipped = run_register(rj, "run-skipped", str(model), str(ev), "0" * 32 + ".dir", backbone_path=str(bb_skip),
                           encoder_path=str(enc_skip))
    tags = client.get_model_version("lws", skipped["version"]).tags
    assert tags["lws.backbone"] == f"path:{bb}" and tags["lws.encoder"] == f"path:{enc}"
    assert tags["lineage.backbone_path"] == str(bb) and "lineage.backbone_dvc_hash" not in tags


def test_real_qwen3_and_whisper_checkpoints_skip_both_stages_and_train(tiny_cfg, tiny_dataset, tmp_path, dirs):  # noqa: F811
    """Real local HF checkpoints (a tiny random Qwen3 causal LM with its own tokenizer, a tiny Whisper, saved as HF
    saves them): both pretrain steps skip without work, and the LWS stage trains from them (no CTC bridge: a real
    Whisper has no LWS recogniser head, so the normalised projector is used)."""
    from lws_core.model import LWSModel

    lm_dir, wh_dir, _ = dirs
    cfg = tiny_cfg.with_overrides({
        **PRETRAIN, "pipeline.workspace": str(tmp_path / "ws"), "train.backend": "torch", "train.max_steps": 2,
        "model.backbone_path": str(lm_dir), "model.encoder_path": str(wh_dir),
    })
    cj = json.dumps(cfg.to_dict())
    run_pretrain_backbone(cj, str(tmp_path / "bb"))
    run_pretrain_encoder(cj, str(tiny_dataset), str(tmp_path / "enc"))
    for out, path in ((tmp_path / "bb", lm_dir), (tmp_path / "enc", wh_dir)):
        assert [p.name for p in out.iterdir()] == ["skipped.json"]
        assert json.loads((out / "skipped.json").read_text())["path"] == str(path)
    run_train(cj, str(tiny_dataset), str(tmp_path / "m"), str(tmp_path / "bb"), str(tmp_path / "enc"))
    m = LWSModel.load(tmp_path / "m")
    assert m.spec.backbone_source == str(lm_dir) and m.spec.encoder_source == str(wh_dir)
    assert m.spec.bridge_vocab == 0 and m.spec.projector_norm and type(m.lm).__name__ == "Qwen3ForCausalLM"

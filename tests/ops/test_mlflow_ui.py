"""The MLflow UI a user opens, in a real headless Chromium (Debian's) against a real `mlflow server`.

The runs are made the way the pipeline makes them (Tracker, the train callback, ``log_dir`` of an eval
report) but without training: the links the project prints open the experiment on its training runs
(MLflow 3.17's UI defaults to its GenAI view), the train run's page draws the per-channel loss curves,
the evaluate run's report is readable in the artifact view, and the registered model's page shows its
aliases and its description.
"""

from __future__ import annotations

import uuid

import pytest

from tests.serve.test_browser import CHROMIUM, _require_chromium

TIMEOUT_MS = 30_000


@pytest.fixture(autouse=True)
def _chromium_present() -> None:
    _require_chromium()


@pytest.fixture()
def tracked(mlflow_server, tmp_path, monkeypatch):
    """A train run with per-channel loss curves, an evaluate run with a report, a registered model."""
    from mlflow.tracking import MlflowClient

    from lws_core.config import LWSConfig
    from lws_core.ops.tracking import MLflowTrainCallback, Tracker
    from lws_core.schema import CHANNEL_NAMES

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unused")  # restored after the test
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    tag = uuid.uuid4().hex[:8]
    cfg = LWSConfig().with_overrides({
        "pipeline.workspace": str(tmp_path / "ws"),
        "registry.tracking_uri": mlflow_server,
        "registry.experiment": f"ui-{tag}",
    })
    tr = Tracker(cfg)
    eid = tr.experiment_id()
    losses = [f"loss_{name}" for name in CHANNEL_NAMES.values()]
    train = tr.client.create_run(eid, run_name="train", tags={"lws.step": "train"}).info.run_id
    cb = MLflowTrainCallback(tr, train)
    for step in range(1, 6):
        cb.on_log(step * 10, {k: 4.0 / step + i for i, k in enumerate(losses)})
    tr.finish(train)

    report = tmp_path / "eval"
    (report / "fdb" / "pause_handling" / "0").mkdir(parents=True)
    (report / "report.md").write_text(f"# LWS evaluation {tag}\n\n| metric | value |\n|---|---|\n| state_accuracy | 0.91 |\n")
    (report / "fdb" / "pause_handling" / "0" / "units.jsonl").write_text('{"unit": 0, "state": "listen"}\n')
    evaluate = tr.client.create_run(eid, run_name="evaluate", tags={"lws.step": "evaluate"}).info.run_id
    tr.log_dir(evaluate, report, "eval_report")  # what run_evaluate does with its output directory
    tr.finish(evaluate)

    name = f"lws-{tag}"
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)  # not a registry URI set globally by an earlier test
    client.create_registered_model(name, description=f"LWS full-duplex model {tag}")
    mv = client.create_model_version(name, f"runs:/{train}/model", run_id=train,
                                     description=f"Gate verdict {tag}: promote\n\n| metric | challenger |\n|---|---|\n| state_accuracy | 0.91 |")
    client.set_registered_model_alias(name, "champion", mv.version)
    return {"url": mlflow_server, "eid": eid, "train": train, "evaluate": evaluate, "losses": losses, "model": name,
            "tag": tag, "experiment": cfg.registry.experiment, "client": client}


def test_ui_opens_on_training_runs_with_curves_report_and_registry(tracked):
    from playwright.sync_api import sync_playwright

    from lws_core.ops.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, ui_url

    t = tracked
    assert t["client"].get_experiment(t["eid"]).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            # the experiment link lands on the runs table (not the GenAI overview), listing the runs
            page.goto(ui_url(t["url"], t["eid"]))
            page.get_by_text("evaluate", exact=True).first.wait_for(timeout=TIMEOUT_MS)
            assert f"/experiments/{t['eid']}/runs" in page.url and "overview" not in page.url, page.url
            assert page.get_by_text("train", exact=True).count() >= 1

            # the train run's model metrics: one chart per channel
            run_link = ui_url(t["url"], t["eid"], t["train"])
            page.goto(run_link.replace("?", "/model-metrics?"))
            for k in t["losses"]:
                page.get_by_text(k, exact=True).first.wait_for(timeout=TIMEOUT_MS)
            plots = page.locator(".js-plotly-plot")
            plots.nth(len(t["losses"]) - 1).wait_for(timeout=TIMEOUT_MS)
            curves = page.locator(".js-plotly-plot path.js-line")  # a curve drawn in each chart
            assert plots.count() >= len(t["losses"]) and curves.count() >= len(t["losses"]), (plots.count(), curves.count())

            # the evaluate run's report, rendered in the artifact view
            page.goto(ui_url(t["url"], t["eid"], t["evaluate"]).replace("?", "/artifacts/eval_report/report.md?"))
            page.get_by_text(f"LWS evaluation {t['tag']}").first.wait_for(timeout=TIMEOUT_MS)
            assert page.get_by_text("fdb", exact=True).count() >= 1  # the FDB tree sits beside it

            # the registered model: its description, and the alias on its version
            page.goto(f"{t['url']}/#/models/{t['model']}")
            page.get_by_text(f"LWS full-duplex model {t['tag']}").first.wait_for(timeout=TIMEOUT_MS)
            page.get_by_text("champion").first.wait_for(timeout=TIMEOUT_MS)
            page.goto(f"{t['url']}/#/models/{t['model']}/versions/1")
            page.get_by_text(f"Gate verdict {t['tag']}: promote").first.wait_for(timeout=TIMEOUT_MS)
            assert page.get_by_text("state_accuracy", exact=True).count() >= 1  # the table rendered, not raw markdown
        finally:
            browser.close()

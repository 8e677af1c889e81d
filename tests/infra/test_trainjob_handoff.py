"""The train step's hand-off to a Kubeflow Trainer TrainJob (pipeline.train_launcher=trainjob).

There is no Kubernetes cluster here, so a loopback HTTP server stands in for the
Kubernetes API server (a mock, and the only one): it speaks the real REST paths of
``trainer.kubeflow.org/v1alpha1`` TrainJobs to the real ``kubernetes`` Python client,
rejects bodies that the real v2.3.0 CRD schema rejects (HTTP 422, as the API server
would), and moves the job's conditions on as a controller would. A "Complete" job's
model is written onto the stand-in PVC by the stand-in for the training pods, at the
path the TrainJob's own ``LWS_OUT`` names, so the test checks that the paths line up.
Everything else is real: the config, the renderer, run_train, the MLflow SQLite store.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lws_core.config import LWSConfig, config_from_dict, step_view
from lws_core.errors import ConfigError, ServiceError
from lws_core.ops.trainjob import MOUNT, render_trainjob, train_on_cluster
from tests.infra.crd import crd_errors

BASE = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/"


@dataclass
class FakeCluster:
    """The state of the stand-in API server; ``outcome`` is what the job ends as after ``polls`` reads."""

    pvc: Path
    outcome: str = "Complete"  # Complete | Failed | never
    polls: int = 2
    create_status: int | None = None  # force an error status on create (e.g. 404: CRD not installed)
    jobs: dict[str, dict] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""

    def pods_finish(self, job: dict) -> None:
        """Stand-in for the training pods: write what `lws train` writes, at the TrainJob's LWS_OUT."""
        env = {e["name"]: e.get("value") for e in job["spec"]["trainer"]["env"]}
        assert env["LWS_DATA"].startswith(MOUNT + "/") and env["LWS_OUT"].startswith(MOUNT + "/")
        data = self.pvc / env["LWS_DATA"][len(MOUNT) + 1 :]
        assert (data / "card.json").is_file(), "the dataset was not staged on the PVC where the job reads it"
        out = self.pvc / env["LWS_OUT"][len(MOUNT) + 1 :]
        out.mkdir(parents=True, exist_ok=True)
        (out / "lws_model.json").write_text(json.dumps({"preset": "tiny"}))
        (out / "train_summary.json").write_text(json.dumps({"steps": 300, "nodes": job["spec"]["trainer"]["numNodes"]}))


def _handler(cluster: FakeCluster) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def log_message(self, *_a) -> None:  # quiet
            pass

        def _send(self, code: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _status(self, code: int, reason: str, message: str) -> None:
            self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code})

        def _parts(self) -> tuple[str, str | None] | None:
            if not self.path.startswith(BASE):
                return None
            rest = self.path[len(BASE) :].split("?")[0].split("/")
            if len(rest) < 2 or rest[1] != "trainjobs":
                return None
            return rest[0], (rest[2] if len(rest) > 2 else None)

        def do_POST(self) -> None:  # noqa: N802
            cluster.requests.append(("POST", self.path))
            parts = self._parts()
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if parts is None or cluster.create_status == 404:
                return self._status(404, "NotFound", "the server could not find the requested resource")
            ns, _ = parts
            if errs := crd_errors(body):
                return self._status(422, "Invalid", "; ".join(errs)[:500])
            name = body["metadata"]["name"]
            if name in cluster.jobs:
                return self._status(409, "AlreadyExists", f'trainjobs.trainer.kubeflow.org "{name}" already exists')
            assert body["metadata"].get("namespace") in (None, ns)
            body["status"] = {"conditions": []}
            body["_reads"] = 0
            cluster.jobs[name] = body
            out = {k: v for k, v in body.items() if k != "_reads"}
            return self._send(201, out)

        def do_GET(self) -> None:  # noqa: N802
            cluster.requests.append(("GET", self.path))
            parts = self._parts()
            if parts is None or parts[1] not in cluster.jobs:
                return self._status(404, "NotFound", "trainjob not found")
            job = cluster.jobs[parts[1]]
            job["_reads"] += 1
            if job["_reads"] == 1:
                job["status"]["conditions"] = [{"type": "Created", "status": "True", "reason": "JobSetCreated"}]
            elif job["_reads"] >= cluster.polls and cluster.outcome != "never" and not job.get("_done"):
                job["_done"] = True
                if cluster.outcome == "Complete":
                    cluster.pods_finish(job)
                    cond = {"type": "Complete", "status": "True", "reason": "JobsCompleted", "message": "jobset completed"}
                else:
                    cond = {"type": "Failed", "status": "True", "reason": "FailedJobs", "message": "jobset node-0 failed: exit code 1 (CUDA out of memory)"}
                job["status"]["conditions"] = [{"type": "Created", "status": "False"}, cond]
            return self._send(200, {k: v for k, v in job.items() if not k.startswith("_")})

        def do_DELETE(self) -> None:  # noqa: N802
            cluster.requests.append(("DELETE", self.path))
            parts = self._parts()
            if parts is None or cluster.jobs.pop(parts[1] or "", None) is None:
                return self._status(404, "NotFound", "trainjob not found")
            return self._send(200, {"kind": "Status", "status": "Success"})

    return H


@contextmanager
def fake_cluster(pvc: Path, **kw) -> Iterator[FakeCluster]:
    cluster = FakeCluster(pvc=pvc, **kw)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(cluster))
    cluster.url = f"http://127.0.0.1:{server.server_address[1]}"
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield cluster
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow store for the module: creating one (schema migrations) costs seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _cfg(url: str, tmp: Path, db: str | None = None, **pipeline) -> LWSConfig:
    sets = {
        "pipeline.train_launcher": "trainjob",
        "pipeline.train_num_nodes": 2,
        "pipeline.kube_api_url": url,
        "pipeline.trainjob_poll_s": 0.02,
        "pipeline.trainjob_timeout_s": 20.0,
        "pipeline.workspace": str(tmp / "ws"),
        "registry.tracking_uri": db or f"sqlite:///{tmp / 'mlflow.db'}",
    }
    sets.update({f"pipeline.{k}": v for k, v in pipeline.items()})
    return LWSConfig().with_overrides(sets)


def _dataset(root: Path) -> Path:
    d = root / "kfp-artifacts" / "dataset"  # a pod-local KFP input artifact, not on the PVC
    (d / "train").mkdir(parents=True)
    (d / "card.json").write_text(json.dumps({"sessions": 3}))
    (d / "train" / "shard-0.jsonl").write_text("{}\n")
    return d


def test_defaults_keep_local_training() -> None:
    pc = LWSConfig().pipeline
    assert pc.train_launcher == "local" and pc.train_num_nodes == 1 and pc.kube_api_url is None


def test_run_train_hands_off_to_a_trainjob_and_waits_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_db: str) -> None:
    from mlflow.tracking import MlflowClient

    from lws_core.ops.steps import run_train

    pvc = tmp_path / "pvc"
    pvc.mkdir()
    monkeypatch.setenv("LWS_PVC_MOUNT", str(pvc))
    with fake_cluster(pvc, polls=3) as k8s:
        # the train step's own view of the config, as the pipeline hands it (lws_core.config.step_view): the
        # hand-off's settings (nodes, the API, the namespace, the runtime) must be in it
        cfg = config_from_dict(step_view(_cfg(k8s.url, tmp_path, mlflow_db), "train"))
        model = tmp_path / "kfp-artifacts" / "model"
        rid = run_train(json.dumps(step_view(cfg, "train")), str(_dataset(tmp_path)), str(model))
    (job,) = k8s.jobs.values()
    assert [m for m, _ in k8s.requests[:2]] == ["POST", "GET"] and sum(m == "GET" for m, _ in k8s.requests) == 3
    assert k8s.requests[0][1] == BASE + "lws/trainjobs"  # pipeline.trainjob_namespace
    # the created object is the renderer's, for the staged PVC paths, nodes from the config
    env = {e["name"]: e.get("value") for e in job["spec"]["trainer"]["env"]}
    expect = render_trainjob(cfg, env["LWS_DATA"], env["LWS_OUT"], nodes=2, namespace="lws")
    assert {k: v for k, v in job.items() if not k.startswith("_") and k != "status"} == expect
    assert job["spec"]["trainer"]["numNodes"] == 2 and job["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert (model / "lws_model.json").is_file() and json.loads((model / "train_summary.json").read_text())["nodes"] == 2
    run = MlflowClient(cfg.registry.tracking_uri).get_run(rid)
    assert run.info.status == "FINISHED" and run.data.tags["lws.trainjob"] == f"lws/{job['metadata']['name']}"
    assert run.data.metrics["trainjob_nodes"] == 2.0


def test_failed_trainjob_fails_the_step_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_db: str) -> None:
    from mlflow.tracking import MlflowClient

    from lws_core.ops.steps import run_train

    pvc = tmp_path / "pvc"
    pvc.mkdir()
    monkeypatch.setenv("LWS_PVC_MOUNT", str(pvc))
    with fake_cluster(pvc, outcome="Failed") as k8s:
        cfg = _cfg(k8s.url, tmp_path, mlflow_db)
        model = tmp_path / "model"
        with pytest.raises(ServiceError) as e:
            run_train(json.dumps(cfg.to_dict()), str(_dataset(tmp_path)), str(model))
    (name,) = k8s.jobs
    msg = str(e.value)
    assert f"TrainJob lws/{name} failed: FailedJobs" in msg and "CUDA out of memory" in msg and "\n" not in msg
    assert not model.exists()
    client = MlflowClient(cfg.registry.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(cfg.registry.experiment).experiment_id], "tags.`lws.step` = 'train'")
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == 1 and not [r for r in runs if r.info.status == "RUNNING"]


def test_timeout_deletes_the_job_and_retry_adopts_an_existing_one(tmp_path: Path) -> None:
    pvc = tmp_path / "pvc"
    data = _dataset(tmp_path)
    pvc.mkdir()
    with fake_cluster(pvc, outcome="never") as k8s:
        cfg = _cfg(k8s.url, tmp_path, trainjob_timeout_s=0.3)
        with pytest.raises(ServiceError, match=r"did not finish within pipeline.trainjob_timeout_s=0.3 s \(deleted\)"):
            train_on_cluster(cfg, data, tmp_path / "m", pvc_mount=pvc, log=lambda _m: None)
        assert k8s.requests[-1][0] == "DELETE" and not k8s.jobs
    with fake_cluster(pvc) as k8s:  # a retried step: its job (same name) exists already -> 409 -> wait for it
        cfg = _cfg(k8s.url, tmp_path)
        logs: list[str] = []
        first = train_on_cluster(cfg, data, tmp_path / "m1", pvc_mount=pvc, log=logs.append)
        k8s.jobs[first.name]["_reads"] = 0
        k8s.jobs[first.name]["_done"] = False
        second = train_on_cluster(cfg, data, tmp_path / "m2", pvc_mount=pvc, log=logs.append)
    assert first.name == second.name and sum(m == "POST" for m, _ in k8s.requests) == 2 and len(k8s.jobs) == 1
    assert any("already exists" in m for m in logs) and (tmp_path / "m2" / "lws_model.json").is_file()


def test_cluster_errors_are_one_line_and_name_the_fix(tmp_path: Path) -> None:
    pvc = tmp_path / "pvc"
    data = _dataset(tmp_path)
    pvc.mkdir()
    with fake_cluster(pvc, create_status=404) as k8s:
        with pytest.raises(ServiceError, match=r"HTTP 404\): is Kubeflow Trainer v2 \(the TrainJob CRD\) installed"):
            train_on_cluster(_cfg(k8s.url, tmp_path), data, tmp_path / "m", pvc_mount=pvc, log=lambda _m: None)
    with fake_cluster(pvc) as k8s:  # the fake API server validates against the CRD: an invalid runtime name is a 422
        bad = _cfg(k8s.url, tmp_path, trainjob_runtime="x" * 300)
        with pytest.raises(ServiceError, match=r"HTTP 422\): the API server rejected the manifest"):
            train_on_cluster(bad, data, tmp_path / "m", pvc_mount=pvc, log=lambda _m: None)
    with pytest.raises(ServiceError, match="Kubernetes API unreachable"):
        train_on_cluster(_cfg("http://127.0.0.1:9", tmp_path), data, tmp_path / "m", pvc_mount=pvc, log=lambda _m: None)
    with pytest.raises(ConfigError, match="is not mounted at"):
        train_on_cluster(_cfg("http://127.0.0.1:9", tmp_path), data, tmp_path / "m", pvc_mount=tmp_path / "nope")

"""`lws pipeline check` against real endpoints on loopback: a moto S3 server that checks credentials
(IAM on, as a real bucket does), a real `mlflow server` process, and a tiny KFP health endpoint.

A wrong bucket, wrong keys, a stopped tracking server and a dead KFP host each give their named
one-line failure in seconds; the all-good configuration passes and leaves no probe behind; `submit`
refuses before it contacts the KFP API, unless told `--skip-check`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest

from lws_core.config import LWSConfig
from lws_core.ops.remote_check import PROBE_DIR, RemoteCheckError, check_remotes, require_remotes

BUCKET = "lws-check"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def iam_s3():
    """A moto S3 server in its own process with authentication on: after the first 3 requests (which
    create an IAM user allowed everything and its access key), only that key is accepted."""
    port = _free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    # generous: on a fresh clone moto's first import compiles its bytecode, and under `make test`'s two
    # workers that took over 30 s once (the server was fine; the wait was too short)
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"moto server did not start (exit code {proc.poll()})")
            time.sleep(0.1)
    anon = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
    iam = boto3.client("iam", **anon)
    iam.create_user(UserName="lws")
    iam.put_user_policy(UserName="lws", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="lws")["AccessKey"]
    keys = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=BUCKET)
    yield url, keys
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture()
def good_keys(iam_s3, monkeypatch):
    for k, v in iam_s3[1].items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    for k in ("MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI"):  # set by the check: restored after each test
        monkeypatch.setenv(k, "unused")
        monkeypatch.delenv(k)
    return iam_s3[1]


class _FakeKFP:
    """A loopback HTTP server answering KFP's health endpoint, recording every request path."""

    def __init__(self) -> None:
        paths = self.paths = []

        class H(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                paths.append(self.path)
                if self.path.startswith("/apis/v2beta1/healthz"):
                    body = b'{"multi_user": false}'
                    self.send_response(200)
                else:
                    body = b'{"error": "not here"}'
                    self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *a) -> None:  # noqa: ANN002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def kfp():
    k = _FakeKFP()
    yield k
    k.close()


def remote_cfg(tmp_path, s3_url: str, tracking: str, bucket: str = BUCKET, **extra: str) -> LWSConfig:
    """A cluster-like config: MLflow artifacts and the DVC remote in S3, a tracking server, a fresh experiment."""
    return LWSConfig().with_overrides({
        "pipeline.workspace": str(tmp_path / "ws"),
        "registry.tracking_uri": tracking,
        "registry.experiment": f"check-{uuid.uuid4().hex[:8]}",
        "registry.artifact_location": f"s3://{bucket}/mlflow",
        "registry.dvc_remote": f"s3://{bucket}/dvc",
        "registry.s3_endpoint_url": s3_url,
        **extra,
    })


def test_all_good_passes_and_leaves_no_probe(iam_s3, good_keys, mlflow_server, kfp, tmp_path):
    from mlflow.tracking import MlflowClient

    cfg = remote_cfg(tmp_path, iam_s3[0], mlflow_server, **{"pipeline.runner": "kfp", "pipeline.host": kfp.url})
    t0 = time.monotonic()
    results = require_remotes(cfg)
    assert all(c.status == "ok" for c in results), [c.line() for c in results]
    assert [c.part.split(" ")[0] for c in results] == ["S3", "S3", "DVC", "MLflow", "MLflow", "KFP"]
    assert time.monotonic() - t0 < 30
    assert kfp.paths == ["/apis/v2beta1/healthz"]
    s3 = boto3.client("s3", endpoint_url=iam_s3[0])
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) if PROBE_DIR in o["Key"]]
    assert left == [], left  # every S3 and DVC probe was deleted
    # the MLflow probe ran against the real server: the experiment exists, tagged for the training-runs
    # view, its artifacts in the bucket; the probe run is deleted
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name(cfg.registry.experiment)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.artifact_location == f"s3://{BUCKET}/mlflow"
    assert client.search_runs([exp.experiment_id]) == []
    deleted = client.search_runs([exp.experiment_id], run_view_type=2)  # ViewType.DELETED_ONLY
    assert [r.info.run_name for r in deleted] == ["lws-pipeline-check"]


def test_wrong_bucket_is_named_with_its_setting(iam_s3, good_keys, mlflow_server, tmp_path):
    cfg = remote_cfg(tmp_path, iam_s3[0], mlflow_server, bucket="no-such-bucket")
    results = check_remotes(cfg)
    lines = [c.line() for c in results]
    s3_lines = [ln for ln in lines if ln.split()[1] == "S3"]
    assert len(s3_lines) == 2 and all(ln.startswith("FAILING") for ln in s3_lines), lines
    assert "bucket 'no-such-bucket' does not exist" in s3_lines[0] and "registry.artifact_location" in s3_lines[0]
    assert "registry.dvc_remote" in s3_lines[1]
    status = {" ".join(c.part.split(" ")[:2 if c.part.startswith("MLflow") else 1]): c.status for c in results}
    assert status == {"S3": "failing", "DVC": "failing", "MLflow tracking": "ok", "MLflow artifact": "failing", "KFP": "skipped"}, lines
    with pytest.raises(RemoteCheckError, match="pipeline check failed for S3 s3://no-such-bucket/mlflow") as e:
        require_remotes(cfg)
    assert e.value.exit_code == 2


def test_wrong_keys_are_named_with_the_fix(iam_s3, good_keys, mlflow_server, tmp_path, monkeypatch):
    from mlflow.store.artifact import s3_artifact_repo

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    # what a fresh `lws` process starts with: no S3 client MLflow or boto3 made with earlier tests' keys
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    s3_artifact_repo._cached_get_s3_client.cache_clear()
    cfg = remote_cfg(tmp_path, iam_s3[0], mlflow_server)
    t0 = time.monotonic()
    results = check_remotes(cfg)
    assert time.monotonic() - t0 < 30
    failing = {c.part.split(" ")[0] for c in results if c.status == "failing"}
    assert failing == {"S3", "DVC", "MLflow"}, [c.line() for c in results]
    s3_line = results[0].line()
    assert s3_line.startswith("FAILING  S3 s3://lws-check/mlflow (registry.artifact_location):"), s3_line
    assert "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in s3_line and "\n" not in s3_line
    # an unknown key id is refused too, by another path (403 on head_bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDNOTAKEY")
    assert "denied" in check_remotes(cfg)[0].detail or "refused" in check_remotes(cfg)[0].detail


def test_stopped_tracking_server_fails_in_seconds(iam_s3, good_keys, tmp_path):
    """No server on the configured port (stopped): its connections are refused, and nothing retries."""
    url = f"http://127.0.0.1:{_free_port()}"
    cfg = remote_cfg(tmp_path, iam_s3[0], url)
    t0 = time.monotonic()
    results = check_remotes(cfg)
    took = time.monotonic() - t0
    tracking = next(c for c in results if c.part.startswith("MLflow tracking"))
    store = next(c for c in results if c.part.startswith("MLflow artifact"))
    assert tracking.status == "failing" and f"server {url} unreachable" in tracking.detail, tracking.line()
    assert "fix: start it or correct registry.tracking_uri" in tracking.detail
    assert store.status == "failing" and "tracking server failed above" in store.detail
    assert [c.status for c in results if c.part.startswith(("S3", "DVC"))] == ["ok", "ok", "ok"]
    assert took < 15, f"a stopped server took {took:.1f} s to fail"


def test_local_runner_skips_kfp_and_dead_host_fails(tmp_path):
    from lws_core.ops.remote_check import check_kfp

    cfg = LWSConfig().with_overrides({"pipeline.workspace": str(tmp_path / "ws")})
    c = check_kfp(cfg, None)
    assert c.status == "skipped" and "pipeline.runner is local" in c.detail
    dead = f"http://127.0.0.1:{_free_port()}"
    c = check_kfp(cfg, dead)
    assert c.status == "failing" and c.line().startswith(f"FAILING  KFP host {dead}: unreachable") and "pipeline.host" in c.detail
    c = check_kfp(cfg.with_overrides({"pipeline.runner": "kfp"}), None)
    assert c.status == "failing" and "set pipeline.host or pass --host" in c.detail


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:  # noqa: ANN001
    from lws_core.cli.main import run

    try:
        run(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_check_and_submit_refuse_before_contacting_kfp(iam_s3, good_keys, mlflow_server, kfp, tmp_path, capsys):
    cfg = remote_cfg(tmp_path, iam_s3[0], mlflow_server, bucket="no-such-bucket")
    params = tmp_path / "params.yaml"
    params.write_text(cfg.to_yaml())
    code, out, err = _cli(["pipeline", "check", "--config", str(params), "--host", kfp.url], capsys)
    assert code == 2
    lines = out.strip().splitlines()
    assert len(lines) == 6 and lines[0].startswith("FAILING  S3 s3://no-such-bucket/mlflow") and lines[-1].startswith("ok       KFP host"), out
    assert err.strip().count("\n") == 0 and err.startswith("error: pipeline check failed for S3 s3://no-such-bucket/mlflow")

    kfp.paths.clear()
    code, out, err = _cli(["pipeline", "submit", "--config", str(params), "--host", kfp.url], capsys)
    assert code == 2 and "--skip-check submits anyway" in err
    assert kfp.paths == ["/apis/v2beta1/healthz"]  # the check probed it; nothing was uploaded or run

    kfp.paths.clear()
    code, out, err = _cli(["pipeline", "submit", "--config", str(params), "--host", kfp.url, "--skip-check"], capsys)
    assert code == 2  # the fake API cannot take a pipeline, but submit went straight to it
    assert any("/experiments" in p for p in kfp.paths), kfp.paths  # past the client's own health probe
    assert "pipeline check" not in err

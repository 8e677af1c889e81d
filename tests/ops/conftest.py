"""Real services on loopback: an `mlflow server` process (SQLite backend) and a moto S3 server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    proc, url = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield url
    stop_server(proc)


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def start_mlflow_server(root) -> tuple[subprocess.Popen, str]:  # noqa: ANN001
    """An `mlflow server` process on a free loopback port (SQLite backend, local artifacts); waits for /health.

    Its own process group, so :func:`stop_server` reaches the uvicorn child too. Job execution off:
    MLflow 3 otherwise starts seven huey consumers per server (GenAI jobs, which LWS never submits):
    seven more interpreter start-ups on 2 cores, orphaned and polling after a stop that ends in a kill."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail("mlflow server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group: the launcher alone only forwards it and took ~10 s to go
    (then a kill orphaned uvicorn); the group stops in about a second. SIGKILL if it does not."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the whole group is gone (stopped before)
            proc.wait(timeout=10)
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:  # uvicorn can ignore SIGTERM while busy
            continue

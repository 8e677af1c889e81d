"""`lws pipeline check`: every remote a pipeline run needs, reachable and writable, before anything runs.

A scheduled run on a cluster should not spend an hour of GPU time before it finds a wrong bucket
name or an expired token. Each part is probed the way the pipeline will use it, with the configured
endpoints and the credentials in this environment, and with short timeouts and no retries, so a
dead endpoint fails in seconds:

- each S3 location in the config (MLflow's artifact root, the DVC remote): ``head_bucket``, then a
  small object written and deleted under its prefix;
- the DVC remote, through DVC's own filesystem (what ``dvc push`` uses): a probe written, read, deleted;
- the MLflow tracking server: the experiment fetched (created on first use) and a throwaway run
  created (then deleted);
- MLflow's artifact store: a small artifact logged to that run and listed back;
- the KFP API: its health endpoint (only when a host is configured; the local runner has none).

Each part gives one line: ``ok``, ``skipped`` (with why), or ``FAILING`` with what went wrong and the fix.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lws_core.environ import temporary_env  # MLflow reads its HTTP settings per request
from lws_core.errors import LWSError

# a probe waits this long for a connection, and this long for an answer; nothing is retried
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 10
PROBE_DIR = ".lws-check"
REMOTE_HINT = "checked from this machine: if it is reachable only inside the cluster, run the check there or pass --skip-check"


@dataclass(frozen=True)
class PartCheck:
    """One remote part's verdict; ``detail`` says what was verified, why it was skipped, or what failed and the fix."""

    part: str
    status: Literal["ok", "skipped", "failing"]
    detail: str

    def line(self) -> str:
        return f"{self.status.upper() if self.status == 'failing' else self.status:<8} {self.part}: {self.detail}"


class RemoteCheckError(LWSError):
    """A remote part the pipeline needs is unreachable or not writable (exit code 2)."""


def _one_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:limit]


# ---------------------------------------------------------------- S3


def _split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ("bucket", "some/prefix")."""
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def s3_locations(cfg) -> list[tuple[str, str]]:  # noqa: ANN001
    """The config's S3 URLs as (setting, url), in the order the pipeline first writes to them."""
    out = []
    for key in ("artifact_location", "dvc_remote"):
        url = getattr(cfg.registry, key) or ""
        if url.startswith("s3://"):
            out.append((f"registry.{key}", url))
    return out


def _s3_client(cfg):  # noqa: ANN001, ANN202
    import boto3
    from botocore.config import Config

    conf = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S, retries={"max_attempts": 1, "mode": "standard"})
    endpoint = cfg.registry.s3_endpoint_url or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None
    # a fresh session: boto3's default one keeps the credentials it first resolved, and a check must
    # use this environment's
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=conf)


def _s3_failure(e: BaseException, bucket: str, setting: str, endpoint: str) -> str:
    """What an S3 error means for the user, and the fix, in one line."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    creds = "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (on a cluster: the lws-s3 secret)"
    if isinstance(e, NoCredentialsError):
        return f"no S3 credentials in this environment; fix: {creds}"
    if isinstance(e, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        return f"endpoint {endpoint} unreachable ({_one_line(e, 120)}); fix: start it or correct registry.s3_endpoint_url ({REMOTE_HINT})"
    if isinstance(e, ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchBucket"):
            return f"bucket {bucket!r} does not exist at {endpoint}; fix: create it or correct {setting}"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"):
            return f"the S3 credentials were refused ({code}); fix: {creds} with valid keys"
        if code in ("403", "AccessDenied", "AllAccessDisabled") or status == 403:
            return f"access to bucket {bucket!r} denied ({code}): wrong or expired keys, or no permission to write; fix: {creds} with keys allowed to read and write it"
        return f"S3 refused ({code or status}: {_one_line(e, 120)}); fix: check {setting} and the S3 credentials"
    return f"{_one_line(e)}; fix: check {setting}, registry.s3_endpoint_url and the S3 credentials"


def check_s3(cfg, setting: str, url: str) -> PartCheck:  # noqa: ANN001
    """``head_bucket`` on the location's bucket, then a probe object written and deleted under its prefix."""
    bucket, prefix = _split_s3(url)
    endpoint = cfg.registry.s3_endpoint_url or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or "AWS S3"
    part = f"S3 {url} ({setting})"
    if not bucket:
        return PartCheck(part, "failing", f"no bucket in {url!r}; fix: set {setting} to s3://BUCKET/PREFIX")
    key = "/".join(p for p in (prefix, PROBE_DIR, uuid.uuid4().hex) if p)
    try:
        s3 = _s3_client(cfg)
        s3.head_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key=key, Body=b"lws pipeline check\n")
        s3.delete_object(Bucket=bucket, Key=key)
    except Exception as e:  # noqa: BLE001 - botocore raises many types; each becomes one line
        return PartCheck(part, "failing", _s3_failure(e, bucket, setting, endpoint))
    return PartCheck(part, "ok", f"bucket reachable at {endpoint}, probe written and deleted under {prefix or '/'}")


# ---------------------------------------------------------------- DVC


def check_dvc_remote(cfg, failed_buckets: set[str]) -> PartCheck:  # noqa: ANN001
    """The DVC remote through DVC's own filesystem (s3fs for S3; the folder for a local remote)."""
    from lws_core.ops.versioning import remote_url

    url = remote_url(cfg)
    part = f"DVC remote {url}"
    if url.startswith("s3://"):
        bucket, _ = _split_s3(url)
        if bucket in failed_buckets:
            return PartCheck(part, "failing", f"its S3 bucket {bucket!r} failed above; fix that first")
        os.environ.setdefault("DVC_NO_ANALYTICS", "1")
        from dvc.fs import get_cloud_fs

        conf: dict[str, Any] = {"url": url, "connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S}
        if cfg.registry.s3_endpoint_url:
            conf["endpointurl"] = cfg.registry.s3_endpoint_url
        try:
            cls, kwargs, root = get_cloud_fs(None, **conf)
            fs = cls(**kwargs)
            # fsspec reuses a filesystem made with the same arguments, and with it the credentials it
            # read then: a check must use this environment's
            fs.fs_args["skip_instance_cache"] = True
            probe = fs.join(root, PROBE_DIR, uuid.uuid4().hex)
            fs.pipe_file(probe, b"lws pipeline check\n")
            ok = fs.cat_file(probe) == b"lws pipeline check\n"
            fs.rm_file(probe)
        except Exception as e:  # noqa: BLE001
            return PartCheck(part, "failing", f"DVC cannot write to it ({_one_line(e)}); fix: check registry.dvc_remote, registry.s3_endpoint_url and the S3 credentials")
        if not ok:
            return PartCheck(part, "failing", "a probe written to it read back different; fix: check the remote's storage")
        return PartCheck(part, "ok", "probe written, read back and deleted through DVC's filesystem")
    if "://" in url:
        return PartCheck(part, "skipped", "only S3 and folder remotes are probed")
    folder = Path(url).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f"{PROBE_DIR}-{uuid.uuid4().hex}"
        probe.write_bytes(b"lws pipeline check\n")
        probe.unlink()
    except OSError as e:
        return PartCheck(part, "failing", f"folder not writable ({_one_line(e, 120)}); fix: correct registry.dvc_remote or its permissions")
    return PartCheck(part, "ok", "folder writable")


# ---------------------------------------------------------------- MLflow


def _mlflow_failure(e: BaseException, uri: str) -> str:
    text = _one_line(e, 400)
    low = text.lower()
    if any(s in low for s in ("connection refused", "failed to establish", "max retries exceeded", "timed out", "name or service not known", "nodename nor servname")):
        return f"server {uri} unreachable; fix: start it or correct registry.tracking_uri ({REMOTE_HINT})"
    if "401" in text or "unauthorized" in low or "403" in text or "permission_denied" in low:
        return f"server {uri} refused the credentials; fix: set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (on a cluster: the lws-mlflow secret)"
    return f"{text[:200]}; fix: check registry.tracking_uri and the server's logs"


def check_mlflow(cfg, failed_buckets: set[str]) -> list[PartCheck]:  # noqa: ANN001
    """The tracking server (experiment + a throwaway run) and its artifact store (an artifact logged to it)."""
    from mlflow.tracking import MlflowClient

    from lws_core.ops.tracking import get_or_create_experiment
    from lws_core.ops.workspace import artifact_location, configure_mlflow_env, ensure_store, tracking_uri

    configure_mlflow_env(cfg)
    uri = tracking_uri(cfg)
    server = f"MLflow tracking {uri}"
    loc = artifact_location(cfg)
    store = f"MLflow artifact store {loc or '(the server’s default)'}"
    env = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(READ_TIMEOUT_S),
        "AWS_MAX_ATTEMPTS": "1",  # MLflow's own S3 client, when the client uploads artifacts itself
    }
    with temporary_env(env):
        run_id = None
        try:
            ensure_store(uri)
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            exp_id = get_or_create_experiment(client, cfg)
            run_id = client.create_run(exp_id, run_name="lws-pipeline-check", tags={"lws.check": "true"}).info.run_id
        except Exception as e:  # noqa: BLE001
            return [PartCheck(server, "failing", _mlflow_failure(e, uri)),
                    PartCheck(store, "failing", "not checked: the tracking server failed above")]
        checks = [PartCheck(server, "ok", f"experiment {cfg.registry.experiment!r} found, a probe run created")]
        if loc and loc.startswith("s3://") and _split_s3(loc)[0] in failed_buckets:
            checks.append(PartCheck(store, "failing", "its S3 bucket failed above; fix that first"))
        else:
            try:
                _forget_mlflow_s3_clients()
                client.log_text(run_id, "lws pipeline check\n", f"{PROBE_DIR}/probe.txt")
                names = [a.path for a in client.list_artifacts(run_id, PROBE_DIR)]
                if f"{PROBE_DIR}/probe.txt" not in names:
                    raise RuntimeError(f"the probe artifact was written but not listed back (found {names})")
                checks.append(PartCheck(store, "ok", "probe artifact logged and listed back"))
            except Exception as e:  # noqa: BLE001
                checks.append(PartCheck(store, "failing", f"cannot write artifacts ({_one_line(e)}); fix: check registry.artifact_location, registry.s3_endpoint_url and the S3 credentials (of the server when it proxies artifacts)"))
        _remove_probe_run(client, run_id)
    return checks


def _forget_mlflow_s3_clients() -> None:
    """Drop MLflow's cached boto3 clients, so the probe uses the credentials in the environment now.

    MLflow caches S3 clients (``_cached_get_s3_client``, an lru_cache) without the environment's keys in
    the cache key, and builds them from boto3's default session, which resolves its keys once: a process
    that logged artifacts under other keys would probe with those and report the wrong verdict. A private name, so a newer MLflow without it simply skips this.
    """
    import boto3

    boto3.setup_default_session()  # MLflow builds its clients from boto3's default session, which keeps its first keys
    try:
        from mlflow.store.artifact import s3_artifact_repo

        s3_artifact_repo._cached_get_s3_client.cache_clear()
    except (ImportError, AttributeError):
        pass


def _remove_probe_run(client, run_id: str) -> None:  # noqa: ANN001
    """Delete the probe artifact and the probe run (best effort: a leftover probe is harmless).
    Not ``set_terminated``: over HTTP it prints a "View run" link, noise in the check's output."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with contextlib.suppress(Exception):
        get_artifact_repository(client.get_run(run_id).info.artifact_uri).delete_artifacts(PROBE_DIR)
    with contextlib.suppress(Exception):
        client.delete_run(run_id)


# ---------------------------------------------------------------- KFP


def check_kfp(cfg, host: str | None) -> PartCheck:  # noqa: ANN001
    """KFP's health endpoint, with the projected service-account token a multi-user cluster needs."""
    host = host or cfg.pipeline.host
    if not host:
        if cfg.pipeline.runner == "local":
            return PartCheck("KFP host", "skipped", "no host configured: pipeline.runner is local (the pipeline runs on this machine)")
        return PartCheck("KFP host", "failing", "pipeline.runner is kfp but no host is set; fix: set pipeline.host or pass --host")
    url = host.rstrip("/") + "/apis/v2beta1/healthz"
    req = urllib.request.Request(url)
    token_path = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH")
    if token_path and Path(token_path).is_file():
        req.add_header("Authorization", f"Bearer {Path(token_path).read_text().strip()}")
    part = f"KFP host {host}"
    try:
        with urllib.request.urlopen(req, timeout=READ_TIMEOUT_S) as r:  # noqa: S310 - a configured http(s) URL
            status = r.status
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            return PartCheck(part, "failing", f"the API refused the credentials (HTTP {e.code}); fix: a valid token (KF_PIPELINES_SA_TOKEN_PATH) or access to the namespace")
        return PartCheck(part, "failing", f"{url} answered HTTP {e.code}; fix: check that --host / pipeline.host is the KFP API (ml-pipeline service)")
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return PartCheck(part, "failing", f"unreachable ({_one_line(reason if isinstance(reason, BaseException) else e, 120)}); fix: correct --host / pipeline.host ({REMOTE_HINT})")
    if status != 200:
        return PartCheck(part, "failing", f"{url} answered HTTP {status}; fix: check the KFP API server")
    return PartCheck(part, "ok", "API healthy")


# ---------------------------------------------------------------- all


def check_remotes(cfg, host: str | None = None, on_result: Callable[[PartCheck], None] | None = None) -> list[PartCheck]:  # noqa: ANN001
    """Every part, in the order a run first needs them; ``on_result`` sees each as it is decided."""
    results: list[PartCheck] = []

    def add(c: PartCheck) -> None:
        results.append(c)
        if on_result is not None:
            on_result(c)

    failed_buckets: set[str] = set()
    locations = s3_locations(cfg)
    if not locations:
        add(PartCheck("S3", "skipped", "no s3:// location configured (registry.artifact_location and registry.dvc_remote are local)"))
    for setting, url in locations:
        c = check_s3(cfg, setting, url)
        if c.status == "failing":
            failed_buckets.add(_split_s3(url)[0])
        add(c)
    add(check_dvc_remote(cfg, failed_buckets))
    for c in check_mlflow(cfg, failed_buckets):
        add(c)
    add(check_kfp(cfg, host))
    return results


def require_remotes(
    cfg,  # noqa: ANN001
    host: str | None = None,
    on_result: Callable[[PartCheck], None] | None = None,
    escape: str = "",
) -> list[PartCheck]:
    """:func:`check_remotes`, raising a one-line :class:`RemoteCheckError` (exit 2) naming every failing
    part; ``escape`` (e.g. "--skip-check submits anyway") ends the message."""
    results = check_remotes(cfg, host, on_result)
    failing = [c.part for c in results if c.status == "failing"]
    if failing:
        tail = f"; {escape}" if escape else ""
        raise RemoteCheckError(f"pipeline check failed for {', '.join(failing)} (see the lines above){tail}")
    return results

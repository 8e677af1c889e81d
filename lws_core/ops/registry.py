"""MLflow model registry: register an LWS model with lineage, gate it, move aliases — never partially.

The gate's protocol, in the order a registration runs it:

1. the model is logged and a version created, carrying its lineage tags and a ``gate.heartbeat``
   tag; creating versions is atomic on the registry, so the version numbers queue the gates;
2. the gate waits until no lower version's gate is alive (a heartbeat younger than
   ``registry.gate_lease_s``): two pipeline runs on two pods gate one after the other, each against
   the champion the other left;
3. it reads the champion, takes its per-session scores on the challenger's ``eval_set`` (recorded
   as an artifact of the champion's run, or re-evaluated and then recorded) and decides
   (:mod:`lws_core.ops.gate`);
4. right before moving the alias it reads the champion again; if it moved meanwhile (a human
   ``lws pipeline promote``, a gate whose lease ran out), it decides again against the new one;
5. the gate's table becomes the version's description, then the challenger alias moves, then
   the champion alias.

Only "no such model or alias" reads as "no champion". Every other registry error is retried with
backoff and then fails the registration in one line, with no alias moved.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lws_core.errors import InputError, ServiceError
from lws_core.eval.sessions import SessionScores
from lws_core.ops.faults import inject_fault
from lws_core.ops.gate import GateDecision, decide
from lws_core.ops.retry import PERMANENT_MLFLOW_CODES, is_permanent, with_retries
from lws_core.ops.workspace import (
    Workspace,
    artifact_endpoint,
    configure_mlflow_env,
    ensure_store,
    tracking_uri,
)

CHAMPION = "champion"
CHALLENGER = "challenger"
HEARTBEAT = "gate.heartbeat"  # present while a version's gate runs (the cross-pod queue)
PREVIOUS = "champion.previous"  # the champion a promoted version replaced (what a rollback restores)
SCORES_DIR = "gate"  # artifact folder of a version's run: session scores per eval set

# retry policy of registry calls (tests shorten the wait)
RETRY_ATTEMPTS = 4
RETRY_WAIT_S = 0.5
QUEUE_POLL_S = 0.5

T = TypeVar("T")
_PERMANENT = PERMANENT_MLFLOW_CODES | {"UNAUTHENTICATED", "BAD_REQUEST"}


@dataclass
class Registration:
    name: str
    version: str
    aliases: list[str]
    decision: GateDecision
    model_uri: str


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "transformers", "numpy", "soundfile", "espeakng-loader", "mlflow")]


def _no_such(e: BaseException) -> bool:
    """MLflow's "no such model or alias" (a missing alias is INVALID_PARAMETER_VALUE "... alias X not found")."""
    code = getattr(e, "error_code", None)
    if code == "RESOURCE_DOES_NOT_EXIST":
        return True
    return code == "INVALID_PARAMETER_VALUE" and "alias" in str(e) and "not found" in str(e)


def _transient(e: BaseException) -> bool:
    return not (is_permanent(e, _PERMANENT) or isinstance(e, ValueError))


def registry_call(fn: Callable[[], T], what: str, endpoint: str) -> T:
    """``fn()`` with retries and exponential backoff on transient errors (tenacity); when they persist,
    a one-line ServiceError naming the endpoint. Permanent answers ("invalid", "no such") pass through."""
    from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

    try:
        for attempt in Retrying(
            stop=stop_after_attempt(RETRY_ATTEMPTS),
            wait=wait_exponential(multiplier=RETRY_WAIT_S, max=8.0),
            retry=retry_if_exception(_transient),
        ):
            with attempt:
                return fn()
    except RetryError as e:
        last = e.last_attempt.exception()
        msg = " ".join(str(last).split())[:240]
        raise ServiceError(f"{what} failed after {RETRY_ATTEMPTS} attempts: {endpoint} unreachable or refusing ({msg})") from None
    raise AssertionError("unreachable")  # pragma: no cover


def read_alias(client, name: str, alias: str, endpoint: str):  # noqa: ANN001, ANN201
    """The version ``alias`` points to, or None when the model or the alias does not exist."""

    def get():  # noqa: ANN202
        try:
            return client.get_model_version_by_alias(name, alias)
        except Exception as e:
            if _no_such(e):
                return None
            raise

    return registry_call(get, f"reading {name}@{alias}", endpoint)


def _version_of(mv) -> str | None:  # noqa: ANN001
    return None if mv is None else str(mv.version)


def scores_artifact(eval_set: str) -> str:
    return f"session_scores-{eval_set.replace(':', '-')}.json"


def record_scores(client, run_id: str | None, scores: SessionScores, endpoint: str) -> None:  # noqa: ANN001
    """Keep ``scores`` as an artifact of ``run_id`` (``gate/session_scores-<eval set>.json``)."""
    if not run_id:
        return
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / scores_artifact(scores.eval_set)
        f.write_text(json.dumps(scores.to_dict(), sort_keys=True))
        registry_call(lambda: client.log_artifact(run_id, str(f), SCORES_DIR), "recording session scores", endpoint)


def recorded_scores(client, run_id: str | None, eval_set: str, endpoint: str) -> SessionScores | None:  # noqa: ANN001
    """The scores a version's run recorded on exactly ``eval_set``, or None."""
    if not run_id:
        return None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    want = f"{SCORES_DIR}/{scores_artifact(eval_set)}"
    listed = registry_call(lambda: [a.path for a in client.list_artifacts(run_id, SCORES_DIR)], "listing recorded scores", endpoint)
    if want not in listed:
        return None
    with tempfile.TemporaryDirectory() as d:
        local = registry_call(lambda: client.download_artifacts(run_id, want, d), "reading recorded scores", endpoint)
        s = SessionScores.read(local)
    return s if s.eval_set == eval_set else None


class _Heartbeat:
    """Refreshes ``gate.heartbeat`` on a version while its gate runs, so later versions wait for it and a
    dead gate (pod killed) stops holding them once the lease runs out."""

    def __init__(self, client, name: str, version: str, every_s: float) -> None:  # noqa: ANN001
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(client, name, version, every_s), daemon=True)

    def _run(self, client, name: str, version: str, every_s: float) -> None:  # noqa: ANN001
        while not self._stop.wait(every_s):
            try:
                client.set_model_version_tag(name, version, HEARTBEAT, repr(time.time()))
            except Exception:  # noqa: BLE001, S110 - a missed beat only shortens the lease
                pass

    def __enter__(self) -> _Heartbeat:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(timeout=30)


def wait_for_turn(client, name: str, version: str, lease_s: float, endpoint: str) -> None:  # noqa: ANN001
    """Block while a lower version's gate is alive: gates run one at a time, in version order, across pods."""
    shown = False
    while True:
        now = time.time()
        versions = registry_call(lambda: client.search_model_versions(f"name='{name}'"), "reading the gate queue", endpoint)
        ahead = []
        for v in versions:
            beat = v.tags.get(HEARTBEAT)
            if beat is None or int(v.version) >= int(version):
                continue
            try:
                alive = now - float(beat) < lease_s
            except ValueError:
                alive = False
            if alive:
                ahead.append(str(v.version))
        if not ahead:
            return
        if not shown:
            print(f"gate of {name} v{version}: waiting for the gate of version(s) {', '.join(sorted(ahead, key=int))}", file=sys.stderr)
            shown = True
        time.sleep(QUEUE_POLL_S)


EvaluateChampion = Callable[[str], SessionScores]  # models:/NAME/VERSION -> its scores on the challenger's eval set


def champion_scores(client, name: str, mv, eval_set: str, evaluate_champion: EvaluateChampion | None, endpoint: str) -> SessionScores | None:  # noqa: ANN001, E501
    """The champion's scores on ``eval_set``: recorded ones, else a re-evaluation (then recorded on its run)."""
    s = recorded_scores(client, mv.run_id, eval_set, endpoint)
    if s is not None or evaluate_champion is None:
        return s
    print(f"gate: champion v{mv.version} has no scores on {eval_set}; evaluating it there", file=sys.stderr)
    s = evaluate_champion(f"models:/{name}/{mv.version}")
    if s.eval_set != eval_set:
        raise InputError(f"re-evaluating champion v{mv.version} scored eval set {s.eval_set}, not the challenger's {eval_set}")
    record_scores(client, mv.run_id, s, endpoint)
    return s


def gate_version(
    cfg,  # noqa: ANN001
    client,  # noqa: ANN001
    name: str,
    version: str,
    scores: SessionScores,
    evaluate_champion: EvaluateChampion | None = None,
    endpoint: str = "",
) -> tuple[GateDecision, list[str]]:
    """Steps 2-5 of the protocol for an existing ``version`` (created with a ``gate.heartbeat`` tag).

    Returns the decision and the aliases the version got. Raises (no alias moved) when the registry
    fails for longer than the retries or the champion keeps moving."""
    reg = cfg.registry
    with _Heartbeat(client, name, version, max(reg.gate_lease_s / 4, 0.2)):
        wait_for_turn(client, name, version, reg.gate_lease_s, endpoint)
        for _ in range(3):
            champ = read_alias(client, name, CHAMPION, endpoint)
            inject_fault("gate")
            champ_scores = champion_scores(client, name, champ, scores.eval_set, evaluate_champion, endpoint) if champ else None
            decision = decide(scores, champ_scores, reg.gate, reg.gate_confidence, reg.gate_resamples,
                              champion_version=_version_of(champ))
            if champ is not None and champ_scores is None:
                decision.promote = False
                decision.reasons.append(f"champion v{champ.version} has no scores on {scores.eval_set} and cannot be re-evaluated here")
            if _version_of(read_alias(client, name, CHAMPION, endpoint)) == _version_of(champ):  # optimistic check
                break
            print(f"gate of {name} v{version}: the champion moved during the decision; deciding again", file=sys.stderr)
        else:
            raise ServiceError(f"gate of {name} v{version}: the champion alias kept moving; no alias moved, run the gate again")
        registry_call(lambda: client.update_model_version(name, version, description=decision.table()), "writing the gate table", endpoint)
        if decision.promote and champ is not None:
            registry_call(lambda: client.set_model_version_tag(name, version, PREVIOUS, str(champ.version)), "tagging", endpoint)
        registry_call(lambda: client.set_registered_model_alias(name, CHALLENGER, version), "moving the challenger alias", endpoint)
        aliases = [CHALLENGER]
        if decision.promote:
            registry_call(lambda: client.set_registered_model_alias(name, CHAMPION, version), "moving the champion alias", endpoint)
            aliases.append(CHAMPION)
    try:  # the gate is over: later versions need not wait for this one
        client.delete_model_version_tag(name, version, HEARTBEAT)
    except Exception:  # noqa: BLE001, S110 - the lease lets it lapse
        pass
    return decision, aliases


def register_model(
    cfg,  # noqa: ANN001
    model_dir: str | Path,
    scores: SessionScores,
    lineage: dict[str, str],
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
    evaluate_champion: EvaluateChampion | None = None,
) -> Registration:
    """Log the model as a pyfunc, register a version tagged with its lineage (and ``tags``), record its
    per-session ``scores`` on its run, then gate it (:func:`gate_version`) and move aliases."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from lws_core.ops.pyfunc import ARTIFACT_KEY, LWSPyfunc

    model_dir = Path(model_dir)
    if not (model_dir / "lws_model.json").is_file():
        raise InputError(f"not an LWS model directory: {model_dir}")
    configure_mlflow_env(cfg)
    uri = tracking_uri(cfg)
    ensure_store(uri)
    name = cfg.registry.model_name
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)

    if run_id is None:  # a run of its own in the project's experiment (never MLflow's ./mlruns default)
        from lws_core.ops.tracking import Tracker

        tr = Tracker(cfg)
        run_id = tr.client.create_run(tr.experiment_id(), run_name="register", tags={"lws.step": "register"}).info.run_id

    def log() -> Any:
        with mlflow.start_run(run_id=run_id):
            return mlflow.pyfunc.log_model(
                name="model",
                python_model=LWSPyfunc(),
                artifacts={ARTIFACT_KEY: str(model_dir)},
                pip_requirements=_pip_requirements(),
            )

    info = with_retries(log, "MLflow model logging", artifact_endpoint(cfg))
    model_id = getattr(info, "model_id", None)
    if model_id:  # the evaluation's figures on the logged model's own page (MLflow 3), linked as they are logged
        from lws_core.ops.tracking import link_model_metrics

        figures = {m: scores.value(m) for m in scores.metrics}
        registry_call(lambda: link_model_metrics(client, run_id, model_id, figures), "MLflow model metrics", uri)
    record_scores(client, run_id, scores, uri)
    version_tags = {f"lineage.{k}": str(v) for k, v in lineage.items()}
    version_tags.update({k: str(v) for k, v in (tags or {}).items()})
    version_tags[HEARTBEAT] = repr(time.time())
    registry_call(lambda: _ensure_registered_model(client, name), "MLflow registry", uri)
    mv = registry_call(
        lambda: client.create_model_version(name, info.model_uri, run_id=run_id, tags=version_tags,
                                            model_id=getattr(info, "model_id", None)),
        "MLflow registration", uri,
    )
    version = str(mv.version)
    previous_challenger = _version_of(read_alias(client, name, CHALLENGER, uri))
    try:
        inject_fault("register")
        decision, aliases = gate_version(cfg, client, name, version, scores, evaluate_champion, uri)
    except BaseException:
        _roll_back(client, name, version, previous_challenger)
        raise
    return Registration(name, version, aliases, decision, f"models:/{name}/{version}")


def _actor() -> str:
    try:
        return os.environ.get("LWS_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _record_action(client, name: str, version: str, action: str, reason: str, uri: str, extra: dict[str, str] | None = None) -> None:  # noqa: ANN001, E501
    """Tags ``<action>.reason / .by / .at`` on the version and ``lws.last_action`` on the model (both in the UI)."""
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tags = {f"{action}.reason": reason, f"{action}.by": _actor(), f"{action}.at": at, **(extra or {})}
    for k, v in tags.items():
        registry_call(lambda k=k, v=v: client.set_model_version_tag(name, version, k, v), "tagging", uri)
    note = f"{action} v{version} by {tags[f'{action}.by']} at {at}: {reason}"
    registry_call(lambda: client.set_registered_model_tag(name, "lws.last_action", note), "tagging", uri)


def _client(cfg):  # noqa: ANN001, ANN202
    from mlflow.tracking import MlflowClient

    configure_mlflow_env(cfg)
    uri = tracking_uri(cfg)
    ensure_store(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def promote(cfg, version: str, reason: str) -> tuple[str | None, str]:  # noqa: ANN001
    """A human's promotion: ``version`` becomes champion, whatever the gate said; returns (previous, new)."""
    if not reason.strip():
        raise InputError("--reason is required: say why (it is recorded on the version)")
    client, uri = _client(cfg)
    name = cfg.registry.model_name

    def get():  # noqa: ANN202
        try:
            return client.get_model_version(name, str(version))
        except Exception as e:
            if _no_such(e) or getattr(e, "error_code", None) == "INVALID_PARAMETER_VALUE":
                raise InputError(f"no version {version} of model {name!r} in {uri}") from None
            raise

    mv = registry_call(get, f"reading {name} v{version}", uri)
    prev = _version_of(read_alias(client, name, CHAMPION, uri))
    if prev == str(mv.version):
        raise InputError(f"{name} v{mv.version} is already the champion")
    extra = {PREVIOUS: prev} if prev else {}
    _record_action(client, name, str(mv.version), "promotion", reason, uri, extra)
    registry_call(lambda: client.set_registered_model_alias(name, CHAMPION, str(mv.version)), "moving the champion alias", uri)
    return prev, str(mv.version)


def rollback(cfg, reason: str) -> tuple[str, str]:  # noqa: ANN001
    """The champion goes back to the version it replaced (its ``champion.previous`` tag); returns (from, to)."""
    if not reason.strip():
        raise InputError("--reason is required: say why (it is recorded on the version)")
    client, uri = _client(cfg)
    name = cfg.registry.model_name
    cur = read_alias(client, name, CHAMPION, uri)
    if cur is None:
        raise InputError(f"model {name!r} has no champion to roll back")
    prev = cur.tags.get(PREVIOUS)
    if not prev:
        raise InputError(f"{name} v{cur.version} replaced no earlier champion: nothing to roll back to "
                         f"(use `lws pipeline promote --version N --reason ...`)")
    try:
        registry_call(lambda: client.get_model_version(name, prev), f"reading {name} v{prev}", uri)
    except Exception as e:
        if _no_such(e):
            raise InputError(f"{name} v{prev}, the champion before v{cur.version}, no longer exists") from None
        raise
    _record_action(client, name, str(cur.version), "rollback", reason, uri, {"rollback.to": prev})
    registry_call(lambda: client.set_model_version_tag(name, prev, "rollback.restored_from", str(cur.version)), "tagging", uri)
    registry_call(lambda: client.set_registered_model_alias(name, CHAMPION, prev), "moving the champion alias", uri)
    return str(cur.version), prev


def _ensure_registered_model(client, name: str) -> None:  # noqa: ANN001
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(name)
        except MlflowException as e2:  # another process created it first
            if e2.error_code != "RESOURCE_ALREADY_EXISTS":
                raise


def _alias_version(client, name: str, alias: str) -> str | None:  # noqa: ANN001
    """Best effort (the rollback path): the alias's version, or None when unset or unreadable."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:  # noqa: BLE001 - alias not set, or the registry is down (rollback is best effort)
        return None


def _roll_back(client, name: str, version: str, previous_challenger: str | None) -> None:  # noqa: ANN001
    """Undo a registration that failed midway: challenger alias back where it was, the version deleted.
    The champion alias moves last of all, so it never needs undoing."""
    try:
        if previous_challenger:
            client.set_registered_model_alias(name, CHALLENGER, previous_challenger)
        elif _alias_version(client, name, CHALLENGER) == str(version):
            client.delete_registered_model_alias(name, CHALLENGER)
        client.delete_model_version(name, version)
    except Exception:  # noqa: BLE001 - best effort; the original error is what the user must see
        pass


def resolve_model_uri(uri: str | Path, cfg=None) -> Path:  # noqa: ANN001
    """A model directory as is, or ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` from the registry.

    An alias is resolved to its version first; each version is downloaded once into
    ``<workspace>/cache/models/NAME/VERSION`` (temp dir + rename, so a crash never leaves
    a half copy that looks complete) and later calls for it load offline from there. An alias
    also remembers the version it last resolved to, so with the registry unreachable (server
    down, no network) ``models:/NAME@champion`` loads the champion this machine last saw, with
    a warning on stderr; without such a copy the registry's ServiceError stands.
    """
    uri = str(uri)
    if not uri.startswith("models:/"):
        p = Path(uri)
        if not p.is_dir():
            raise InputError(f"model directory not found: {p}")
        return p
    import os
    import shutil

    import mlflow
    from mlflow.tracking import MlflowClient

    from lws_core.config import load_config

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    cfg = cfg or load_config()
    configure_mlflow_env(cfg)
    reg = tracking_uri(cfg)
    ensure_store(reg)
    ref = uri[len("models:/") :]
    cache = Workspace.from_config(cfg).cache / "models"
    alias = None
    if "@" in ref:
        name, alias = ref.split("@", 1)
        try:
            version = _alias_version_checked(MlflowClient(reg, reg), name, alias, uri, reg)
        except ServiceError as e:
            version = _cached_alias(cache / name, alias)
            if version is None:
                raise
            print(f"warning: {e}; using the cached {name}@{alias} (version {version})", file=sys.stderr)
    elif "/" in ref:
        name, version = ref.split("/", 1)
    else:
        raise InputError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    dst = cache / name / str(version)
    if not (dst / "artifacts").is_dir():
        mlflow.set_tracking_uri(reg)
        mlflow.set_registry_uri(reg)
        tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            with_retries(
                lambda: mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(tmp)),
                f"download of {uri}",
                reg,
                attempts=3,
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if dst.exists():  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(dst)
    found = sorted(p.parent for p in (dst / "artifacts").glob("*/lws_model.json"))
    if not found:
        raise InputError(f"{uri}: registered artifact is not an LWS pyfunc model")
    if alias is not None:
        _remember_alias(cache / name, alias, str(version))
    return found[0]


def _alias_file(model_cache: Path, alias: str) -> Path:
    return model_cache / "aliases" / alias


def _remember_alias(model_cache: Path, alias: str, version: str) -> None:
    """Record which version ``alias`` pointed to when last resolved, so ``models:/NAME@ALIAS`` still
    loads (that same, complete local copy) when the registry is unreachable. Temp file + rename."""
    import os

    f = _alias_file(model_cache, alias)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f".{f.name}.tmp-{os.getpid()}")
    tmp.write_text(version)
    tmp.replace(f)


def _cached_alias(model_cache: Path, alias: str) -> str | None:
    """The version ``alias`` last resolved to, if its local copy is complete; else None."""
    f = _alias_file(model_cache, alias)
    if not f.is_file():
        return None
    version = f.read_text().strip()
    return version if version and (model_cache / version / "artifacts").is_dir() else None


def _alias_version_checked(client, name: str, alias: str, uri: str, reg: str) -> str:  # noqa: ANN001
    from mlflow.exceptions import MlflowException

    def get() -> str:
        try:
            return str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise InputError(f"{uri}: no model {name!r} with alias {alias!r} in {reg}") from None
            raise

    return with_retries(get, f"lookup of {uri}", reg, attempts=3)

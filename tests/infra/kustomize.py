"""A small kustomize renderer for the subset infra/k8s uses (tests only).

Why: CI machines have no kustomize binary and none installs from PyPI; Debian's
kubectl (1.20) bundles kustomize v2, which predates ``labels`` and ``patches``.
So the tests render overlays with this faithful subset and, where a kubectl with
kustomize v5 is present, ``test_renderer_matches_kubectl`` checks that both give the
same objects (names with hash suffixes included).

Supported: ``resources`` (files and directories), ``namespace``, ``labels``
(``pairs``, without selectors/templates), ``images`` (newName/newTag/digest),
``patches`` (strategic merge from a file path, targets by kind + name),
``configMapGenerator`` / ``secretGenerator`` (literals, files, envs, behavior
create/merge/replace, ``options.disableNameSuffixHash``) with kustomize's content
hash suffix and the rewriting of references to generated names; the load
restrictor (files outside the kustomization root need ``load_restrictor_none``).
Anything else in a kustomization raises, so the subset cannot silently drift.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

KNOWN_KEYS = {
    "apiVersion", "kind", "resources", "namespace", "labels", "images", "patches",
    "configMapGenerator", "secretGenerator",
}
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
    "CustomResourceDefinition", "PriorityClass", "ClusterTrainingRuntime",
}
# Strategic-merge keys of the lists our patches touch (k8s patchMergeKey); other lists are replaced.
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
    "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name",
}


class KustomizeError(Exception):
    pass


class _Gen:
    """Marks a generated ConfigMap/Secret: base name and whether it gets a hash suffix."""

    def __init__(self, hashed: bool) -> None:
        self.hashed = hashed


def _load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _check_inside(root: Path, target: Path, allow: bool) -> None:
    if allow:
        return
    real = target.resolve()
    if real != root.resolve() and root.resolve() not in real.parents:
        raise KustomizeError(f"security; file '{real}' is not in or below '{root.resolve()}'")


def _parse_env_file(path: Path) -> list[tuple[str, str]]:
    out = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise KustomizeError(f"{path}: line {raw!r} has no '=' (values from the environment are not supported)")
        k, v = line.split("=", 1)
        out.append((k, v))
    return out


def _go_json(obj: Any) -> str:
    """json.Marshal of a Go map: sorted keys, no spaces, HTML characters escaped."""
    s = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace(
        "\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _hash_suffix(obj: dict[str, Any]) -> str:
    """kustomize's hasher: sha256 of the encoded object, 10 hex chars with 0,1,3,a,e remapped.

    Quirk kept on purpose: kustomize looks the name up as the single field
    "metadata/name", finds nothing and hashes an empty name; absent maps hash as "".
    """
    data = obj.get("data") if obj.get("data") is not None else ""
    if obj["kind"] == "ConfigMap":
        m: dict[str, Any] = {"kind": "ConfigMap", "name": "", "data": data}
        if isinstance(obj.get("binaryData"), dict):
            m["binaryData"] = obj["binaryData"]
    else:
        m = {"kind": "Secret", "type": obj.get("type", ""), "name": "", "data": data}
    digest = hashlib.sha256(_go_json(m).encode()).hexdigest()[:10]
    return digest.translate(str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}))


def _generate(root: Path, spec: dict[str, Any], kind: str, allow_outside: bool) -> tuple[dict[str, Any], str, bool]:
    known = {"name", "literals", "files", "envs", "behavior", "options", "type"}
    extra = set(spec) - known
    if extra:
        raise KustomizeError(f"{root}: generator keys not supported: {sorted(extra)}")
    pairs: list[tuple[str, str]] = []
    for lit in spec.get("literals", []):
        k, _, v = lit.partition("=")
        pairs.append((k, v))
    for f in spec.get("files", []):
        key, _, rel = f.partition("=") if "=" in f else (Path(f).name, "", f)
        path = root / rel
        _check_inside(root, path, allow_outside)
        pairs.append((key, path.read_text()))
    for e in spec.get("envs", []):
        path = root / e
        _check_inside(root, path, allow_outside)
        if not path.exists():
            raise KustomizeError(f"env file {path} does not exist")
        pairs.extend(_parse_env_file(path))
    data: dict[str, str] = {}
    for k, v in pairs:
        if k in data:
            raise KustomizeError(f"{spec['name']}: duplicate key {k}")
        data[k] = v if kind == "ConfigMap" else base64.b64encode(v.encode()).decode()
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}, "data": data}
    if kind == "Secret":
        obj["type"] = spec.get("type", "Opaque")
    hashed = not (spec.get("options") or {}).get("disableNameSuffixHash", False)
    return obj, spec.get("behavior", "create"), hashed


def _smp(base: Any, patch: Any, key: str | None = None) -> Any:
    """Strategic merge for the simple cases: maps merge, keyed lists merge by key, other lists replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = _smp(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        mk = MERGE_KEYS[key]
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            idx = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(mk) == item.get(mk)), None)
            if idx is None:
                out.append(copy.deepcopy(item))
            else:
                out[idx] = _smp(out[idx], item)
        return out
    return copy.deepcopy(patch)


def _split_image(image: str) -> tuple[str, str]:
    """(name, rest) where rest is ':tag', '@digest' or both."""
    at = image.find("@")
    head, digest = (image[:at], image[at:]) if at >= 0 else (image, "")
    slash = head.rfind("/")
    colon = head.rfind(":")
    if colon > slash:
        return head[:colon], head[colon:] + digest
    return head, digest


def _walk_containers(node: Any, fn: Any) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("containers", "initContainers") and isinstance(v, list):
                for c in v:
                    if isinstance(c, dict):
                        fn(c)
            _walk_containers(v, fn)
    elif isinstance(node, list):
        for x in node:
            _walk_containers(x, fn)


def _apply_images(res: list[dict[str, Any]], images: list[dict[str, Any]]) -> None:
    for spec in images:
        def upd(c: dict[str, Any], spec: dict[str, Any] = spec) -> None:
            if "image" not in c:
                return
            name, rest = _split_image(c["image"])
            if name != spec["name"]:
                return
            new = spec.get("newName", name)
            if "digest" in spec:
                c["image"] = f"{new}@{spec['digest']}"
            elif "newTag" in spec:
                c["image"] = f"{new}:{spec['newTag']}"
            else:
                c["image"] = new + rest
        for r in res:
            _walk_containers(r, upd)


def _rewrite_refs(node: Any, cms: dict[str, str], secrets: dict[str, str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, dict):
                if k in ("configMapKeyRef", "configMapRef", "configMap") and v.get("name") in cms:
                    v["name"] = cms[v["name"]]
                if k in ("secretKeyRef", "secretRef") and v.get("name") in secrets:
                    v["name"] = secrets[v["name"]]
                if k == "secret" and v.get("secretName") in secrets:
                    v["secretName"] = secrets[v["secretName"]]
            _rewrite_refs(v, cms, secrets)
    elif isinstance(node, list):
        for x in node:
            _rewrite_refs(x, cms, secrets)


def _build(root: Path, allow_outside: bool) -> list[dict[str, Any]]:
    kpath = root / "kustomization.yaml"
    if not kpath.exists():
        raise KustomizeError(f"{root}: no kustomization.yaml")
    k = yaml.safe_load(kpath.read_text()) or {}
    unknown = set(k) - KNOWN_KEYS
    if unknown:
        raise KustomizeError(f"{kpath}: fields not supported by this renderer: {sorted(unknown)}")
    res: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        p = root / entry
        if p.is_dir():
            res.extend(_build(p, allow_outside))
        else:
            _check_inside(root, p, allow_outside)
            res.extend(_load_docs(p))

    for kind, field in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for spec in k.get(field, []):
            obj, behavior, hashed = _generate(root, spec, kind, allow_outside)
            existing = next((r for r in res if r["kind"] == kind and r["metadata"]["name"] == spec["name"]), None)
            if behavior == "create":
                if existing is not None:
                    raise KustomizeError(f"{kind} {spec['name']} already exists (use behavior: merge)")
                obj["__gen__"] = _Gen(hashed)
                res.append(obj)
            elif behavior in ("merge", "replace"):
                if existing is None:
                    raise KustomizeError(f"{kind} {spec['name']}: behavior {behavior} but no such generated object")
                if behavior == "merge":
                    existing["data"] = {**(existing.get("data") or {}), **obj["data"]}
                else:
                    existing["data"] = obj["data"]
            else:
                raise KustomizeError(f"unknown behavior {behavior}")

    for p in k.get("patches", []):
        if set(p) != {"path"}:
            raise KustomizeError(f"{kpath}: only 'patches: - path: FILE' is supported, got {p}")
        ppath = root / p["path"]
        _check_inside(root, ppath, allow_outside)
        for doc in _load_docs(ppath):
            idx = [i for i, r in enumerate(res) if r["kind"] == doc["kind"] and r["metadata"]["name"] == doc["metadata"]["name"]]
            if len(idx) != 1:
                raise KustomizeError(f"patch {doc['kind']}/{doc['metadata']['name']}: {len(idx)} matching resources")
            gen = res[idx[0]].pop("__gen__", None)
            res[idx[0]] = _smp(res[idx[0]], doc)
            if gen is not None:
                res[idx[0]]["__gen__"] = gen

    if "namespace" in k:
        for r in res:
            if r["kind"] not in CLUSTER_SCOPED:
                r["metadata"]["namespace"] = k["namespace"]
    for lab in k.get("labels", []):
        if lab.get("includeSelectors") or lab.get("includeTemplates"):
            raise KustomizeError("labels with includeSelectors/includeTemplates are not supported")
        for r in res:
            r["metadata"].setdefault("labels", {}).update(lab["pairs"])
    _apply_images(res, k.get("images", []))
    return res


def render(path: str | Path, load_restrictor_none: bool = False) -> list[dict[str, Any]]:
    """Render the kustomization at ``path`` like ``kustomize build`` (the subset above)."""
    res = _build(Path(path), load_restrictor_none)
    renames: dict[str, dict[str, str]] = {"ConfigMap": {}, "Secret": {}}
    for r in res:
        gen = r.pop("__gen__", None)
        if gen is not None and gen.hashed:
            name = r["metadata"]["name"]
            new = f"{name}-{_hash_suffix(r)}"
            renames[r["kind"]][name] = new
            r["metadata"]["name"] = new
    for r in res:
        _rewrite_refs(r, renames["ConfigMap"], renames["Secret"])
    return res

"""Validate objects against a CRD's own ``openAPIV3Schema`` the way the API server does (structurally).

Why not the hand-written subset any more: a subset only checks what its author
thought of. The real Kubeflow Trainer CRD (tests/infra/schemas/, extracted from
kubeflow/trainer v2.3.0) is what a cluster applies, so a renamed or misspelled
field fails here as it would on ``kubectl create``.

Two API-server behaviours are reproduced:

- Unknown fields are rejected (``kubectl create --validate=strict``, the default
  field validation since Kubernetes 1.27): every object schema with ``properties``
  and no ``additionalProperties``/``x-kubernetes-preserve-unknown-fields`` gets
  ``additionalProperties: false``.
- The root's CEL rules of the forms the TrainJob CRD uses on create
  (``self.a.b.matches('re')`` and ``size(self.a.b) <= N``) are evaluated; other CEL
  rules (``self == oldSelf`` immutability, which only applies to updates) are not.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMAS = Path(__file__).parent / "schemas"
TRAINJOB_CRD = SCHEMAS / "trainjob-v1alpha1.crd-v2.3.0.yaml"

_MATCHES = re.compile(r"^self\.([\w.]+)\.matches\('(.*)'\)$")
_SIZE = re.compile(r"^size\(self\.([\w.]+)\) <= (\d+)$")


def _strict(node: Any) -> Any:
    """Copy of an OpenAPI v3 structural schema with unknown fields forbidden on every closed object."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items() if k != "description"}
    if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@functools.cache
def _trainjob_schema() -> tuple[dict[str, Any], list[dict[str, str]]]:
    raw = yaml.safe_load(TRAINJOB_CRD.read_text())
    return _strict(copy.deepcopy(raw)), list(raw.get("x-kubernetes-validations", []))


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[part]
    return obj


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Every violation of the TrainJob CRD by ``obj`` (empty when the API server would accept it)."""
    schema, rules = _trainjob_schema()
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
    if obj.get("apiVersion") != "trainer.kubeflow.org/v1alpha1" or obj.get("kind") != "TrainJob":
        errors.append(f"not a trainer.kubeflow.org/v1alpha1 TrainJob: {obj.get('apiVersion')}/{obj.get('kind')}")
    for r in rules:
        rule = r["rule"]
        try:
            if m := _MATCHES.match(rule):
                ok = re.search(m.group(2), _get(obj, m.group(1))) is not None
            elif m := _SIZE.match(rule):
                ok = len(_get(obj, m.group(1))) <= int(m.group(2))
            else:
                raise AssertionError(f"CRD rule this checker cannot evaluate: {rule}")
        except (KeyError, TypeError):
            ok = False
        if not ok:
            errors.append(f"<root>: {r.get('message', rule)}")
    return errors


def assert_valid_trainjob(obj: dict[str, Any]) -> None:
    errs = crd_errors(obj)
    assert not errs, "TrainJob rejected by the v2.3.0 CRD schema:\n" + "\n".join(errs[:20])

"""Validate objects against the TrainJob CRD's own ``openAPIV3Schema``, as the API server does on create.

The real Kubeflow Trainer CRD (tests/infra/schemas/, extracted from kubeflow/trainer v2.3.0)
is what a cluster applies, so a renamed or misspelled field fails here as on ``kubectl create``.
``jsonschema`` checks the schema (types, required fields, enums, lengths, patterns); its
validator is extended with the two Kubernetes schema extensions a create request meets:

- Unknown fields are rejected (strict field validation, the default since Kubernetes 1.27):
  an object that declares ``properties`` accepts no others unless it sets
  ``additionalProperties`` or ``x-kubernetes-preserve-unknown-fields``. JSON Schema has no
  such default, so the ``properties`` keyword is extended to report the undeclared ones.
- ``x-kubernetes-validations``: every CEL rule at every level is compiled and run by
  ``common-expression-language`` with ``self`` bound to that node. Transition rules (the
  compiled program reads ``oldSelf``) apply only to updates and are skipped, as on create.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cel
import jsonschema
import yaml
from jsonschema.exceptions import ValidationError

SCHEMAS = Path(__file__).parent / "schemas"
TRAINJOB_CRD = SCHEMAS / "trainjob-v1alpha1.crd-v2.3.0.yaml"
_BASE = jsonschema.Draft7Validator


def _properties(validator: Any, properties: dict[str, Any], instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    yield from _BASE.VALIDATORS["properties"](validator, properties, instance, schema)
    if validator.is_type(instance, "object") and "additionalProperties" not in schema and not schema.get(
        "x-kubernetes-preserve-unknown-fields"
    ):
        for name in sorted(set(instance) - set(properties)):
            yield ValidationError(f"unknown field {name!r}")


@functools.cache
def _program(rule: str) -> Any:
    return cel.compile(rule)


def _cel_rules(validator: Any, rules: list[dict[str, str]], instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    for r in rules:
        program = _program(r["rule"])
        if "oldSelf" in program.variables():
            continue
        try:
            ok = program.execute({"self": instance})
        except (KeyError, RuntimeError, TypeError, ValueError) as e:  # a missing field or a type error fails the rule
            ok = f"{type(e).__name__}: {e}"
        if ok is not True:
            message = r.get("message") or f"failed rule: {r['rule']}"
            yield ValidationError(message if ok is False else f"{message} ({ok})")


_Validator = jsonschema.validators.extend(_BASE, {"properties": _properties, "x-kubernetes-validations": _cel_rules})


@functools.cache
def _trainjob_validator() -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return _Validator(yaml.load(TRAINJOB_CRD.read_text(), Loader=loader))


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Every violation of the TrainJob CRD by ``obj`` (empty when the API server would accept it)."""
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in _trainjob_validator().iter_errors(obj)]
    if obj.get("apiVersion") != "trainer.kubeflow.org/v1alpha1" or obj.get("kind") != "TrainJob":
        errors.append(f"not a trainer.kubeflow.org/v1alpha1 TrainJob: {obj.get('apiVersion')}/{obj.get('kind')}")
    return errors


def assert_valid_trainjob(obj: dict[str, Any]) -> None:
    errs = crd_errors(obj)
    assert not errs, "TrainJob rejected by the v2.3.0 CRD schema:\n" + "\n".join(errs[:20])

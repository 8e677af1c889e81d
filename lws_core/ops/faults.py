"""Fault injection for tests of the pipeline's failure handling — never set in production.

``LWS_FAULT_INJECT`` names the fault points (comma-separated) that raise :class:`InjectedFault`:

- ``evaluate``: the evaluate step fails after its MLflow step run exists (a late step failing
  after synthesize and train finished, so a rerun can show them served from KFP's cache);
- ``register``: registration fails right after the model version was created (the rollback path).

An environment variable, not a config key: a config key would enter the steps' cache keys and
the params.yaml every user sees, while this exists only so tests can break real runs on purpose.
"""

from __future__ import annotations

import os

ENV = "LWS_FAULT_INJECT"


class InjectedFault(RuntimeError):
    """Raised at a fault point named in ``LWS_FAULT_INJECT`` (deliberately not an LWSError: it
    stands for an unexpected crash, which is what the failure handling must survive)."""


def inject_fault(point: str) -> None:
    """Raise if ``point`` is named in ``LWS_FAULT_INJECT``; a no-op otherwise."""
    names = {p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip()}
    if point in names:
        raise InjectedFault(f"fault injected at {point!r} ({ENV}={os.environ[ENV]})")

"""Retries with backoff for remote services; then a one-line ServiceError naming the endpoint.

Only failures that can go away on their own are retried (connection refused, timeouts,
5xx, lock contention). A request the service answered with "no such thing" or "invalid"
is permanent: retrying it only delays the real message, so it is raised at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from lws_core.errors import LWSError, ServiceError

T = TypeVar("T")

_PERMANENT_MLFLOW_CODES = {"RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "INVALID_PARAMETER_VALUE", "PERMISSION_DENIED"}


def _permanent(e: BaseException) -> bool:
    if isinstance(e, LWSError | TypeError | AttributeError | KeyError | NotImplementedError):
        return True
    code = getattr(e, "error_code", None)
    return isinstance(code, str) and code in _PERMANENT_MLFLOW_CODES


def with_retries(fn: Callable[[], T], what: str, endpoint: str, attempts: int = 4, base_delay: float = 0.5) -> T:
    """Call ``fn``; on a transient failure wait 0.5, 1, 2 ... s and retry, then raise ServiceError."""
    last: Exception | None = None
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - remote clients raise many types; we re-raise as one
            if _permanent(e):
                raise
            last = e
            if i + 1 < attempts:
                time.sleep(base_delay * (2**i))
    msg = " ".join(str(last).split())[:240] if last else "unknown error"
    raise ServiceError(f"{what} failed after {attempts} attempts: {endpoint} unreachable or refusing ({msg})")

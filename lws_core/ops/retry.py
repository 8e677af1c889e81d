"""Retries with backoff for remote services; then a one-line ServiceError naming the endpoint."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from lws_core.errors import LWSError, ServiceError

T = TypeVar("T")


def with_retries(fn: Callable[[], T], what: str, endpoint: str, attempts: int = 4, base_delay: float = 0.5) -> T:
    """Call ``fn``; on a connection-type failure wait 0.5, 1, 2 ... s and retry, then raise ServiceError."""
    last: Exception | None = None
    for i in range(attempts):
        try:
            return fn()
        except LWSError:
            raise
        except Exception as e:
            status = getattr(e, "get_http_status_code", lambda: 0)()
            if 400 <= int(status or 0) < 500:  # the service answered "no": retrying will not help
                raise ServiceError(f"{what} refused by {endpoint}: {str(e).splitlines()[0][:300]}") from None  # noqa: BLE001 - remote clients raise many types; we re-raise as one
            last = e
            if i + 1 < attempts:
                time.sleep(base_delay * (2**i))
    msg = str(last).splitlines()[0][:200] if last else "unknown error"
    raise ServiceError(f"{what} failed after {attempts} attempts: {endpoint} unreachable or refusing ({msg})")

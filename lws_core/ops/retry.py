"""Retries with backoff for remote services; then a one-line ServiceError naming the endpoint.

Only failures that can go away on their own are retried (connection refused, timeouts,
5xx, lock contention). A request the service answered with "no such thing" or "invalid"
is permanent: retrying it only delays the real message, so it is raised at once.
The retry loop itself is tenacity's; this module only says what is transient and how
the final failure reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from lws_core.errors import LWSError, ServiceError

T = TypeVar("T")

# MLflow answers that retrying cannot change (the registry gate adds UNAUTHENTICATED and BAD_REQUEST).
PERMANENT_MLFLOW_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "INVALID_PARAMETER_VALUE", "PERMISSION_DENIED"})


def is_permanent(e: BaseException, codes: frozenset[str] = PERMANENT_MLFLOW_CODES) -> bool:
    """A failure that a retry cannot mend: our own errors, programming errors, or an MLflow answer in ``codes``."""
    if isinstance(e, LWSError | TypeError | AttributeError | KeyError | NotImplementedError):
        return True
    code = getattr(e, "error_code", None)
    return isinstance(code, str) and code in codes


def _transient(e: BaseException) -> bool:
    """Retry ordinary exceptions that are not known to be permanent; never KeyboardInterrupt & co."""
    return isinstance(e, Exception) and not is_permanent(e)


def with_retries(
    fn: Callable[[], T],
    what: str,
    endpoint: str,
    attempts: int = 4,
    base_delay: float = 0.5,
    permanent: Callable[[BaseException], bool] | None = None,
) -> T:
    """Call ``fn``; on a transient failure wait 0.5, 1, 2 ... s and retry, then raise ServiceError.

    A permanent failure (see :func:`is_permanent`, or one ``permanent`` recognises: say,
    DVC's "missing in the remote") propagates unchanged on the first attempt.
    """

    def give_up(state: RetryCallState) -> T:
        last = state.outcome.exception() if state.outcome else None
        msg = " ".join(str(last).split())[:240] if last else "unknown error"
        raise ServiceError(
            f"{what} failed after {state.attempt_number} attempts: {endpoint} unreachable or refusing ({msg})"
        ) from None

    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=base_delay, exp_base=2),
        retry=retry_if_exception(lambda e: _transient(e) and not (permanent is not None and permanent(e))),
        retry_error_callback=give_up,
        sleep=time.sleep,  # looked up per call, so tests can skip the waiting by patching time.sleep
    )
    return retrying(fn)

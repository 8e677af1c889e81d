"""The retry policy: transient failures are retried with doubling waits, permanent ones are not."""

from __future__ import annotations

import pytest

from lws_core.errors import InputError, ServiceError
from lws_core.ops import retry


def test_transient_failures_are_retried_then_named(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", waits.append)
    calls = 0

    def refused() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("Connection refused\n  (errno 111)")

    with pytest.raises(ServiceError, match=r"^MLflow x failed after 4 attempts: http://h:1 unreachable or refusing \(Connection refused \(errno 111\)\)$"):
        retry.with_retries(refused, "MLflow x", "http://h:1")
    assert calls == 4 and waits == [0.5, 1.0, 2.0]


def test_a_late_success_is_returned(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", waits.append)
    outcomes = iter([TimeoutError("slow"), OSError("reset"), "ok"])

    def flaky() -> str:
        o = next(outcomes)
        if isinstance(o, Exception):
            raise o
        return o

    assert retry.with_retries(flaky, "x", "e", attempts=3) == "ok"
    assert waits == [0.5, 1.0]


class _MlflowNotFound(Exception):
    error_code = "RESOURCE_DOES_NOT_EXIST"


@pytest.mark.parametrize("exc", [InputError("bad input"), KeyError("k"), _MlflowNotFound("no such model")])
def test_permanent_failures_are_raised_at_once(monkeypatch, exc):
    monkeypatch.setattr(retry.time, "sleep", lambda s: pytest.fail("a permanent failure must not wait"))
    calls = 0

    def fails() -> None:
        nonlocal calls
        calls += 1
        raise exc

    with pytest.raises(type(exc)):
        retry.with_retries(fails, "x", "e")
    assert calls == 1

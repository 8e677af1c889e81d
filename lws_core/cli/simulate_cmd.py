"""`lws simulate`."""

from __future__ import annotations

from lws_core.errors import LWSError


def simulate() -> None:
    """Not available yet in this build."""
    raise LWSError("`lws simulate` is not available yet in this build")

"""`lws train`."""

from __future__ import annotations

from lws_core.errors import LWSError


def train() -> None:
    """Not available yet in this build."""
    raise LWSError("`lws train` is not available yet in this build")

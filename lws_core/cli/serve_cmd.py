"""`lws serve`."""

from __future__ import annotations

from lws_core.errors import LWSError


def serve() -> None:
    """Not available yet in this build."""
    raise LWSError("`lws serve` is not available yet in this build")

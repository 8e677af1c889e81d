"""Environment variables set for the duration of a block (one helper for the places that need it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def temporary_env(values: dict[str, str]) -> Iterator[None]:
    """``os.environ.update(values)`` inside the block only; each variable gets its old value (or none) back."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

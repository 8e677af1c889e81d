"""Progress bars that suit where they are read: a live bar on a terminal, plain lines in a log.

tqdm redraws its bar with carriage returns many times a second. On a terminal that is
one line; in a file, a ``kubectl logs`` stream or a CI log it is thousands of frames
glued into one unreadable line. :func:`progress` returns an ordinary ``tqdm`` either
way, so call sites use the usual API (iterate, ``update``, ``set_postfix``, ``close``);
when the stream is not a terminal, or ``CI`` is set, it is configured for logs:
ASCII, fixed width, at most one refresh every :data:`LOG_INTERVAL_S` seconds and
every :data:`LOG_EVERY_PERCENT` % of a known total (tqdm's ``mininterval`` and
``miniters``; ``set_postfix`` waits for the next such refresh), and each refresh
written as its own line.

tqdm has no line mode of its own (``disable=None`` on a non-terminal turns the bar off
altogether), so the custom parts are small: :class:`_LineStream`, the ``file`` tqdm
writes to, turns each ``\\r``-framed refresh into one newline-terminated line, and
:class:`_LogBar` keeps ``set_postfix`` from forcing a redraw.
No mlflow/dvc/kfp here: the science modules use this.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from typing import IO, Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

LOG_INTERVAL_S = 15.0  # a log line at most this often ...
LOG_EVERY_PERCENT = 5  # ... and only after this much of a known total has passed
LOG_HEARTBEAT_S = 60.0  # with slow steps, still a line this often (tqdm's monitor thread)
LOG_WIDTH = 100

_FRAME_SPLIT = re.compile(r"[\r\n]|\x1b\[A")  # tqdm's frame starts, line ends and cursor-up moves


def interactive(stream: IO[str] | None = None) -> bool:
    """True when ``stream`` (default stderr) is a terminal and this is not a CI job."""
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        return False
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class _LineStream:
    """A file for tqdm that writes each refreshed bar as one line (and each distinct bar once)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._last = ""

    def write(self, s: str) -> int:
        for frame in _FRAME_SPLIT.split(s):
            frame = frame.rstrip()
            if frame and frame != self._last:  # the closing redraw repeats the last refresh
                self.stream.write(frame + "\n")
                self._last = frame
        return len(s)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


class _LogBar(tqdm):
    """tqdm whose ``set_postfix``/``set_description`` wait for the next rate-limited refresh.

    tqdm redraws at once on those by default; a loop that sets a loss every step would
    otherwise write a line per step and defeat ``mininterval``/``miniters``.
    """

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = False, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_description(self, desc: str | None = None, refresh: bool = False) -> None:
        super().set_description(desc, refresh=False)


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    disable: bool = False,
    stream: IO[str] | None = None,
    **kwargs: Any,
) -> tqdm:
    """A tqdm over ``iterable`` (or updated by hand) that writes to ``stream`` (default stderr).

    On a terminal: tqdm's live bar. Otherwise: one plain line per refresh, at most every
    ``LOG_INTERVAL_S`` s and ``LOG_EVERY_PERCENT`` % of ``total``, plus the final line.
    Extra keyword arguments go to tqdm (``leave``, ``position``, ``mininterval`` ...).
    """
    stream = sys.stderr if stream is None else stream
    if total is None and iterable is not None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if interactive(stream):
        opts: dict[str, Any] = {"file": stream, "dynamic_ncols": True}
    else:
        opts = {
            "file": _LineStream(stream),
            "ascii": True,
            "dynamic_ncols": False,
            "ncols": LOG_WIDTH,
            "mininterval": LOG_INTERVAL_S,
            "maxinterval": LOG_HEARTBEAT_S,
            "miniters": max(1, int(total * LOG_EVERY_PERCENT / 100)) if total else 1,
        }
    opts.update(kwargs)
    cls = tqdm if interactive(stream) else _LogBar
    return cls(iterable, total=total, desc=desc, unit=unit, disable=disable, **opts)

"""Scratch folders beside a stage's output, and the leftovers of killed runs.

A pretraining stage synthesizes its corpus into a hidden folder next to its output and removes it when it
ends. A run killed by SIGKILL (the OOM killer, a pod eviction, Ctrl-C twice) never reaches its ``finally``,
and its folder, up to gigabytes of audio, stayed behind. Each folder is therefore named after the host and
process that made it, and a new run removes the folders of its own host whose process is gone.

Why not only the folders of this host: on Kubernetes the workspace may be a volume shared by pods on other
nodes, whose processes this one cannot see; a folder made elsewhere is left to its own host. ``tempfile``
makes the folder; no library we use cleans up after dead processes, hence the small check here.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

_MADE: set[str] = set()  # folders this process made (never stale for it, even while it runs two stages at once)


def _host() -> str:
    """This host's name, safe in a file name."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:63] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def stale_scratch(parent: Path, prefix: str) -> list[Path]:
    """This host's scratch folders of ``prefix`` in ``parent`` whose process has ended.

    A folder with this process's own id that this process did not make is stale too: an earlier process had the
    same id, e.g. a restarted container's first process."""
    host, me = _host(), os.getpid()
    pattern = re.compile(rf"^{re.escape(prefix)}-{re.escape(host)}-(\d+)-")
    out = []
    for p in parent.glob(f"{prefix}-{host}-*") if parent.is_dir() else []:
        m = pattern.match(p.name)
        if not m or not p.is_dir() or str(p) in _MADE:
            continue
        if int(m.group(1)) == me or not _alive(int(m.group(1))):
            out.append(p)
    return sorted(out)


def scratch_dir(parent: str | Path, prefix: str) -> Path:
    """A new private folder ``{prefix}-{host}-{pid}-{random}`` in ``parent``, after removing this host's
    leftovers of ``prefix`` from killed runs (see :func:`stale_scratch`). The caller removes it when done."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for p in stale_scratch(parent, prefix):
        shutil.rmtree(p, ignore_errors=True)
    made = Path(tempfile.mkdtemp(prefix=f"{prefix}-{_host()}-{os.getpid()}-", dir=parent))
    _MADE.add(str(made))
    return made

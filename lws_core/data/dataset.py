"""Read a synthesized dataset back: schema-version check, audio and timeline of a row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lws_core.audio.io import from_pcm16_bytes
from lws_core.errors import InputError, SchemaMismatchError
from lws_core.schema import SCHEMA_VERSION, Session, session_from_dict


def load_dataset_dir(path: str | Path):  # noqa: ANN201 - datasets.DatasetDict
    """Load a dataset written by ``synthesize``; fail clearly on a missing dir, another schema or an empty split."""
    import json

    from datasets import DatasetDict, load_from_disk

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"dataset directory not found: {path}")
    if not (path / "dataset_dict.json").is_file():
        raise InputError(f"{path}: not an LWS dataset (no dataset_dict.json; incomplete or another format)")
    card_path = path / "card.json"
    if card_path.is_file():
        try:
            version = json.loads(card_path.read_text()).get("schema_version")
        except json.JSONDecodeError:
            raise InputError(f"{card_path}: not valid JSON") from None
        if version != SCHEMA_VERSION:
            raise SchemaMismatchError(f"{path}: dataset schema {version!r}, this code speaks {SCHEMA_VERSION!r}; re-synthesize")
    try:
        dd = load_from_disk(str(path))
    except Exception as e:
        raise InputError(f"{path}: cannot load dataset ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    if not isinstance(dd, DatasetDict):
        raise InputError(f"{path}: expected a DatasetDict with train/validation/test(/test_seen) splits")
    for name, ds in dd.items():
        if len(ds) and ds[0]["schema_version"] != SCHEMA_VERSION:
            raise SchemaMismatchError(f"{path}: split {name} has schema {ds[0]['schema_version']!r}, expected {SCHEMA_VERSION!r}")
    return dd


def require_rows(dd, split: str):  # noqa: ANN001, ANN201
    """The split, or a clear error when it is missing or empty (e.g. too few sessions for a test split)."""
    if split not in dd:
        raise InputError(f"dataset has no split {split!r} (splits: {', '.join(dd.keys())})")
    if len(dd[split]) == 0:
        raise InputError(f"split {split!r} is empty; synthesize more sessions")
    return dd[split]


def row_audio(row: dict[str, Any]) -> np.ndarray:
    """The row's user audio; a row without audio (a text-only dataset) is an error, never zero samples."""
    raw = row["audio"]
    if not raw:
        raise InputError(
            f"row {row.get('id', '?')}: no audio stored (a text-only dataset, synthesized with text_only=True); "
            "re-synthesize with audio to simulate, evaluate or listen to it"
        )
    return from_pcm16_bytes(raw)


def row_session(row: dict[str, Any]) -> Session:
    import json

    return session_from_dict(json.loads(row["session"]), source=f"row {row.get('id', '?')}")

"""engine.py creates sessions; session.py knows the engine only through types.SessionHost (no import circle)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import lws_core.engine.session as session_mod
import lws_core.engine.types as types_mod
from lws_core.engine.types import SessionHost


def _imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_session_and_types_do_not_import_the_engine_module():
    for mod in (session_mod, types_mod):
        imported = _imported_modules(Path(inspect.getfile(mod)))
        assert "lws_core.engine.engine" not in imported and "lws_core.engine" not in imported, mod.__name__


def test_the_engine_provides_what_a_session_uses(engine):
    """Every member of SessionHost exists on a real Engine, with the type a session relies on."""
    members = [n for n in vars(SessionHost) if not n.startswith("_")] + list(SessionHost.__annotations__)
    assert set(members) >= {"model", "config", "fast_path", "speaks", "tts", "allowed_mask"}
    for name in members:
        assert hasattr(engine, name), name
    assert isinstance(engine.speaks, bool)
    with engine.session() as sess:
        assert sess.engine is engine

"""The synthesized FDB probe: held-out phrasings by default, training phrasings on request, one-line errors."""

from __future__ import annotations

import json

import pytest

from lws_core.data.tasks import PHRASINGS
from lws_core.errors import InputError
from lws_core.eval.fdb_probe import build_probe


def _first_question(root) -> str:  # noqa: ANN001
    """The words of the first pause-handling sample (an arithmetic question, cut by a pause)."""
    items = json.loads((root / "pause_handling" / "0" / "transcription.json").read_text())
    return " ".join(w["text"] for w in items[0]["item"])


@pytest.mark.parametrize("phrasings", ["test", "train"])
def test_probe_phrasings(tmp_path, phrasings):
    root = build_probe(tmp_path / "p", per_task=1, seed=0, progress=False, phrasings=phrasings)
    text = _first_question(root).lower()
    lead = lambda t: t.split("{")[0].strip().lower()  # noqa: E731 - the words before the first number
    held_out = lead(PHRASINGS["arithmetic"][-1])
    if phrasings == "test":
        assert text.startswith(held_out)
    else:
        assert not text.startswith(held_out)
        assert any(text.startswith(lead(t)) for t in PHRASINGS["arithmetic"][:-1])
    assert f"phrasings={phrasings}" in (root / "README.md").read_text()


def test_probe_bad_phrasings_is_one_line(tmp_path):
    with pytest.raises(InputError, match="--phrasings"):
        build_probe(tmp_path / "p", per_task=1, progress=False, phrasings="seen")
    assert not (tmp_path / "p").exists()

"""Two-stage data synthesis: teacher scripts (stage 1) aligned to units against synthesized user speech (stage 2)."""

from lws_core.data.dataset import load_dataset_dir, require_rows, row_audio, row_session
from lws_core.data.synth import SynthSummary, synthesize
from lws_core.data.tasks import grade_written, key_facts
from lws_core.data.types import Note, Question, Reject, Script

__all__ = [
    "Note",
    "Question",
    "Reject",
    "Script",
    "SynthSummary",
    "grade_written",
    "key_facts",
    "load_dataset_dir",
    "require_rows",
    "row_audio",
    "row_session",
    "synthesize",
]

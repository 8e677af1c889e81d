"""Base class for config sections: strict (unknown keys are errors), immutable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section. Unknown keys fail so that typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

"""Base class for config sections: strict (unknown keys are errors), immutable."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict


class Section(BaseModel):
    """A config section. Unknown keys fail so that typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _switch_word(value: object) -> object:
    """YAML reads a bare ``on``/``off`` (as in ``--set pretrain.bf16=off``) as a boolean: take it as the word."""
    return {True: "on", False: "off"}[value] if isinstance(value, bool) else value


# an auto/on/off setting that also accepts YAML's booleans for on/off
Switch = Annotated[Literal["auto", "on", "off"], BeforeValidator(_switch_word)]

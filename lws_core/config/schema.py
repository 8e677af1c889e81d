"""Config section `schema`: unit length, audio tokens per unit and per-unit budgets."""

from __future__ import annotations

from pydantic import Field, model_validator

from lws_core.config.base import Section


class SchemaConfig(Section):
    """The token schema's tunable numbers (the token strings themselves are fixed by the version)."""

    version: str = Field("lws-v1", description="Schema version; models and datasets record it.")
    unit_s: float = Field(1.0, ge=0.25, le=2.0, description="Unit length in seconds (0.25-2.0).")
    audio_tokens_per_unit: int = Field(10, ge=1, le=100, description="K audio embeddings per unit.")
    max_write_tokens: int = Field(24, ge=0, le=512, description="Write budget per unit (tokens).")
    max_say_tokens: int = Field(12, ge=0, le=256, description="Say budget per unit (tokens).")
    sample_rate: int = Field(16000, description="Sample rate of all audio inside LWS.")

    @model_validator(mode="after")
    def _check(self) -> SchemaConfig:
        from lws_core.schema.tokens import SCHEMA_VERSION

        if self.version != SCHEMA_VERSION:
            raise ValueError(f"schema.version must be {SCHEMA_VERSION!r} (this code's schema), got {self.version!r}")
        if self.sample_rate != 16000:
            raise ValueError("schema.sample_rate must be 16000 (input audio of any rate is resampled to it)")
        return self

"""User-facing errors.

Every mistake a user can make (a bad config key, a malformed session file, a
model directory from another schema version) raises a subclass of
:class:`LWSError`. The CLI turns these into one-line messages and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LWSError(Exception):
    """Base of every error caused by user input or environment, not by a bug."""

    exit_code = 2


class ConfigError(LWSError):
    """A config file or value is wrong; the message names the key."""


class SchemaError(LWSError):
    """A session or token stream breaks the Listen-Write-Speak token schema."""


class SchemaMismatchError(SchemaError):
    """A tokenizer, dataset or model was made with another schema version or token ids."""


class InputError(LWSError):
    """A user-supplied file or value cannot be used (missing, unreadable, empty, malformed)."""


class ServiceError(LWSError):
    """An external service (MLflow, S3, KFP API, a teacher endpoint) is unreachable or refused."""

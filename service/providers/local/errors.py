"""Errors raised by the local trainer and local inference, each with a message meant for the end user."""

from __future__ import annotations


class LocalTrainingError(Exception):
    """Base class: anything the local provider refuses or cannot do."""


class LocalProviderUnavailable(LocalTrainingError):
    """The optional heavy dependencies (torch, transformers, peft, ...) are not installed."""


class BaseModelError(LocalTrainingError):
    """The base model could not be resolved or loaded (unknown alias, missing file, not in the offline cache)."""


class DatasetFormatError(LocalTrainingError):
    """A training or validation file cannot be used; names the file and line when there is one."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None):
        self.path = path
        self.line = line
        self.field = field
        where = ", ".join(
            part
            for part in (
                f"file {path}" if path else "",
                f"line {line}" if line is not None else "",
                f"field {field}" if field else "",
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.detail = message


class ChatTemplateError(LocalTrainingError):
    """The model's chat template cannot be used to find assistant tokens (missing, or not prefix-consistent)."""


class CheckpointMismatchError(LocalTrainingError):
    """output_dir holds checkpoints from a different run (other params, data or base model)."""

"""What callers of the inference runtime pass and get back, and the errors it raises. No torch here: routes import
these without loading a model stack."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from service.providers.local.base_models import BaseModelSource

FinishReason = Literal["stop", "length"]
Prompt = list[dict[str, Any]] | str  # chat messages (OpenAI format) or a raw text prompt (legacy completions)


@dataclass(frozen=True)
class ModelRef:
    """A resolved local model: the base model (a spec string the runtime resolves as the operator allows: alias, folder
    or GGUF file under the model directories, hub id; or a ``BaseModelSource`` the caller resolved) and an optional
    PEFT LoRA adapter folder. `name` is what users call it (an ``ft:`` name); errors show only that, never paths."""

    base_model: str | BaseModelSource
    adapter_path: Path | None = None
    name: str = ""

    @property
    def base_key(self) -> str:
        """Requests with the same key share one resident base model."""
        if isinstance(self.base_model, str):
            return self.base_model
        return f"{self.base_model.kind}:{self.base_model.location}"

    @property
    def who(self) -> str:
        return f"model '{self.name}'" if self.name else "the model"


@dataclass(frozen=True)
class SamplingParams:
    """OpenAI semantics: temperature 0 is greedy; `stop` strings end the text before them; `n` independent choices;
    the same `seed` gives the same choices for the same request."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    n: int = 1


@dataclass(frozen=True)
class Choice:
    index: int
    text: str
    finish_reason: FinishReason


@dataclass(frozen=True)
class Completion:
    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class StreamEvent(NamedTuple):
    """A piece of one choice's text; the choice's last event has its finish_reason (and possibly empty text)."""

    index: int
    text: str
    finish_reason: FinishReason | None


class Usage(NamedTuple):
    """The last item of every stream."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


StreamItem = StreamEvent | Usage


class InferenceError(Exception):
    """Base of the runtime's errors; messages are safe to show to API users."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidRequest(InferenceError, ValueError):
    """The request cannot be served as given (bad sampling values, a prompt the chat template refuses, a prompt longer
    than the model's context). `param` names the request field when one is at fault."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class Overloaded(InferenceError):
    """Too many requests are waiting; try again after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelLoadError(InferenceError):
    """The base model or adapter cannot be loaded. The message names the model as the user called it, never a server
    path; the full cause is logged."""


class InferenceTimeout(InferenceError):
    """The request did not finish within its timeout (waiting included)."""


def collect(items: Any, n: int) -> Completion:
    """A whole completion from a stream's items (``n`` choices); raises an error found among them."""
    texts: dict[int, list[str]] = {i: [] for i in range(n)}
    reasons: dict[int, FinishReason] = {}
    usage = None
    for item in items:
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, Usage):
            usage = item
        else:
            texts.setdefault(item.index, []).append(item.text)
            if item.finish_reason is not None:
                reasons[item.index] = item.finish_reason
    if usage is None or len(reasons) < n:  # only when the request was cancelled under us
        raise InferenceError("the request ended without a result")
    return Completion(
        choices=[Choice(i, "".join(texts[i]), reasons[i]) for i in range(n)],
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
    )

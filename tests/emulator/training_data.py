"""What OpenAI checks in a training file before a job is queued; content errors end up on the job, not the file."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from . import tokens
from .config import JobError

CHAT_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call", "refusal"}
SPECIAL_TOKEN_TEXT = re.compile(
    r"<\|(endoftext|fim_prefix|fim_middle|fim_suffix|endofprompt|im_start|im_end|im_sep)\|>"
)
LEGACY_COMPLETION_MODELS = {"davinci-002", "babbage-002"}


@dataclass(frozen=True)
class TrainingData:
    n_examples: int
    # Billable tokens of one pass over the data (OpenAI bills n_epochs times this).
    tokens_per_epoch: int


class _Invalid(Exception):
    pass


def _messages_problem(messages: object, where: str) -> str | None:
    if not isinstance(messages, list) or not messages:
        return f"{where} is missing a non-empty 'messages' list."
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"{where}, message {i + 1} is not an object."
        unknown = set(message) - MESSAGE_KEYS
        if unknown:
            return f"{where}, message {i + 1} has unrecognized keys: {', '.join(sorted(unknown))}."
        role = message.get("role")
        if role not in CHAT_ROLES:
            return f"{where}, message {i + 1} has an unrecognized role: {role!r}."
        if message.get("content") is None and not (role == "assistant" and message.get("tool_calls")):
            return f"{where}, message {i + 1} is missing content."
        if "weight" in message and (role != "assistant" or message["weight"] not in (0, 1)):
            return f"{where}, message {i + 1} has an invalid weight: only assistant messages may set weight 0 or 1."
    return None


def check(
    content: bytes, *, param: str, method: str, base_model: str, encoding: str, min_examples: int
) -> TrainingData | JobError:
    """Validate a JSONL training (or validation) file the way the fine-tuning service does at `validating_files`."""
    code = f"invalid_{param}"
    prefix = f"The job failed due to an invalid {param.replace('_', ' ')}."

    def fail(detail: str) -> JobError:
        return JobError(code=code, message=f"{prefix} {detail}", param=param)

    try:
        text = content.decode("utf-8").removeprefix("\ufeff")  # Azure requires the BOM
    except UnicodeDecodeError:
        return fail("The file is not valid UTF-8.")
    n_examples = 0
    total_tokens = 0
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            example = json.loads(raw)
        except json.JSONDecodeError:
            return fail(
                "Expected file to have JSONL format, where every line is a valid JSON dictionary. "
                f"Line {line_no} is not valid JSON."
            )
        if not isinstance(example, dict):
            return fail(
                "Expected file to have JSONL format, where every line is a valid JSON dictionary. "
                f"Line {line_no} is not a dictionary."
            )
        special = SPECIAL_TOKEN_TEXT.search(raw)
        if special:
            return fail(f"Line {line_no} contains the special token text {special.group(0)!r}, which is not allowed.")
        where = f"Example {line_no}"
        try:
            total_tokens += _example_tokens(example, where, method=method, base_model=base_model, encoding=encoding)
        except _Invalid as exc:
            return fail(str(exc))
        n_examples += 1
    if n_examples < min_examples:
        return JobError(
            code="invalid_n_examples",
            message=f"{param.replace('_', ' ').capitalize()} has {n_examples} example(s), "
            f"but must have at least {min_examples} examples",
            param=param,
        )
    return TrainingData(n_examples=n_examples, tokens_per_epoch=total_tokens)


def _example_tokens(example: dict, where: str, *, method: str, base_model: str, encoding: str) -> int:
    if method == "dpo":
        source = example.get("input")
        if not isinstance(source, dict):
            raise _Invalid(f"{where} is missing the 'input' object of a preference example.")
        problem = _messages_problem(source.get("messages"), f"{where} input")
        if problem:
            raise _Invalid(problem)
        for key in ("preferred_output", "non_preferred_output"):
            outputs = example.get(key)
            if (
                not isinstance(outputs, list)
                or len(outputs) != 1
                or not isinstance(outputs[0], dict)
                or outputs[0].get("role") != "assistant"
            ):
                raise _Invalid(f"{where} must have '{key}' as a list of exactly one assistant message.")
        return tokens.count_messages(
            source["messages"] + example["preferred_output"] + example["non_preferred_output"], encoding
        )
    if base_model in LEGACY_COMPLETION_MODELS and "prompt" in example:
        if not isinstance(example.get("prompt"), str) or not isinstance(example.get("completion"), str):
            raise _Invalid(f"{where} must have string 'prompt' and 'completion' fields.")
        return tokens.count(example["prompt"], encoding) + tokens.count(example["completion"], encoding)
    problem = _messages_problem(example.get("messages"), where)
    if problem:
        raise _Invalid(problem)
    if method == "supervised" and not any(m.get("role") == "assistant" for m in example["messages"]):
        raise _Invalid(f"{where} has no assistant message to learn from.")
    return tokens.count_messages(example["messages"], encoding)

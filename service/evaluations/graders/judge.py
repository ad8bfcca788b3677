"""LLM judges: a rubric score per output, and pairwise preference between two candidates.

The judge model is reached through an injected async ``ChatClient`` (``service.evaluations.generation`` provides one
that shares the evaluation's rate limiter), and verdicts are cached through an injected ``VerdictCache`` keyed by
(judge model, the full prompt, sampling parameters), so re-running an evaluation or resuming one pays only for new
judgements. Only parseable verdicts are cached.

Verdicts are read from a strict final line (``SCORE: 4``, ``VERDICT: PASS``, ``WINNER: A``); anything else is an
error on that sample, never a guessed score. Pairwise judging asks twice with the answers swapped and counts a verdict
only when both orders agree, which removes the judge's position bias from the count (Zheng et al. 2023).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from api_schemas.graders import LlmPairwiseGraderSpec, LlmRubricGraderSpec, Score
from service import chat
from service.errors import ServiceError
from service.evaluations.graders.base import Grader, GradingError, Sample, _require_graded
from service.evaluations.graders.registry import register_grader
from service.evaluations.stats import SufficientStatistics, mcnemar_test
from service.net import is_refusal

# Part of every cache key: changing a prompt template must not reuse verdicts given to the old one.
RUBRIC_PROMPT_VERSION = "rubric-v1"
PAIRWISE_PROMPT_VERSION = "pairwise-v1"


@dataclass(frozen=True)
class ChatReply:
    text: str
    input_tokens: int = 0
    output_tokens: int = 0


class ChatClient(Protocol):
    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        temperature: float,
        max_tokens: int,
        seed: int | None,
    ) -> ChatReply: ...


class VerdictCache(Protocol):
    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def set(self, key: str, value: dict[str, Any]) -> None: ...


class InMemoryVerdictCache:
    """A bounded in-process cache (least recently used out). Use a shared store in production for reuse across runs."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._data: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._max = max_entries

    async def get(self, key: str) -> dict[str, Any] | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: dict[str, Any]) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


def verdict_cache_key(model: str, messages: Sequence[Mapping[str, str]], params: Mapping[str, Any]) -> str:
    payload = json.dumps(
        {"model": model, "messages": list(messages), "params": dict(params)},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return "judge:" + hashlib.sha256(payload.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------------
# Prompts

_SYSTEM = (
    "You are a careful, impartial evaluator of AI assistant responses. Judge only by the criteria given. "
    "Do not let response length, style or the order in which responses appear influence you. "
    "Always end your answer with the exact final line requested, and nothing after it."
)


def _render_message(message: Mapping[str, Any]) -> str:
    """One message for the judge: ``[role]`` (``[role name]`` with a name), then its text as ``service.chat``
    reads it with a marker for each part that is not text, then a ``call name(arguments)`` line per tool call."""
    role = message.get("role")
    label = role if isinstance(role, str) else chat.USER
    name = message.get("name")
    if isinstance(name, str) and name:
        label = f"{label} {name}"
    lines = [f"[{label}]", chat.text_of(message.get("content"), placeholders=True)]
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        lines.append(refusal)
    lines.extend(f"call {function}({arguments})" for function, arguments in chat.function_calls(message))
    return "\n".join(lines)


def render_conversation(messages: Sequence[Mapping[str, Any]]) -> str:
    return "\n\n".join(_render_message(m) for m in messages)


def _section(tag: str, body: str) -> str:
    return f"<{tag}>\n{body}\n</{tag}>"


def rubric_messages(
    rubric: str, sample: Sample, *, scale: str, include_reference: bool, output: str
) -> list[dict[str, str]]:
    parts = [
        "Evaluate the RESPONSE to the CONVERSATION below against the RUBRIC.",
        _section("rubric", rubric),
        _section("conversation", render_conversation(sample.messages) or "(none)"),
    ]
    if include_reference and sample.references:
        parts.append(_section("reference_answer", sample.references[0]))
    parts.append(_section("response", output))
    if scale == "1-5":
        parts.append(
            "Think briefly about how well the response meets the rubric (1 = not at all, 5 = fully), then end with "
            "one final line of exactly this form:\nSCORE: <an integer from 1 to 5>"
        )
    else:
        parts.append(
            "Think briefly about whether the response meets the rubric, then end with one final line that is "
            "exactly\nVERDICT: PASS\nor exactly\nVERDICT: FAIL"
        )
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def pairwise_messages(
    criteria: str, sample: Sample, *, include_reference: bool, first: str, second: str
) -> list[dict[str, str]]:
    parts = [
        "Compare the two responses, A and B, to the CONVERSATION below according to the CRITERIA.",
        _section("criteria", criteria),
        _section("conversation", render_conversation(sample.messages) or "(none)"),
    ]
    if include_reference and sample.references:
        parts.append(_section("reference_answer", sample.references[0]))
    parts += [
        _section("response_a", first),
        _section("response_b", second),
        "Think briefly about which response better meets the criteria, then end with one final line that is exactly "
        "one of:\nWINNER: A\nWINNER: B\nWINNER: TIE",
    ]
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


# ---------------------------------------------------------------------------------------------------------------------
# Strict verdict parsing

_SCORE_LINE = re.compile(r"SCORE: ?([1-5])")
_VERDICT_LINE = re.compile(r"VERDICT: ?(PASS|FAIL)")
_WINNER_LINE = re.compile(r"WINNER: ?(A|B|TIE)")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def parse_score(text: str) -> int:
    m = _SCORE_LINE.fullmatch(_last_line(text))
    if m is None:
        raise GradingError(f"judge reply does not end with 'SCORE: <1-5>': {_last_line(text)[:120]!r}")
    return int(m.group(1))


def parse_pass_fail(text: str) -> bool:
    m = _VERDICT_LINE.fullmatch(_last_line(text))
    if m is None:
        raise GradingError(f"judge reply does not end with 'VERDICT: PASS|FAIL': {_last_line(text)[:120]!r}")
    return m.group(1) == "PASS"


def parse_winner(text: str) -> Literal["A", "B", "TIE"]:
    m = _WINNER_LINE.fullmatch(_last_line(text))
    if m is None:
        raise GradingError(f"judge reply does not end with 'WINNER: A|B|TIE': {_last_line(text)[:120]!r}")
    return m.group(1)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------------
# Graders


class JudgeRefused(ServiceError):
    """The outbound policy refused the judge endpoint's address. Every other prompt would meet the same refusal, so
    the evaluation fails with it rather than grading each sample as an error."""

    kind, code = "invalid", "url_not_allowed"


class _JudgeGrader(Grader[Any]):
    needs_llm = True
    needs_reference = False

    def __init__(self, spec: Any, *, chat_client: ChatClient, cache: VerdictCache | None = None) -> None:
        super().__init__(spec)
        self._client = chat_client
        self._cache: VerdictCache = cache if cache is not None else InMemoryVerdictCache()

    def _params(self) -> dict[str, Any]:
        return {"temperature": self.spec.temperature, "max_tokens": self.spec.max_tokens, "seed": self.spec.seed}

    def _grade(self, sample: Sample) -> Score:
        raise TypeError(f"{type(self).__name__} calls a model: use 'await grader.agrade(sample)'")

    async def _judge(self, messages: list[dict[str, str]], version: str, parse: Any) -> tuple[Any, dict[str, Any]]:
        """(parsed verdict, details) for one prompt, from the cache or the judge. Raises GradingError."""
        params = self._params()
        key = verdict_cache_key(self.spec.model, messages, {**params, "prompt_version": version})
        cached = await self._cache.get(key)
        if cached is not None:
            details = {"cached": True, "input_tokens": 0, "output_tokens": 0, "reasoning": cached["text"][-2000:]}
            return parse(cached["text"]), details
        try:
            reply = await self._client.complete(model=self.spec.model, messages=messages, **params)
        except Exception as exc:  # the client already retried what was transient; whatever is left fails the sample
            if is_refusal(exc):
                raise JudgeRefused(f"judge endpoint: {exc}") from exc
            raise GradingError(f"judge request failed: {type(exc).__name__}: {exc}") from exc
        details = {"cached": False, "input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens}
        try:
            verdict = parse(reply.text)
        except GradingError as exc:
            raise GradingError(f"{exc} (judge text: {reply.text[-400:]!r})") from None
        await self._cache.set(key, {"text": reply.text, "model": self.spec.model})
        return verdict, {**details, "reasoning": reply.text[-2000:]}


@register_grader
class LlmRubricGrader(_JudgeGrader):
    spec_type = LlmRubricGraderSpec
    description = "An LLM judge scores each output against a rubric: 1-5 (passes at pass_threshold) or pass/fail."
    always_binary = True

    def _threshold(self, value: float) -> bool | None:
        return value >= self.spec.pass_threshold

    async def agrade(self, sample: Sample) -> Score:
        problem = self._precheck(sample)
        if problem is not None:
            return Score(value=None, error=problem)
        messages = rubric_messages(
            self.spec.rubric,
            sample,
            scale=self.spec.scale,
            include_reference=self.spec.include_reference,
            output=sample.output or "",
        )
        try:
            if self.spec.scale == "1-5":
                score, details = await self._judge(messages, RUBRIC_PROMPT_VERSION, parse_score)
                return Score(value=float(score), passed=score >= self.spec.pass_threshold, details=details)
            passed, details = await self._judge(messages, RUBRIC_PROMPT_VERSION, parse_pass_fail)
            return Score(value=1.0 if passed else 0.0, passed=passed, details=details)
        except GradingError as exc:
            return Score(value=None, error=str(exc))


Winner = Literal["a", "b", "tie", "inconsistent"]
_B_SCORE = {"a": 0.0, "tie": 0.5, "b": 1.0}


def combine_orders(first: Literal["A", "B", "TIE"], second: Literal["A", "B", "TIE"]) -> Winner:
    """Verdict from two judgements: ``first`` shown (a, b) as (A, B), ``second`` shown (b, a). Counted only when
    both orders name the same candidate (or both say tie)."""
    v1 = {"A": "a", "B": "b", "TIE": "tie"}[first]
    v2 = {"A": "b", "B": "a", "TIE": "tie"}[second]
    return v1 if v1 == v2 else "inconsistent"  # type: ignore[return-value]


@register_grader
class LlmPairwiseGrader(_JudgeGrader):
    """Pairwise preference. ``compare(sample, output_a, output_b)`` scores b against a: value 1 when b wins, 0.5 on a
    tie, 0 when a wins; None when the two orders disagree (``details["winner"] == "inconsistent"``)."""

    spec_type = LlmPairwiseGraderSpec
    description = (
        "An LLM judge prefers one of two candidates' outputs, asked in both orders; counted only when both agree."
    )
    is_pairwise = True
    corpus_metrics = True

    async def agrade(self, sample: Sample) -> Score:
        raise TypeError("the pairwise judge compares two outputs: use 'await grader.compare(sample, a, b)'")

    async def compare(self, sample: Sample, output_a: str | None, output_b: str | None) -> Score:
        if output_a is None or output_b is None:
            return Score(value=None, error="both candidates need an output to be compared")
        spec = self.spec

        def messages(first: str, second: str) -> list[dict[str, str]]:
            return pairwise_messages(
                spec.criteria, sample, include_reference=spec.include_reference, first=first, second=second
            )

        results = await asyncio.gather(
            self._judge(messages(output_a, output_b), PAIRWISE_PROMPT_VERSION, parse_winner),
            self._judge(messages(output_b, output_a), PAIRWISE_PROMPT_VERSION, parse_winner),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, GradingError):
                return Score(value=None, error=str(r))
            if isinstance(r, BaseException):
                raise r
        (first, d1), (second, d2) = results  # type: ignore[misc]
        winner = combine_orders(first, second)
        details = {
            "winner": winner,
            "a_first": first,
            "b_first": second,
            "judgements": [d1, d2],
        }
        return Score(value=_B_SCORE.get(winner), details=details)

    def statistics(self, scores: Sequence[Score], samples: Sequence[Sample]) -> SufficientStatistics:
        """Over consistent verdicts only (value set): b's win rate with ties as half, and the share of b wins."""
        _require_graded(scores, samples)
        values = np.array([s.value for s in scores], dtype=np.float64)
        rows = np.column_stack([values, np.ones_like(values), (values == 1.0).astype(np.float64)])
        return SufficientStatistics(
            rows,
            {"b_win_rate": lambda s: s[:, 0] / s[:, 1], "b_strict_win_share": lambda s: s[:, 2] / s[:, 1]},
        )

    def aggregate(self, scores: Sequence[Score], samples: Sequence[Sample]) -> dict[str, Any]:
        winners = [s.details.get("winner") for s in scores if s.error is None]
        counts = {w: winners.count(w) for w in ("a", "b", "tie", "inconsistent")}
        judged = len(winners)
        out: dict[str, Any] = {
            "n": len(scores),
            "n_errors": len(scores) - judged,
            **{f"n_{w}": c for w, c in counts.items()},
            "consistency_rate": (judged - counts["inconsistent"]) / judged if judged else None,
        }
        consistent = [i for i, s in enumerate(scores) if s.value is not None]
        if consistent:
            out.update(self.statistics([scores[i] for i in consistent], [samples[i] for i in consistent]).evaluate())
            # Sign test: among decided (non-tie) verdicts, is b preferred more often than chance?
            sign = mcnemar_test(
                [True] * counts["a"] + [False] * counts["b"], [False] * counts["a"] + [True] * counts["b"]
            )
            out["sign_test_p_value"] = sign.p_value
        return out

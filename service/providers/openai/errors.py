"""What a failed call to an OpenAI-compatible API means, decided once for every caller.

The jobs provider, batch evaluations and realtime generation all ask ``classify`` (an exception) or
``classify_status`` (a status and error body, as a batch output line carries them) and act on the answer:
``retryable`` says the same call may succeed later (after ``retry_after`` seconds when the server said so);
``fatal`` says every further call with this key would fail too (bad key, no quota or billing, no permission, unknown
model, an address our outbound policy refuses), so a run must stop rather than fail request after request. A call
that is neither (a 400 for this one request) fails on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import openai

from service.net import ResponseTooLarge, UrlNotAllowed, is_refusal
from service.providers.base import ProviderError
from service.providers.openai.headers import RateLimitHeaders, parse_retry_after

ErrorKind = Literal[
    "rate_limited",
    "server_error",
    "timeout",
    "connection",
    "bad_request",
    "authentication",
    "permission",
    "not_found",
    "insufficient_quota",
    "refused",
    "bad_response",
    "other",
]

# Error codes that mean the account cannot pay: no wait cures them. OpenAI answers insufficient_quota as a 429, the
# status of a rate limit, so the code decides, not the status.
QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"})
FATAL_STATUS: dict[int, ErrorKind] = {401: "authentication", 403: "permission", 404: "not_found"}
# The SDK's own rule too: a request timeout or a conflict may pass on a second try.
RETRYABLE_4XX = frozenset({408, 409})


@dataclass(frozen=True)
class Classified:
    kind: ErrorKind
    retryable: bool
    fatal: bool
    message: str
    status: int | None = None
    retry_after: float | None = None
    request_id: str | None = None
    code: str | None = None
    param: str | None = None
    rate_limits: RateLimitHeaders | None = None

    @property
    def error_code(self) -> str:
        """A stable machine code: the provider's own when it gave one."""
        if self.code:
            return self.code
        if self.kind in ("timeout", "connection"):
            return "provider_unreachable"
        if self.kind == "refused":
            return "url_not_allowed"
        if self.kind == "bad_response":
            return "provider_bad_response"
        return f"http_{self.status}" if self.status is not None else "provider_error"

    def as_provider_error(self, what: str | None = None, cls: type[ProviderError] = ProviderError, **extra: Any) -> Any:
        """The error the provider interfaces raise: ``transient`` is ``retryable``."""
        return cls(
            f"{what}: {self.message}" if what else self.message,
            transient=self.retryable,
            status_code=self.status,
            code=self.error_code,
            param=self.param,
            retry_after=self.retry_after,
            **extra,
        )


def is_call_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed call that ``classify`` decides about (not a bug of ours)."""
    return isinstance(exc, openai.OpenAIError) or is_refusal(exc) or _too_large(exc) is not None


def _too_large(exc: BaseException) -> ResponseTooLarge | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ResponseTooLarge):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def classify_status(
    status: int,
    *,
    code: str | None = None,
    err_type: str | None = None,
    message: str = "",
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
) -> Classified:
    headers = headers or {}
    kind: ErrorKind
    retryable = fatal = False
    if code in QUOTA_CODES or err_type in QUOTA_CODES:
        kind, fatal = "insufficient_quota", True
    elif status == 429:
        kind, retryable = "rate_limited", True
    elif status in FATAL_STATUS:
        kind, fatal = FATAL_STATUS[status], True
    elif status in RETRYABLE_4XX:
        kind, retryable = "other", True
    elif status >= 500:
        kind, retryable = "server_error", True
    elif 400 <= status < 500:
        kind = "bad_request"
    else:
        kind = "other"
    # The server's explicit word wins for what is not fatal (OpenAI sends x-should-retry).
    should_retry = (headers.get("x-should-retry") or "").strip().lower()
    if not fatal and should_retry in ("true", "false"):
        retryable = should_retry == "true"
    return Classified(
        kind=kind,
        retryable=retryable,
        fatal=fatal,
        message=message or f"HTTP {status}",
        status=status,
        retry_after=parse_retry_after(headers),
        request_id=request_id,
        code=code or None,
        param=param,
        rate_limits=RateLimitHeaders.parse(headers) if headers else None,
    )


def classify(exc: BaseException) -> Classified:
    """The decision for an exception raised by an SDK call (or by the outbound layer under it)."""
    if is_refusal(exc):
        # Our own policy, not the provider: asking again reaches the same refusal. No response text is echoed.
        return Classified("refused", False, True, f"the outbound policy refused the connection: {_refusal_reason(exc)}")
    too_large = _too_large(exc)
    if too_large is not None:
        # The same request would bring the same answer: not worth repeating, but nothing says the key is bad.
        return Classified("bad_response", False, False, f"the provider's answer was too large: {too_large}")
    if isinstance(exc, openai.APITimeoutError):
        return Classified("timeout", True, False, "the provider did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f"{exc}: {cause}" if cause is not None and str(cause) else str(exc)
        return Classified("connection", True, False, f"cannot reach the provider: {detail}")
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        err = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
        return classify_status(
            exc.status_code,
            code=getattr(exc, "code", None) or err.get("code"),
            err_type=getattr(exc, "type", None) or err.get("type"),
            message=str(err.get("message") or exc.message),
            param=getattr(exc, "param", None) or err.get("param"),
            headers=exc.response.headers,
            request_id=exc.request_id,
        )
    if isinstance(exc, openai.APIResponseValidationError):
        return Classified(
            "bad_response", True, False, f"the provider's answer could not be read: {exc}", exc.status_code
        )
    return Classified("other", True, False, f"{type(exc).__name__}: {exc}")


def _refusal_reason(exc: BaseException) -> str:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UrlNotAllowed):
            return str(current)
        current = current.__cause__ or current.__context__
    return str(exc)

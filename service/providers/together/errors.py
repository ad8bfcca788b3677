"""What a failed call to Together's API means, decided once for every Together call.

Together answers errors as ``{"error": {"message", "type", "param", "code"}}`` (``ErrorData`` in its OpenAPI
description), and some routes as a bare ``{"message": ...}``. 429 and 5xx (and 408/409, a request that may pass on a
second try) are transient, after ``Retry-After`` when given; timeouts and broken connections too. Any other 4xx is
fatal for the call and carries Together's message verbatim. A refusal of our outbound policy is never retried.
"""

from __future__ import annotations

from typing import Any

import httpx

from service.net import ResponseTooLarge, is_refusal
from service.net.retry_after import parse_retry_after
from service.providers.base import ProviderError

RETRYABLE_4XX = frozenset({408, 409, 429})


def _body_error(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"message": response.text[:500]} if response.text else {}
    if not isinstance(body, dict):
        return {}
    err = body.get("error", body)
    if isinstance(err, str):
        return {"message": err}
    return err if isinstance(err, dict) else {}


def status_error(response: httpx.Response) -> ProviderError:
    """The error for a non-2xx answer, with Together's message verbatim (a job fails with what Together said)."""
    status = response.status_code
    err = _body_error(response)
    message = str(err.get("message") or f"HTTP {status}")
    transient = status in RETRYABLE_4XX or status >= 500
    code = err.get("code") or err.get("type") or f"http_{status}"
    return ProviderError(
        message,
        transient=transient,
        status_code=status,
        code=str(code),
        param=err.get("param") if isinstance(err.get("param"), str) else None,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def transport_error(exc: BaseException, what: str | None = None) -> ProviderError:
    """The error for a call that got no usable answer (timeout, connection, refused address, oversized body)."""
    prefix = f"{what}: " if what else ""
    if is_refusal(exc):
        return ProviderError(
            f"{prefix}the outbound policy refused the connection: {exc}", transient=False, code="url_not_allowed"
        )
    if isinstance(exc, ResponseTooLarge):
        return ProviderError(
            f"{prefix}the provider's answer was too large: {exc}", transient=False, code="provider_bad_response"
        )
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(
            f"{prefix}the provider did not answer in time", transient=True, code="provider_unreachable"
        )
    return ProviderError(f"{prefix}cannot reach the provider: {exc}", transient=True, code="provider_unreachable")


def is_call_failure(exc: BaseException) -> bool:
    return isinstance(exc, httpx.HTTPError) or is_refusal(exc)

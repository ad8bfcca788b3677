"""The httpx clients every outbound call on a user's behalf goes through (evaluation endpoints, LLM judges,
provider base URLs). Webhook delivery builds its own client on the same transports (it needs no cookies and reads
only an excerpt)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from service.net.policy import OutboundPolicy, outbound_policy
from service.net.transport import DEFAULT_LIMITS, AsyncGuardedTransport, GuardedTransport

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024**2


def _timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    t = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
    phases = {"connect": t.connect, "read": t.read, "write": t.write, "pool": t.pool}
    unset = [name for name, value in phases.items() if value is None or value <= 0]
    if unset:
        # A request without a deadline can hold a worker thread forever on a server that never answers.
        raise ValueError(f"outbound clients need positive timeouts; not set: {', '.join(unset)}")
    return t


def _options(
    timeout: float | httpx.Timeout, max_response_bytes: int | None, headers: Mapping[str, str] | None
) -> dict:
    if max_response_bytes is not None and max_response_bytes < 1:
        raise ValueError("max_response_bytes must be positive (or None for no cap)")
    return {
        "timeout": _timeout(timeout),
        "headers": dict(headers or {}),
        # A redirect could lead anywhere; the transport would check it, but a moved endpoint should be reconfigured.
        "follow_redirects": False,
        # Never HTTP(S)_PROXY / NO_PROXY or netrc from the environment: the proxy would do the connecting unchecked.
        "trust_env": False,
    }


def sync_client(
    *,
    timeout: float | httpx.Timeout,
    max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
    limits: httpx.Limits | None = None,
    headers: Mapping[str, str] | None = None,
    policy: OutboundPolicy | None = None,
) -> httpx.Client:
    """A blocking client for user-supplied destinations. ``policy`` defaults to the settings' (``outbound_policy()``).

    Every connection is resolved, checked and made to the checked address (``OutboundRefused`` otherwise); redirects
    are returned, not followed; a body larger than ``max_response_bytes`` raises ``ResponseTooLarge``.
    """
    options = _options(timeout, max_response_bytes, headers)
    transport = GuardedTransport(
        policy or outbound_policy(), limits=limits or DEFAULT_LIMITS, max_response_bytes=max_response_bytes
    )
    return httpx.Client(transport=transport, **options)


def async_client(
    *,
    timeout: float | httpx.Timeout,
    max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
    limits: httpx.Limits | None = None,
    headers: Mapping[str, str] | None = None,
    policy: OutboundPolicy | None = None,
) -> httpx.AsyncClient:
    """The async twin of ``sync_client``."""
    options = _options(timeout, max_response_bytes, headers)
    transport = AsyncGuardedTransport(
        policy or outbound_policy(), limits=limits or DEFAULT_LIMITS, max_response_bytes=max_response_bytes
    )
    return httpx.AsyncClient(transport=transport, **options)

"""What the outbound layer raises, and one test for "was this a refusal" that sees through SDK wrappers."""

from __future__ import annotations

import ipaddress

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlNotAllowed(ValueError):
    """A URL, or the address it leads to, is refused by the outbound policy. ``reason`` is the human rule."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class OutboundRefused(UrlNotAllowed, httpx.TransportError):
    """A destination we never connect to: an address (loopback, private, metadata, ...) written into the URL or
    resolved from its host when connecting, or a request the policy refuses outright. The message names the host and
    the reason, never a response.

    Also an httpx transport error, so SDKs built on httpx report it as a failed connection (the openai SDK raises
    ``APIConnectionError`` from it) and ``is_refusal`` finds it behind their wrapper.
    """

    def __init__(
        self, message: str, *, host: str | None = None, address: IPAddress | None = None, reason: str | None = None
    ) -> None:
        UrlNotAllowed.__init__(self, message)
        self._request = None  # httpx's request slot, filled in when httpx passes the error on
        self.host, self.address = host, address
        self.reason = reason or message

    @classmethod
    def for_address(cls, host: str, address: IPAddress, reason: str, *, resolved: bool = False) -> OutboundRefused:
        message = f"refused: {reason} address {address}"
        if resolved:
            message += f" (resolved from {host})"
        elif host.strip("[]") != str(address):
            message += f" (written as {host})"
        return cls(message, host=host, address=address, reason=reason)


class HostResolutionError(OSError):
    """The host name did not resolve. Not a refusal: callers treat it like any connection error (retry later)."""


class ResponseTooLarge(httpx.TransportError):
    """The response body is larger than the client's ``max_response_bytes``; it was not buffered. A transport error,
    like a connection broken off mid-body, so SDKs report it as such."""

    def __init__(self, url: str, limit: int, declared: int | None = None) -> None:
        size = f"declares {declared} bytes" if declared is not None else "is larger"
        super().__init__(f"response from {url} {size}; the limit is {limit} bytes")
        self.limit = limit


def is_refusal(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was caused by, a refusal of the outbound policy.

    SDKs wrap transport errors (the openai SDK raises ``APIConnectionError`` from ours), so the chain of
    ``__cause__`` / ``__context__`` is followed, once per exception.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UrlNotAllowed):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False

"""httpx transports whose every connection is resolved, checked and opened to the checked address.

TLS still verifies and sends SNI for the host name, and the Host header is the URL's. Each request's URL is checked
again (scheme, credentials, a written address), so a client reused after a settings change, or a redirect a caller
chooses to follow, cannot reach what the policy refuses. Proxies from the environment are never used.
"""

from __future__ import annotations

import functools
import ssl
import typing
from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.to_thread
import httpcore
import httpx

from service.net.addresses import parse_ip_literal
from service.net.errors import HostResolutionError, IPAddress, OutboundRefused, ResponseTooLarge, UrlNotAllowed
from service.net.policy import OutboundPolicy, check_parsed
from service.net.resolve import Resolver, resolve_checked

# A name with many A/AAAA records must not multiply the connect timeout without bound.
MAX_CONNECT_ADDRESSES = 4
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore network backend that resolves, checks and then connects to the checked IP."""

    def __init__(
        self,
        policy: OutboundPolicy,
        resolver: Resolver | None = None,
        inner: httpcore.NetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = resolve_checked(host, port, self._policy, self._resolver)
        except HostResolutionError as exc:
            raise httpcore.ConnectError(str(exc)) from None
        last: Exception | None = None
        for ip in addresses[:MAX_CONNECT_ADDRESSES]:
            try:
                return self._inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise OutboundRefused("outbound requests never go to unix sockets")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class AsyncGuardedBackend(httpcore.AsyncNetworkBackend):
    """Async twin of GuardedBackend; DNS runs in a worker thread so a slow resolver does not stall the event loop."""

    def __init__(
        self,
        policy: OutboundPolicy,
        resolver: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def _resolve(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:
        if parse_ip_literal(host) is not None:
            return resolve_checked(host, port, self._policy, self._resolver)
        call = functools.partial(resolve_checked, host, port, self._policy, self._resolver)
        try:
            with anyio.fail_after(timeout):
                return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout} s") from None
        except HostResolutionError as exc:
            raise httpcore.ConnectError(str(exc)) from None

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        last: Exception | None = None
        for ip in addresses[:MAX_CONNECT_ADDRESSES]:
            try:
                return await self._inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("outbound requests never go to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


VerifyTypes = ssl.SSLContext | bool


@functools.lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs milliseconds; one verified context is safe to share between clients and threads.
    return httpx.create_ssl_context(verify=True, trust_env=False)


def _ssl_context(verify: VerifyTypes) -> ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        return verify
    return _default_ssl_context() if verify else httpx.create_ssl_context(verify=False, trust_env=False)


def _declared_too_large(response: httpx.Response, limit: int | None) -> int | None:
    if limit is None:
        return None
    try:
        declared = int(response.headers.get("content-length", ""))
    except ValueError:
        return None
    return declared if declared > limit else None


class _CappedStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, limit: int, url: str) -> None:
        self._inner, self._limit, self._url = inner, limit, url

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLarge(self._url, self._limit)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _AsyncCappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, limit: int, url: str) -> None:
        self._inner, self._limit, self._url = inner, limit, url

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLarge(self._url, self._limit)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def _check_request(request: httpx.Request, policy: OutboundPolicy) -> None:
    try:
        check_parsed(request.url, policy)
    except OutboundRefused:
        raise
    except UrlNotAllowed as exc:
        raise OutboundRefused(str(exc), host=request.url.host) from None


def _origin(url: httpx.URL) -> str:
    # Error messages name where the answer came from, not its path or query (which may carry ids or keys).
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


class GuardedTransport(httpx.HTTPTransport):
    """httpx transport whose connections go through GuardedBackend, with an optional cap on response bodies."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        resolver: Resolver | None = None,
        verify: VerifyTypes = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
        max_response_bytes: int | None = None,
    ) -> None:
        # HTTPTransport.__init__ only builds its pool; we reuse its request and exception mapping with our own pool.
        self._policy = policy
        self._max_response_bytes = max_response_bytes
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, resolver),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        _check_request(request, self._policy)
        response = super().handle_request(request)
        limit = self._max_response_bytes
        if limit is None:
            return response
        declared = _declared_too_large(response, limit)
        if declared is not None:
            response.close()
            raise ResponseTooLarge(_origin(request.url), limit, declared)
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _CappedStream(response.stream, limit, _origin(request.url))
        return response


class AsyncGuardedTransport(httpx.AsyncHTTPTransport):
    """Async twin of GuardedTransport."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        resolver: Resolver | None = None,
        verify: VerifyTypes = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
        max_response_bytes: int | None = None,
    ) -> None:
        self._policy = policy
        self._max_response_bytes = max_response_bytes
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=AsyncGuardedBackend(policy, resolver),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _check_request(request, self._policy)
        response = await super().handle_async_request(request)
        limit = self._max_response_bytes
        if limit is None:
            return response
        declared = _declared_too_large(response, limit)
        if declared is not None:
            await response.aclose()
            raise ResponseTooLarge(_origin(request.url), limit, declared)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _AsyncCappedStream(response.stream, limit, _origin(request.url))
        return response

"""One webhook POST and what came of it: success, retry later, gone for good, or refused by the outbound policy.

Nothing here knows about endpoints, events or the database; the caller records the ``DeliveryOutcome`` and asks
``schedule`` when to try again. Redirects are never followed (a receiver could bounce us to an internal address, and a
moved endpoint should be re-registered), responses are read only as far as the 2 KB excerpt, and cookies are never
kept between deliveries.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import http.cookiejar
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import httpx

from service.net import AsyncGuardedTransport, GuardedTransport, OutboundPolicy, Resolver, UrlNotAllowed, check_url
from service.net.retry_after import parse_retry_after
from service.net.transport import VerifyTypes

EXCERPT_BYTES = 2048
MAX_ERROR_CHARS = 500
DEFAULT_TIMEOUT_S = 15.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
USER_AGENT = "finetune-control-plane-webhooks/1"


class Disposition(StrEnum):
    SUCCESS = "success"  # 2xx: done
    RETRY = "retry"  # 3xx, 4xx other than 410, 5xx, timeouts, connection errors: try again on the schedule
    GONE = "gone"  # 410: the receiver asks us to stop; disable the endpoint
    REFUSED = "refused"  # the outbound policy blocked the URL or its address; nothing was sent


@dataclass(frozen=True)
class DeliveryOutcome:
    disposition: Disposition
    duration_ms: int
    status_code: int | None = None
    response_excerpt: str | None = None
    error: str | None = None
    retry_after_s: float | None = None
    remote_address: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.disposition is Disposition.SUCCESS


@dataclass(frozen=True)
class OutgoingWebhook:
    url: str
    headers: Mapping[str, str]
    body: bytes


def decode_excerpt(raw: bytes, charset: str | None = None) -> str:
    """Bytes of a response as text that is safe to store: undecodable bytes and NULs become U+FFFD."""
    try:
        decoder = codecs.getincrementaldecoder(charset or "utf-8")(errors="replace")
    except LookupError:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    # final=False drops a multi-byte character cut in half by the excerpt limit instead of garbling it.
    return decoder.decode(raw, final=False).replace("\x00", "\ufffd")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _elapsed_ms(start: float) -> int:
    return max(0, round((time.perf_counter() - start) * 1000))


def _error_text(exc: Exception, timeout: float, connect_timeout: float) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connect timed out after {connect_timeout:g} s"
    if isinstance(exc, httpx.ReadTimeout):
        return f"no response within {timeout:g} s"
    if isinstance(exc, httpx.WriteTimeout):
        return f"sending the body took longer than {timeout:g} s"
    if isinstance(exc, httpx.PoolTimeout):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, httpx.ConnectError):
        return _clip(f"connection failed: {exc}")
    if isinstance(exc, httpx.RemoteProtocolError):
        return _clip(f"protocol error: {exc}")
    return _clip(f"{type(exc).__name__}: {exc}")


def _remote_address(response: httpx.Response) -> str | None:
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    try:
        addr = stream.get_extra_info("server_addr")
    except OSError:  # the receiver already closed the socket
        return None
    return str(addr[0]) if addr else None


def _classify(response: httpx.Response, raw_excerpt: bytes, duration_ms: int, remote: str | None) -> DeliveryOutcome:
    status = response.status_code
    excerpt = decode_excerpt(raw_excerpt, response.charset_encoding)
    if 200 <= status < 300:
        return DeliveryOutcome(Disposition.SUCCESS, duration_ms, status, excerpt, remote_address=remote)
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status == 410:
        error = "HTTP 410 Gone: the receiver asked us to stop"
        return DeliveryOutcome(Disposition.GONE, duration_ms, status, excerpt, error, retry_after, remote)
    if 300 <= status < 400:
        location = response.headers.get("location", "")
        error = _clip(f"redirect not followed: HTTP {status} to {location or '(no location)'}")
    else:
        error = f"HTTP {status} {response.reason_phrase}".rstrip()
    return DeliveryOutcome(Disposition.RETRY, duration_ms, status, excerpt, error, retry_after, remote)


def _refused(exc: UrlNotAllowed, start: float) -> DeliveryOutcome:
    return DeliveryOutcome(Disposition.REFUSED, _elapsed_ms(start), error=_clip(str(exc)))


def _request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    out = dict(headers)
    # Compressed responses could expand far beyond the excerpt we read; ask for the plain bytes.
    out.setdefault("accept-encoding", "identity")
    return out


def _no_cookies() -> http.cookiejar.CookieJar:
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def _timeouts(timeout: float, connect_timeout: float) -> httpx.Timeout:
    if timeout <= 0 or connect_timeout <= 0:
        raise ValueError("webhook timeouts must be positive")
    return httpx.Timeout(timeout, connect=min(connect_timeout, timeout))


class WebhookSender:
    """Blocking sender with one connection pool, safe to share between threads."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
        resolver: Resolver | None = None,
        verify: VerifyTypes = True,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.policy = policy
        self._timeout = timeout
        self._connect_timeout = min(connect_timeout, timeout)
        self._client = httpx.Client(
            transport=GuardedTransport(policy, resolver=resolver, verify=verify),
            timeout=_timeouts(timeout, connect_timeout),
            follow_redirects=False,
            trust_env=False,
            cookies=_no_cookies(),
            headers={"user-agent": user_agent},
        )

    def send(self, url: str, headers: Mapping[str, str], body: bytes) -> DeliveryOutcome:
        start = time.perf_counter()
        try:
            target = check_url(url, self.policy)
        except UrlNotAllowed as exc:
            return _refused(exc, start)
        deadline = start + self._connect_timeout + self._timeout
        try:
            with self._client.stream("POST", target.url, headers=_request_headers(headers), content=body) as response:
                remote = _remote_address(response)
                raw = self._read_excerpt(response, deadline)
                return _classify(response, raw, _elapsed_ms(start), remote)
        except UrlNotAllowed as exc:
            return _refused(exc, start)
        except httpx.HTTPError as exc:
            return DeliveryOutcome(
                Disposition.RETRY, _elapsed_ms(start), error=_error_text(exc, self._timeout, self._connect_timeout)
            )

    @staticmethod
    def _read_excerpt(response: httpx.Response, deadline: float) -> bytes:
        # The status decides the outcome; the body is only for the delivery log, so a receiver that trickles or
        # breaks off its body costs at most the deadline and never turns a 2xx into a failure.
        buf = bytearray()
        try:
            for chunk in response.iter_raw():
                buf += chunk
                if len(buf) >= EXCERPT_BYTES or time.perf_counter() > deadline:
                    break
        except httpx.HTTPError:
            pass
        return bytes(buf[:EXCERPT_BYTES])

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@functools.lru_cache(maxsize=8)
def _shared_sender(policy: OutboundPolicy, timeout: float, connect_timeout: float, pid: int) -> WebhookSender:
    # Keyed by pid: a pool inherited through fork (Celery prefork) would share sockets between processes.
    return WebhookSender(policy, timeout=timeout, connect_timeout=connect_timeout)


def send(
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    policy: OutboundPolicy | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> DeliveryOutcome:
    """Deliver one webhook through a per-process shared sender (keep-alive across calls).

    ``policy`` defaults to the strict one (https, public addresses only).
    """
    sender = _shared_sender(policy or OutboundPolicy(), timeout, connect_timeout, os.getpid())
    return sender.send(url, headers, body)


class _HostSlots:
    """Per-host semaphores, dropped when no delivery uses them so the map does not grow with every host ever seen."""

    def __init__(self, per_host: int) -> None:
        self._per_host = per_host
        self._slots: dict[str, tuple[asyncio.Semaphore, int]] = {}

    def acquire_ref(self, host: str) -> asyncio.Semaphore:
        sem, users = self._slots.get(host, (None, 0))
        if sem is None:
            sem = asyncio.Semaphore(self._per_host)
        self._slots[host] = (sem, users + 1)
        return sem

    def release_ref(self, host: str) -> None:
        sem, users = self._slots[host]
        if users <= 1:
            del self._slots[host]
        else:
            self._slots[host] = (sem, users - 1)

    def __len__(self) -> int:
        return len(self._slots)


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that tells its pool when it is closed, so idle pools can be told from busy ones."""

    def __init__(self, inner: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if self._release is not None:
                self._release()
                self._release = None


@dataclass
class _Pool:
    transport: httpx.AsyncBaseTransport
    in_flight: int = 0


class PerHostAsyncTransport(httpx.AsyncBaseTransport):
    """One small connection pool per origin behind one client.

    httpcore matches queued requests to connections by scanning the whole pool, which grows with the square of the
    pool size; a pool per origin keeps each scan to a handful of connections and caps connections per host exactly.
    Idle pools beyond ``max_pools`` are closed, least recently used first.
    """

    def __init__(self, make_pool: Callable[[], httpx.AsyncBaseTransport], *, max_pools: int = 512) -> None:
        self._make_pool = make_pool
        self._max_pools = max_pools
        self._pools: OrderedDict[tuple[str, str, int | None], _Pool] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = (request.url.scheme, request.url.host, request.url.port)
        pool = self._pools.get(key)
        if pool is None:
            # Counted as busy before evicting, so the new pool is never the one closed.
            pool = self._pools[key] = _Pool(self._make_pool(), in_flight=1)
            await self._evict_idle()
        else:
            self._pools.move_to_end(key)
            pool.in_flight += 1

        def release() -> None:
            pool.in_flight -= 1

        try:
            response = await pool.transport.handle_async_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _ReleasingStream(response.stream, release)
        return response

    async def _evict_idle(self) -> None:
        for key in list(self._pools):
            if len(self._pools) <= self._max_pools:
                return
            pool = self._pools[key]
            if pool.in_flight == 0:
                del self._pools[key]
                await pool.transport.aclose()

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.transport.aclose()


class AsyncWebhookSender:
    """Delivers many webhooks at once over one AsyncClient.

    ``per_host_limit`` caps the concurrent requests to one host so a slow or hanging receiver holds at most that many
    of the ``max_concurrency`` slots; every other host keeps its own slots and is not delayed by it.
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_concurrency: int = 64,
        per_host_limit: int = 8,
        resolver: Resolver | None = None,
        verify: VerifyTypes = True,
        user_agent: str = USER_AGENT,
    ) -> None:
        if max_concurrency < 1 or per_host_limit < 1:
            raise ValueError("max_concurrency and per_host_limit must be at least 1")
        self.policy = policy
        self._timeout = timeout
        self._connect_timeout = min(connect_timeout, timeout)
        self._global = asyncio.Semaphore(max_concurrency)
        self._hosts = _HostSlots(per_host_limit)
        limits = httpx.Limits(
            max_connections=per_host_limit, max_keepalive_connections=per_host_limit, keepalive_expiry=30
        )
        self.transport = PerHostAsyncTransport(
            lambda: AsyncGuardedTransport(policy, resolver=resolver, verify=verify, limits=limits)
        )
        self._client = httpx.AsyncClient(
            transport=self.transport,
            timeout=_timeouts(timeout, connect_timeout),
            follow_redirects=False,
            trust_env=False,
            cookies=_no_cookies(),
            headers={"user-agent": user_agent},
        )

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> DeliveryOutcome:
        start = time.perf_counter()
        try:
            target = check_url(url, self.policy)
        except UrlNotAllowed as exc:
            return _refused(exc, start)
        host_key = f"{target.host}:{target.port}"
        host_slot = self._hosts.acquire_ref(host_key)
        try:
            # Host slot first: deliveries queued behind a slow host must not sit on global slots while they wait.
            async with host_slot, self._global:
                return await self._post(target.url, headers, body)
        finally:
            self._hosts.release_ref(host_key)

    async def _post(self, url: str, headers: Mapping[str, str], body: bytes) -> DeliveryOutcome:
        start = time.perf_counter()
        # httpx timeouts are per phase; this bounds the whole exchange, including a receiver trickling its headers.
        budget = self._connect_timeout + self._timeout
        try:
            async with asyncio.timeout(budget):
                request = self._client.build_request("POST", url, headers=_request_headers(headers), content=body)
                response = await self._client.send(request, stream=True)
        except UrlNotAllowed as exc:
            return _refused(exc, start)
        except TimeoutError:
            return DeliveryOutcome(Disposition.RETRY, _elapsed_ms(start), error=f"no response within {budget:g} s")
        except httpx.HTTPError as exc:
            return DeliveryOutcome(
                Disposition.RETRY, _elapsed_ms(start), error=_error_text(exc, self._timeout, self._connect_timeout)
            )
        remote = _remote_address(response)
        try:
            raw = await self._read_excerpt(response, start + budget)
        finally:
            await response.aclose()
        return _classify(response, raw, _elapsed_ms(start), remote)

    @staticmethod
    async def _read_excerpt(response: httpx.Response, deadline: float) -> bytes:
        buf = bytearray()
        remaining = max(0.0, deadline - time.perf_counter())
        try:
            async with asyncio.timeout(remaining):
                async for chunk in response.aiter_raw():
                    buf += chunk
                    if len(buf) >= EXCERPT_BYTES:
                        break
        except (httpx.HTTPError, TimeoutError):
            pass
        return bytes(buf[:EXCERPT_BYTES])

    async def deliver_many(self, messages: Iterable[OutgoingWebhook]) -> list[DeliveryOutcome]:
        """Send all concurrently (within the limits); outcomes in the order of ``messages``."""
        return list(await asyncio.gather(*(self.send(m.url, m.headers, m.body) for m in messages)))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AsyncWebhookSender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

"""Server-side request forgery guard for outgoing webhooks.

A webhook URL is chosen by a client, and the service POSTs to it from inside our network. Two layers stop that from
reaching internal services:

1. ``check_url`` (at registration and before each delivery): scheme, credentials, port, and any IP written into the
   URL, in every spelling ``inet_aton`` accepts (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``).
2. ``GuardedBackend`` / ``AsyncGuardedBackend`` (at every new connection): the host is resolved, every resolved
   address is checked, and the socket is opened to one of those checked addresses. Resolving once and connecting to
   the result is what defeats DNS rebinding (a name that answers a public address to the check and a private one to
   the connect). TLS still verifies and sends SNI for the hostname, and the Host header is the URL's.

The allowlist (CIDRs or hostnames, ``*.suffix`` allowed) opens chosen internal targets, e.g. local test receivers.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import ssl
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

import anyio
import anyio.to_thread
import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[IPAddress]]

MAX_URL_LENGTH = 2000
# A name with many A/AAAA records must not multiply the connect timeout without bound.
MAX_CONNECT_ADDRESSES = 4


class SsrfError(ValueError):
    """A webhook URL or its destination is refused by the SSRF policy."""


class UrlPolicyError(SsrfError):
    """The URL itself is not acceptable (scheme, credentials, port, syntax, a blocked host name)."""


class BlockedAddressError(SsrfError):
    """The URL names or resolves to an address we never connect to (loopback, private, metadata, ...)."""

    def __init__(self, host: str, address: IPAddress, reason: str, *, resolved: bool = False) -> None:
        self.host = host
        self.address = address
        self.reason = reason
        message = f"refused: {reason} address {address}"
        if resolved:
            message += f" (resolved from {host})"
        elif host.strip("[]") != str(address):
            message += f" (written as {host})"
        super().__init__(message)


class HostResolutionError(SsrfError):
    """The host name did not resolve; a delivery treats this like a connection error (retry later)."""


def _v4(cidr: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(cidr)


def _v6(cidr: str) -> ipaddress.IPv6Network:
    return ipaddress.IPv6Network(cidr)


# Cloud instance metadata services: the classic SSRF prize, named separately for a clearer refusal.
_METADATA: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS pod identity
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server (a public-looking address)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
    )
)

# Written out instead of relying on ipaddress.is_private/is_global, whose tables changed between 3.11 patch releases.
_V4_BLOCKED: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_v4("0.0.0.0/8"), "unspecified ('this network')"),
    (_v4("10.0.0.0/8"), "private"),
    (_v4("100.64.0.0/10"), "shared (carrier-grade NAT)"),
    (_v4("127.0.0.0/8"), "loopback"),
    (_v4("169.254.0.0/16"), "link-local"),
    (_v4("172.16.0.0/12"), "private"),
    (_v4("192.0.0.0/24"), "IETF protocol assignment"),
    (_v4("192.0.2.0/24"), "documentation"),
    (_v4("192.88.99.0/24"), "6to4 relay anycast"),
    (_v4("192.168.0.0/16"), "private"),
    (_v4("198.18.0.0/15"), "benchmarking"),
    (_v4("198.51.100.0/24"), "documentation"),
    (_v4("203.0.113.0/24"), "documentation"),
    (_v4("224.0.0.0/4"), "multicast"),
    (_v4("255.255.255.255/32"), "broadcast"),
    (_v4("240.0.0.0/4"), "reserved"),
)

_V6_BLOCKED: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_v6("::/128"), "unspecified"),
    (_v6("::1/128"), "loopback"),
    (_v6("::/96"), "IPv4-compatible (deprecated)"),
    (_v6("64:ff9b:1::/48"), "local-use NAT64 (private)"),
    (_v6("100::/64"), "discard-only"),
    (_v6("2001::/32"), "Teredo tunnel"),
    (_v6("2001:10::/28"), "ORCHID (reserved)"),
    (_v6("2001:20::/28"), "ORCHIDv2 (reserved)"),
    (_v6("2001:db8::/32"), "documentation"),
    (_v6("3fff::/20"), "documentation"),
    (_v6("5f00::/16"), "segment routing (reserved)"),
    (_v6("fc00::/7"), "private (unique local)"),
    (_v6("fe80::/10"), "link-local"),
    (_v6("fec0::/10"), "site-local (deprecated)"),
    (_v6("ff00::/8"), "multicast"),
)

_NAT64 = _v6("64:ff9b::/96")
_IPV4_TRANSLATED = _v6("::ffff:0:0:0/96")


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """An IPv4 address this IPv6 address reaches (mapped, translated, NAT64, 6to4), with the embedding's name."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _IPV4_TRANSLATED or ip in _NAT64:
        return ("IPv4-translated" if ip in _IPV4_TRANSLATED else "NAT64"), ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    return None


def _without_scope(ip: IPAddress) -> IPAddress:
    # fe80::1%eth0 and fe80::1 are the same address for every check; scope ids only confuse set membership.
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return ipaddress.IPv6Address(int(ip))
    return ip


def blocked_reason(ip: IPAddress) -> str | None:
    """Why we never connect to ``ip`` (e.g. ``"loopback"``), or None when it is a public unicast address."""
    ip = _without_scope(ip)
    if ip in _METADATA:
        return "cloud metadata"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            kind, v4 = embedded
            inner = blocked_reason(v4)
            return f"{kind} {inner}" if inner else None
        for net, reason in _V6_BLOCKED:
            if ip in net:
                return reason
    else:
        for net4, reason in _V4_BLOCKED:
            if ip in net4:
                return reason
    if not ip.is_global:
        return "not globally routable"
    return None


_INET_ATON_PART = re.compile(r"^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$")


def _parse_inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """IPv4 in any form the C library's inet_aton (and so getaddrinfo) accepts: 1-4 parts, decimal/octal/hex."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_INET_ATON_PART.match(p) for p in parts):
        return None
    values = []
    for p in parts:
        if p[:2].lower() == "0x":
            values.append(int(p[2:], 16))
        elif len(p) > 1 and p[0] == "0":
            values.append(int(p, 8))
        else:
            values.append(int(p))
    # The last part fills every remaining byte: "127.1" is 127.0.0.1, "2130706433" is 127.0.0.1.
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = 0
    for v in head:
        number = (number << 8) | v
    number = (number << (8 * (4 - len(head)))) | last
    return ipaddress.IPv4Address(number)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a URL host denotes without DNS: IPv6 (brackets and zone ids allowed) or any inet_aton IPv4 form."""
    text = unquote(host.strip())
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    return _parse_inet_aton(text)


_HOSTNAME_ENTRY = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$")


def _normalise_hostname(host: str) -> str:
    return host.strip().lower().rstrip(".")


@dataclass(frozen=True)
class SsrfPolicy:
    """What deliveries may reach. The default is the strict production policy: https only, public addresses only."""

    allow_http: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def from_allowlist(cls, entries: Iterable[str] = (), *, allow_http: bool = False) -> SsrfPolicy:
        """Build from setting values: each entry a CIDR or address (``127.0.0.0/8``, ``::1``) or a host name
        (``hooks.internal``, ``*.svc.cluster.local``). Raises ValueError naming a malformed entry."""
        networks: list[IPNetwork] = []
        hosts: list[str] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = _normalise_hostname(entry)
            if not _HOSTNAME_ENTRY.match(name) or parse_ip_literal(name) is not None:
                raise ValueError(f"webhook allowlist entry {raw!r} is neither a CIDR nor a host name")
            hosts.append(name)
        return cls(allow_http=allow_http, allowed_networks=tuple(networks), allowed_hosts=tuple(hosts))

    def host_allowed(self, host: str) -> bool:
        name = _normalise_hostname(host)
        for entry in self.allowed_hosts:
            if entry.startswith("*."):
                if name.endswith(entry[1:]):
                    return True
            elif name == entry:
                return True
        return False

    def address_allowed(self, ip: IPAddress) -> bool:
        ip = _without_scope(ip)
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and (embedded := _embedded_v4(ip)) is not None:
            candidates.append(embedded[1])
        return any(c.version == net.version and c in net for c in candidates for net in self.allowed_networks)

    def check_address(self, ip: IPAddress, host: str | None = None, *, resolved: bool = False) -> None:
        """Raise BlockedAddressError unless ``ip`` is public or allowlisted (``host``: how the URL named it)."""
        if self.address_allowed(ip):
            return
        reason = blocked_reason(ip)
        if reason is not None:
            raise BlockedAddressError(host or str(ip), ip, reason, resolved=resolved)


@dataclass(frozen=True)
class WebhookTarget:
    """A URL that passed ``check_url``: ``url`` is the normalised form to store and send to."""

    url: str
    scheme: str
    host: str
    port: int
    ip: IPAddress | None


def check_url(url: str, policy: SsrfPolicy) -> WebhookTarget:
    """Static checks of a webhook URL, without DNS. Raises UrlPolicyError or BlockedAddressError with the reason."""
    if not isinstance(url, str) or not url.strip():
        raise UrlPolicyError("webhook URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise UrlPolicyError(f"webhook URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url.strip()):
        raise UrlPolicyError("webhook URL contains whitespace or control characters")
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, ValueError) as exc:
        raise UrlPolicyError(f"webhook URL is not valid: {exc}") from None
    scheme = parsed.scheme
    if scheme not in ("https", "http"):
        raise UrlPolicyError(f"webhook URL scheme must be https, not {scheme or 'missing'!r}")
    if scheme == "http" and not policy.allow_http:
        raise UrlPolicyError("webhook URL must use https (plain http is disabled on this server)")
    if parsed.userinfo:
        raise UrlPolicyError("webhook URL must not contain credentials (user:password@)")
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise UrlPolicyError("webhook URL has no host")
    port = parsed.port if parsed.port is not None else (443 if scheme == "https" else 80)
    if not 1 <= port <= 65535:
        raise UrlPolicyError(f"webhook URL port {port} is out of range")
    ip = parse_ip_literal(host)
    if ip is not None:
        policy.check_address(ip, host)
    elif not policy.host_allowed(host):
        name = _normalise_hostname(host)
        if name == "localhost" or name.endswith(".localhost"):
            raise UrlPolicyError(f"webhook URL host {host!r} is a loopback name")
    return WebhookTarget(url=str(parsed), scheme=scheme, host=host, port=port, ip=ip)


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Addresses for ``host`` from the system resolver (getaddrinfo), in its preference order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    out: list[IPAddress] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(sockaddr[0])
        if ip not in out:
            out.append(ip)
    return out


def resolve_checked(host: str, port: int, policy: SsrfPolicy, resolver: Resolver = system_resolver) -> list[IPAddress]:
    """Resolve ``host`` and check every address; connect only to what this returns.

    One bad address refuses the whole name: an attacker controlling DNS could otherwise mix a public record with an
    internal one and let ordering decide. Raises BlockedAddressError or HostResolutionError.
    """
    literal = parse_ip_literal(host)
    if literal is not None:
        policy.check_address(literal, host)
        return [literal]
    try:
        addresses = list(resolver(host, port))
    except (OSError, UnicodeError) as exc:
        raise HostResolutionError(f"could not resolve {host}: {exc}") from None
    if not addresses:
        raise HostResolutionError(f"could not resolve {host}: no addresses")
    if not policy.host_allowed(host):
        for ip in addresses:
            policy.check_address(ip, host, resolved=True)
    return addresses


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore network backend that resolves, checks and then connects to the checked IP."""

    def __init__(
        self, policy: SsrfPolicy, resolver: Resolver = system_resolver, inner: httpcore.NetworkBackend | None = None
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
        raise UrlPolicyError("webhooks are never delivered to unix sockets")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class AsyncGuardedBackend(httpcore.AsyncNetworkBackend):
    """Async twin of GuardedBackend; DNS runs in a worker thread so a slow resolver does not stall the event loop."""

    def __init__(
        self,
        policy: SsrfPolicy,
        resolver: Resolver = system_resolver,
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
        raise UrlPolicyError("webhooks are never delivered to unix sockets")

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


class GuardedTransport(httpx.HTTPTransport):
    """httpx transport whose connections go through GuardedBackend. Never uses proxies from the environment."""

    def __init__(
        self,
        policy: SsrfPolicy,
        *,
        resolver: Resolver = system_resolver,
        verify: VerifyTypes = True,
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30),
    ) -> None:
        # HTTPTransport.__init__ only builds its pool; we reuse its request and exception mapping with our own pool.
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, resolver),
        )


class AsyncGuardedTransport(httpx.AsyncHTTPTransport):
    """Async twin of GuardedTransport."""

    def __init__(
        self,
        policy: SsrfPolicy,
        *,
        resolver: Resolver = system_resolver,
        verify: VerifyTypes = True,
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30),
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=AsyncGuardedBackend(policy, resolver),
        )

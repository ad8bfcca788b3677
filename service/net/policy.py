"""The outbound policy: what the service may dial on a user's behalf, and the static check of a URL against it.

The default is strict: https only, public unicast addresses only. An operator opens chosen internal targets with
``FINETUNE_OUTBOUND_ALLOWLIST`` (CIDRs or host names, ``*.suffix`` allowed) and plain http with
``FINETUNE_OUTBOUND_ALLOW_HTTP``. URLs the operator configured in settings (``FINETUNE_*_BASE_URL``) are trusted as
they are: their origin (host and port) is reachable without being listed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from service.net.addresses import IPNetwork, blocked_reason, embedded_v4, parse_ip_literal, without_scope
from service.net.errors import IPAddress, OutboundRefused, UrlNotAllowed

if TYPE_CHECKING:
    from service.settings import Settings

MAX_URL_LENGTH = 2000

_HOSTNAME_ENTRY = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$")


def normalise_host(host: str) -> str:
    """The form hosts are compared in: lower case, no trailing dot, an IP literal in its canonical spelling."""
    ip = parse_ip_literal(host)
    if ip is not None:
        return str(without_scope(ip))
    return host.strip().lower().rstrip(".")


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


@dataclass(frozen=True)
class OutboundPolicy:
    """What outbound requests may reach. The default is the strict production policy."""

    allow_http: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    # (host, port) of URLs the operator configured; trusted whatever they resolve to, over http too.
    trusted_origins: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_allowlist(
        cls, entries: Iterable[str] = (), *, allow_http: bool = False, trusted_urls: Iterable[str] = ()
    ) -> OutboundPolicy:
        """Build from setting values: each entry a CIDR or address (``127.0.0.0/8``, ``::1``) or a host name
        (``models.internal``, ``*.svc.cluster.local``). Raises ValueError naming a malformed entry."""
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
            name = entry.lower().rstrip(".")
            if not _HOSTNAME_ENTRY.match(name) or parse_ip_literal(name) is not None:
                raise ValueError(f"outbound allowlist entry {raw!r} is neither a CIDR nor a host name")
            hosts.append(name)
        origins: list[tuple[str, int]] = []
        for url in trusted_urls:
            try:
                parsed = httpx.URL(url.strip())
            except (httpx.InvalidURL, ValueError):
                continue  # the component that uses it reports a malformed URL; nothing to trust here
            if parsed.scheme in ("http", "https") and parsed.host:
                host = normalise_host(parsed.raw_host.decode("ascii"))
                origins.append((host, parsed.port or _default_port(parsed.scheme)))
        return cls(
            allow_http=allow_http,
            allowed_networks=tuple(networks),
            allowed_hosts=tuple(hosts),
            trusted_origins=tuple(origins),
        )

    def host_allowed(self, host: str) -> bool:
        name = normalise_host(host)
        for entry in self.allowed_hosts:
            if entry.startswith("*."):
                if name.endswith(entry[1:]):
                    return True
            elif name == entry:
                return True
        return False

    def origin_trusted(self, host: str, port: int) -> bool:
        return (normalise_host(host), port) in self.trusted_origins

    def address_allowed(self, ip: IPAddress) -> bool:
        ip = without_scope(ip)
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and (embedded := embedded_v4(ip)) is not None:
            candidates.append(embedded[1])
        return any(c.version == net.version and c in net for c in candidates for net in self.allowed_networks)

    def check_address(self, ip: IPAddress, host: str | None = None, *, resolved: bool = False) -> None:
        """Raise OutboundRefused unless ``ip`` is public or allowlisted (``host``: how the URL named it)."""
        if self.address_allowed(ip):
            return
        reason = blocked_reason(ip)
        if reason is not None:
            raise OutboundRefused.for_address(host or str(ip), ip, reason, resolved=resolved)


@dataclass(frozen=True)
class Target:
    """A URL that passed ``check_url``: ``url`` is the normalised form to store and send to."""

    url: str
    scheme: str
    host: str
    port: int
    ip: IPAddress | None


def check_parsed(parsed: httpx.URL, policy: OutboundPolicy) -> Target:
    """The checks of a parsed URL that hold for every request: scheme, credentials, port, a written address."""
    scheme = parsed.scheme
    if scheme not in ("https", "http"):
        raise UrlNotAllowed(f"URL scheme must be https, not {scheme or 'missing'!r}")
    if parsed.userinfo:
        raise UrlNotAllowed("URL must not contain credentials (user:password@)")
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise UrlNotAllowed("URL has no host")
    port = parsed.port if parsed.port is not None else _default_port(scheme)
    if not 1 <= port <= 65535:
        raise UrlNotAllowed(f"URL port {port} is out of range")
    ip = parse_ip_literal(host)
    target = Target(url=str(parsed), scheme=scheme, host=host, port=port, ip=ip)
    if policy.origin_trusted(host, port):
        return target
    if scheme == "http" and not policy.allow_http:
        raise UrlNotAllowed("URL must use https (plain http is disabled on this server)")
    if ip is not None:
        policy.check_address(ip, host)
    elif not policy.host_allowed(host):
        name = normalise_host(host)
        if name == "localhost" or name.endswith(".localhost"):
            raise UrlNotAllowed(f"URL host {host!r} is a loopback name")
    return target


def check_url(url: str, policy: OutboundPolicy | None = None) -> Target:
    """Static checks of a URL, without DNS (that happens at every connection). Raises UrlNotAllowed with the reason.

    ``policy`` defaults to the one the settings describe (``outbound_policy()``).
    """
    if policy is None:
        policy = outbound_policy()
    if not isinstance(url, str) or not url.strip():
        raise UrlNotAllowed("URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise UrlNotAllowed(f"URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url.strip()):
        raise UrlNotAllowed("URL contains whitespace or control characters")
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, ValueError) as exc:
        raise UrlNotAllowed(f"URL is not valid: {exc}") from None
    return check_parsed(parsed, policy)


def operator_urls(settings: Settings) -> list[str]:
    """Base URLs set in the server's own configuration (``FINETUNE_OPENAI_BASE_URL`` and any other ``*_base_url``
    setting a provider adds): the operator chose them, so the policy trusts them without an allowlist entry."""
    urls = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if name.endswith("_base_url") and isinstance(value, str) and value.strip():
            urls.append(value)
    return urls


def outbound_policy(settings: Settings | None = None) -> OutboundPolicy:
    """The policy the settings describe (``get_settings()`` when none are given)."""
    if settings is None:
        from service.settings import get_settings

        settings = get_settings()
    return OutboundPolicy.from_allowlist(
        [*settings.outbound_allowlist, *settings.webhook_allowlist],
        allow_http=settings.outbound_allow_http or settings.webhook_allow_http,
        trusted_urls=operator_urls(settings),
    )


def allowed_url(url: str, *, field: str, policy: OutboundPolicy | None = None) -> str:
    """``url`` normalised if the policy allows it; otherwise the 422 problem ``url_not_allowed`` naming ``field``
    (its JSON path in the request, e.g. ``candidates.1.base_url``). For every route that takes a URL.

    A host name is resolved too, so a name that points inside the network is refused when it is given rather than
    when it is first dialled. A name that does not resolve (yet) is accepted: the connection checks it again anyway.
    """
    from service.errors import InvalidInput
    from service.net.resolve import resolve_briefly

    policy = policy if policy is not None else outbound_policy()
    try:
        target = check_url(url, policy)
        if target.ip is None:
            resolve_briefly(target.host, target.port, policy)
    except UrlNotAllowed as exc:
        raise InvalidInput(
            f"{field} is not allowed: {exc}",
            code="url_not_allowed",
            errors=[{"code": "url_not_allowed", "message": str(exc), "field": field}],
        ) from None
    return target.url

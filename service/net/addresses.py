"""Which IP addresses the service never connects to on a user's behalf, and every way a URL can spell one."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote

from service.net.errors import IPAddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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


def embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """An IPv4 address this IPv6 address reaches (mapped, translated, NAT64, 6to4), with the embedding's name."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _IPV4_TRANSLATED or ip in _NAT64:
        return ("IPv4-translated" if ip in _IPV4_TRANSLATED else "NAT64"), ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    return None


def without_scope(ip: IPAddress) -> IPAddress:
    # fe80::1%eth0 and fe80::1 are the same address for every check; scope ids only confuse set membership.
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return ipaddress.IPv6Address(int(ip))
    return ip


def blocked_reason(ip: IPAddress) -> str | None:
    """Why we never connect to ``ip`` (e.g. ``"loopback"``), or None when it is a public unicast address."""
    ip = without_scope(ip)
    if ip in _METADATA:
        return "cloud metadata"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = embedded_v4(ip)
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

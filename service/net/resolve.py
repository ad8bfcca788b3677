"""Resolving a host for a connection and checking every address it resolved to.

Resolving once and connecting to the checked result is what defeats DNS rebinding (a name that answers a public
address to a check and a private one to the connect): the transport never lets the socket layer resolve again.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Sequence

from service.net.addresses import parse_ip_literal
from service.net.errors import HostResolutionError, IPAddress
from service.net.policy import OutboundPolicy

Resolver = Callable[[str, int], Sequence[IPAddress]]


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


def resolve_checked(
    host: str, port: int, policy: OutboundPolicy, resolver: Resolver | None = None
) -> list[IPAddress]:
    """Resolve ``host`` and check every address; connect only to what this returns.

    One bad address refuses the whole name: an attacker controlling DNS could otherwise mix a public record with an
    internal one and let ordering decide. Raises OutboundRefused or HostResolutionError. ``resolver`` defaults to
    this module's ``system_resolver``, looked up at each call so tests can replace it for the whole process.
    """
    trusted = policy.origin_trusted(host, port)
    literal = parse_ip_literal(host)
    if literal is not None:
        if not trusted:
            policy.check_address(literal, host)
        return [literal]
    try:
        addresses = list((resolver or system_resolver)(host, port))
    except (OSError, UnicodeError) as exc:
        raise HostResolutionError(f"could not resolve {host}: {exc}") from None
    if not addresses:
        raise HostResolutionError(f"could not resolve {host}: no addresses")
    if not (trusted or policy.host_allowed(host)):
        for ip in addresses:
            policy.check_address(ip, host, resolved=True)
    return addresses


BRIEF_LOOKUP_S = 2.0
# Lookups made while an API request waits; a resolver that hangs costs at most one of these threads per lookup. One
# pool per process: threads do not survive a fork, a pool inherited through one would never run its work.
_brief_pool: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None
_brief_pool_lock = threading.Lock()


def _brief_lookups() -> concurrent.futures.ThreadPoolExecutor:
    global _brief_pool
    with _brief_pool_lock:
        if _brief_pool is None or _brief_pool[0] != os.getpid():
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="outbound-dns")
            _brief_pool = (os.getpid(), pool)
        return _brief_pool[1]


def resolve_briefly(host: str, port: int, policy: OutboundPolicy, timeout: float = BRIEF_LOOKUP_S) -> None:
    """Raise OutboundRefused if ``host`` resolves, within ``timeout``, to an address the policy refuses. A name that
    does not resolve in time is let through: it is resolved and checked again at every connection."""
    future = _brief_lookups().submit(resolve_checked, host, port, policy)
    try:
        future.result(timeout=timeout)
    except (HostResolutionError, concurrent.futures.TimeoutError):
        return

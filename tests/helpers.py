"""Small helpers for tests (importable as `helpers`: tests/ is on the pytest path)."""

from __future__ import annotations


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll until ``predicate()`` is truthy; return its value or fail with the last one."""
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def static_resolver(mapping: dict[str, list[str]], calls: list[str] | None = None):  # type: ignore[no-untyped-def]
    """A resolver for ``service.net`` answering from ``mapping`` (unknown names fail like DNS does), recording each
    lookup. A value may also be a list of answers, one per lookup, the last repeated (DNS rebinding)."""
    import ipaddress
    import socket

    asked: dict[str, int] = {}

    def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        if calls is not None:
            calls.append(host)
        if host not in mapping:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = mapping[host]
        if answers and isinstance(answers[0], list):
            n = asked[host] = asked.get(host, -1) + 1
            answers = answers[min(n, len(answers) - 1)]
        return [ipaddress.ip_address(a) for a in answers]

    return resolve

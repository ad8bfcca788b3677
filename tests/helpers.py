"""Small helpers for tests (importable as `helpers`: tests/ is on the pytest path)."""

from __future__ import annotations

import contextlib


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


@contextlib.contextmanager
def serve(app):  # type: ignore[no-untyped-def]
    """Serve an ASGI app on a free loopback port in a thread; yields its base URL (``http://127.0.0.1:PORT``).
    Real clients (the openai SDK, a browser) talk to it over HTTP like they would to ``finetune serve``."""
    import socket
    import threading

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-http", daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

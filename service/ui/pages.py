"""Rendering: the template environment, security headers, and the HTML answers for errors.

Every /ui answer goes through ``secure``: a CSP that allows only our own scripts and styles (no inline script can run,
so an answer containing ``<script>`` is inert even if escaping ever failed), no framing, no sniffing, and no caching
of pages that show project data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

STATIC_DIR = Path(__file__).parent / "static"

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}

env = Environment(
    loader=PackageLoader("service.ui", "templates"),
    autoescape=select_autoescape(["html"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _static_version() -> str:
    # Changes whenever a static file does, so browsers may cache them for long under a versioned URL.
    stamp = max((p.stat().st_mtime_ns for p in STATIC_DIR.iterdir() if p.is_file()), default=0)
    return format(stamp, "x")[-8:]


env.globals["static_version"] = _static_version()


def _fmt_num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "–"


env.filters["num"] = _fmt_num
env.filters["when"] = _fmt_time


def secure(response: Response, *, cache: bool = False) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if not cache:
        response.headers["cache-control"] = "no-store"
    return response


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = env.get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status_code)


def error_page(request: Request, status_code: int, title: str, detail: str, ui: Any = None) -> HTMLResponse:
    return render(request, "error.html", status_code=status_code, title=title, detail=detail, ui=ui)

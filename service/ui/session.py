"""The web UI's session: a signed, expiring cookie, and the CSRF and same-origin checks of its forms.

The cookie holds no secret, only who signed in (project, key id, reviewer name), a CSRF token and an expiry, signed
with HMAC-SHA256 under a key derived from the server secret for this purpose alone. Every request still looks the key
up (see ``router``), so revoking the API key ends its UI sessions at once; the expiry bounds a copied cookie.
A visitor who has not signed in gets an anonymous session too, so the sign-in form itself carries a CSRF token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from urllib.parse import urlsplit

from service.crypto import derive_key

COOKIE = "finetune_ui"
PATH = "/ui"
_PURPOSE = "ui-session"
MAX_REVIEWER_CHARS = 80


@dataclass(frozen=True)
class UiSession:
    csrf: str
    expires_at: int
    project_id: str | None = None
    api_key_id: str | None = None
    reviewer: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.project_id is not None and self.api_key_id is not None


def session_key(server_secret: bytes) -> bytes:
    return derive_key(server_secret, _PURPOSE)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def anonymous(now: float, ttl_s: int) -> UiSession:
    return UiSession(csrf=secrets.token_urlsafe(24), expires_at=int(now) + ttl_s)


def sign_in(project_id: str, api_key_id: str, reviewer: str, now: float, ttl_s: int) -> UiSession:
    """A fresh session (a new CSRF token too: a token seen before signing in is not trusted after)."""
    return replace(anonymous(now, ttl_s), project_id=project_id, api_key_id=api_key_id, reviewer=reviewer.strip())


def encode(session: UiSession, key: bytes) -> str:
    payload = _b64(json.dumps(asdict(session), separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def decode(value: str | None, key: bytes, now: float) -> UiSession | None:
    """The session in a cookie value; None when missing, forged, malformed or expired."""
    if not value or value.count(".") != 1:
        return None
    payload, mac = value.split(".")
    expected = hmac.new(key, payload.encode("ascii", "replace"), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_unb64(mac), expected):
            return None
        data = json.loads(_unb64(payload))
        session = UiSession(**data)
    except (ValueError, TypeError):
        return None
    if not isinstance(session.expires_at, int) or session.expires_at <= now:
        return None
    return session


def csrf_ok(session: UiSession | None, token: str | None) -> bool:
    return bool(session and token) and hmac.compare_digest(session.csrf.encode(), str(token).encode())


def same_origin(origin: str | None, referer: str | None, scheme: str, host: str | None) -> bool:
    """Whether a form post comes from our own pages: the Origin header (or, without one, the Referer) must name
    this scheme and host. Browsers send Origin on every cross-site POST, so a missing pair means a non-browser
    client, which the CSRF token still checks."""
    source = origin if origin and origin != "null" else referer
    if origin == "null":
        return False
    if not source:
        return True
    parts = urlsplit(source)
    return (parts.scheme, parts.netloc.lower()) == (scheme, (host or "").lower())


def rate_identity(server_secret: bytes) -> Callable[[str | None], str | None]:
    """For the rate limiter, which has no database: the bucket of a request carrying a validly signed, unexpired,
    signed-in session cookie (``ui:<api key id>``), so the pages a key's users browse draw from a per-key budget rather
    than the stricter one per client address (which a team behind one NAT address would share). Anything else, the
    sign-in form included, stays anonymous."""
    key = session_key(server_secret)

    def identify(cookie_value: str | None) -> str | None:
        session = decode(cookie_value, key, time.time())
        return f"ui:{session.api_key_id}" if session is not None and session.signed_in else None

    return identify

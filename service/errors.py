"""Domain errors. They carry a stable code and a kind; the HTTP layer maps kinds to statuses (RFC 9457)."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    kind = (
        "invalid"  # invalid | not_found | conflict | forbidden | unauthorized | too_large | unavailable | rate_limited
    )
    code = "invalid_request"

    def __init__(
        self, detail: str, *, code: str | None = None, errors: list[dict[str, Any]] | None = None, **extra: Any
    ):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.errors = errors
        self.extra = extra


class InvalidInput(ServiceError):
    kind, code = "invalid", "invalid_request"


class NotFound(ServiceError):
    kind, code = "not_found", "not_found"

    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} {ident!r} not found", code=f"{what}_not_found")


class Conflict(ServiceError):
    kind, code = "conflict", "conflict"


class Unauthorized(ServiceError):
    kind, code = "unauthorized", "unauthorized"


class Forbidden(ServiceError):
    kind, code = "forbidden", "forbidden"


class TooLarge(ServiceError):
    kind, code = "too_large", "payload_too_large"


class Unavailable(ServiceError):
    kind, code = "unavailable", "unavailable"


class RateLimited(ServiceError):
    kind, code = "rate_limited", "rate_limited"

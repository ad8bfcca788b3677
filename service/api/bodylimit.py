"""Request body size limit (``FINETUNE_MAX_BODY_BYTES``): 413 problem before the body is read whole.

A declared ``Content-Length`` above the limit is refused before a byte of the body is read. Without one (chunked
transfer) the bytes are counted as they arrive and the request is refused as soon as the count passes the limit, so a
client cannot make the server buffer more than the limit. Dataset uploads (multipart under ``/v1/datasets``) are not
limited here: their parser streams to disk and enforces ``FINETUNE_MAX_UPLOAD_BYTES`` itself.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UPLOAD_PREFIX = "/v1/datasets"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the streamed body passes the limit.

    An ``HTTPException`` so that FastAPI's body reading passes it through to the problem handler unchanged.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes")


def is_dataset_upload(scope: Scope) -> bool:
    if not scope["path"].startswith(UPLOAD_PREFIX):
        return False
    content_type = Headers(scope=scope).get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    from service.api.problems import problem

    exc = BodyTooLarge(limit)
    # Close the connection: the unread rest of the body must not be parsed as the next request.
    response = problem(413, "payload_too_large", str(exc.detail), Request(scope), max_bytes=limit)
    response.headers["connection"] = "close"
    await response(scope, receive, send)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_dataset_upload(scope):
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _too_large(scope, receive, send, limit)
            return

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            # Raised where no exception handler saw it (e.g. a body read outside a route's parameters).
            if started:
                raise
            await _too_large(scope, receive, send, limit)

"""Streaming multipart parsing: the file part goes straight to the content-addressed stager, never into memory.

Starlette's form parser would spool the whole upload to a temporary file first and enforce no size limit on it; this
parser hashes and writes as bytes arrive and answers 413 as soon as the limit is passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from service.datasets.storage import StagedFile, Stager
from service.errors import InvalidInput, TooLarge
from service.settings import Settings

MAX_FIELD_BYTES = 64 * 1024


def _storable(name: str, value: str) -> None:
    """NUL cannot be stored (PostgreSQL refuses it in text): the same 422 as a JSON body with one."""
    if "\x00" in value or "\x00" in name:
        raise InvalidInput(
            f"form field {name!r} contains a NUL character (U+0000)",
            code="unstorable_value",
            errors=[{"code": "nul_character", "message": "contains a NUL character (U+0000)", "field": name}],
        )


@dataclass
class ParsedUpload:
    file: StagedFile | None = None
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


async def parse_upload(request: Request, settings: Settings, file_field: str = "file") -> ParsedUpload:
    content_type = request.headers.get("content-type", "")
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidInput("send the dataset as multipart/form-data with a 'file' part", code="multipart_required")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes + MAX_FIELD_BYTES * 8:
        raise TooLarge(
            f"the upload is larger than the limit of {settings.max_upload_bytes} bytes", code="file_too_large"
        )

    out = ParsedUpload()
    state: dict[str, object] = {"headers": {}, "name": None, "stager": None, "buf": None, "hfield": b"", "hvalue": b""}

    def on_part_begin() -> None:
        state.update(headers={}, name=None, stager=None, buf=None)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["hfield"] = bytes(state["hfield"]) + data[start:end]  # type: ignore[arg-type]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["hvalue"] = bytes(state["hvalue"]) + data[start:end]  # type: ignore[arg-type]

    def on_header_end() -> None:
        state["headers"][bytes(state["hfield"]).lower()] = bytes(state["hvalue"])  # type: ignore[index]
        state["hfield"], state["hvalue"] = b"", b""

    def on_headers_finished() -> None:
        disposition = state["headers"].get(b"content-disposition", b"")  # type: ignore[union-attr]
        _, dparams = parse_options_header(disposition)
        name = dparams.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        if name == file_field:
            if out.file is not None:
                raise InvalidInput("only one file per upload", code="multiple_files")
            out.filename = dparams.get(b"filename", b"upload").decode("utf-8", "replace")[:500] or "upload"
            _storable("filename", out.filename)
            state["stager"] = Stager(settings)
        else:
            state["buf"] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        stager = state["stager"]
        if stager is not None:
            stager.write(data[start:end])  # type: ignore[union-attr]
            return
        buf = state["buf"]
        buf.extend(data[start:end])  # type: ignore[union-attr]
        if len(buf) > MAX_FIELD_BYTES:  # type: ignore[arg-type]
            raise InvalidInput(f"form field {state['name']!r} is too long", code="field_too_long")

    def on_part_end() -> None:
        stager = state["stager"]
        if stager is not None:
            out.file = stager.finish()  # type: ignore[union-attr]
        elif state["buf"] is not None and state["name"]:
            try:
                value = bytes(state["buf"]).decode("utf-8")  # type: ignore[arg-type]
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"form field {state['name']!r} is not UTF-8", code="invalid_field") from exc
            _storable(str(state["name"]), value)
            out.fields[str(state["name"])] = value

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        try:
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
        except MultipartParseError as exc:
            raise InvalidInput(f"the multipart body is malformed: {exc}", code="multipart_invalid") from exc
    except BaseException:
        stager = state.get("stager")
        if stager is not None:
            stager.abort()  # type: ignore[union-attr]
        if out.file is not None:
            out.file.discard()
        raise
    if out.file is None:
        raise InvalidInput("the upload has no 'file' part", code="file_missing")
    return out

"""The one HTTP client for Together's own (not OpenAI-shaped) routes: httpx through the guarded outbound layer, a
bearer key, and every failure turned into a ``ProviderError`` by ``errors`` in one place.

No call retries here: a failed read is retried by the job engine's back-off, and a creating call (upload, create,
cancel) must never be repeated blindly, since its answer may have been lost after Together acted. The provider looks
things up before creating them again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from service import net
from service.providers.base import ProviderError
from service.providers.together.errors import is_call_failure, status_error, transport_error

DEFAULT_BASE_URL = "https://api.together.xyz/v1"
API_RESPONSE_BYTES = net.DEFAULT_MAX_RESPONSE_BYTES
# An adapter is tens to hundreds of MiB; a merged full model is larger than anything we keep in memory.
DOWNLOAD_BYTES = 2 * 1024**3


class TogetherClient:
    def __init__(self, *, api_key: SecretStr, base_url: str | None = None, timeout_s: float = 60.0) -> None:
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {api_key.get_secret_value()}", "Accept": "application/json"}
        self._http = net.sync_client(timeout=timeout_s, max_response_bytes=API_RESPONSE_BYTES, headers=self._headers)

    def close(self) -> None:
        self._http.close()

    def _send(
        self, method: str, path: str, *, what: str, http: httpx.Client | None = None, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = (http or self._http).request(method, f"{self.base_url}{path}", **kwargs)
        except Exception as exc:
            if not is_call_failure(exc):
                raise
            raise transport_error(exc, what) from exc
        if response.status_code >= 400:
            raise status_error(response)
        return response

    def json(self, method: str, path: str, *, what: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, path, what=what, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ProviderError(
                f"{what}: the provider's answer is not a JSON object", transient=True, code="provider_bad_response"
            )
        return body

    def upload(self, path: Path, *, file_name: str, purpose: str) -> dict[str, Any]:
        with path.open("rb") as fh:
            return self.json(
                "POST",
                "/files/upload",
                what="upload",
                data={"purpose": purpose, "file_name": file_name, "file_type": "jsonl"},
                files={"file": (file_name, fh, "application/octet-stream")},
            )

    def download(self, path: str, *, params: dict[str, Any], dest: Path, what: str) -> int:
        """Stream a (large) download into ``dest``; returns its size. Nothing is left at ``dest`` when it fails."""
        url = f"{self.base_url}{path}"
        with net.sync_client(timeout=self._timeout_s, max_response_bytes=DOWNLOAD_BYTES, headers=self._headers) as http:
            try:
                with http.stream("GET", url, params=params) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise status_error(response)
                    size = 0
                    with dest.open("wb") as fh:
                        for chunk in response.iter_bytes():
                            fh.write(chunk)
                            size += len(chunk)
                    return size
            except Exception as exc:
                dest.unlink(missing_ok=True)
                if isinstance(exc, ProviderError) or not is_call_failure(exc):
                    raise
                raise transport_error(exc, what) from exc

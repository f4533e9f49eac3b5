"""HTTP clients for the service: ``AnytimeClient`` (blocking) and ``AsyncAnytimeClient`` (asyncio).

Both share the request building and the error mapping below, so the two can never disagree on what a
status code means. Every non-2xx answer becomes a typed ``HTTPStatusError``; a network failure becomes
``ConnectionLost``; callers never see an httpx exception.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx
from pydantic import TypeAdapter

from client.errors import AnytimeError, ConnectionLost, error_for_status
from client.messages import BatchClassifyResponse, CameraInfo, ClassifyResponse

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_URL", "AnytimeClient", "AsyncAnytimeClient", "ImageInput"]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 10.0  # seconds; a /classify answer comes by its deadline, so this only guards a hung server

ImageInput = bytes | str | os.PathLike[str]

_SUFFIX_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
_CAMERAS = TypeAdapter(list[CameraInfo])
T = TypeVar("T")


def sniff_content_type(data: bytes) -> str:
    """The image type from its magic bytes; the service answers 415 to anything else, so say so honestly."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def image_payload(image: ImageInput, content_type: str | None = None) -> tuple[bytes, str]:
    """Bytes and Content-Type for ``image``: a path's type comes from its suffix, raw bytes are sniffed."""
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        return data, content_type or sniff_content_type(data)
    path = Path(image)
    data = path.read_bytes()
    return data, content_type or _SUFFIX_TYPES.get(path.suffix.lower()) or sniff_content_type(data)


def _classify_request(
    image: ImageInput, deadline_ms: float, exit: int | None, content_type: str | None
) -> dict[str, Any]:
    """The keyword arguments of the ``POST /classify`` request, shared by both clients."""
    data, ctype = image_payload(image, content_type)
    params = {"deadline_ms": f"{deadline_ms:g}"}
    if exit is not None:
        params["exit"] = str(exit)
    return {"params": params, "content": data, "headers": {"Content-Type": ctype}}


def _batch_request(images: Iterable[ImageInput], budget_mflops: float, deadline_ms: float) -> dict[str, Any]:
    """The keyword arguments of ``POST /classify/batch``: one multipart ``file`` part per image."""
    files = []
    for i, image in enumerate(images):
        data, ctype = image_payload(image)
        name = f"image{i}" if isinstance(image, bytes | bytearray | memoryview) else Path(image).name
        files.append(("file", (name, data, ctype)))
    return {
        "params": {"budget_mflops": f"{budget_mflops:g}", "deadline_ms": f"{deadline_ms:g}"},
        "files": files,
        "timeout": deadline_ms / 1000 + DEFAULT_TIMEOUT,  # the answer comes by the deadline, however long
    }


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _check(response: httpx.Response) -> httpx.Response:
    """Raise the typed error for a non-2xx answer, with the server's ``detail``."""
    if response.is_success:
        return response
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    raise error_for_status(response.status_code, body, response.headers.get("Retry-After"))


def _parsed(parse: Callable[[bytes], T], response: httpx.Response) -> T:
    """``parse`` the body of a 2xx answer; one that does not parse (a proxy's page, another service at
    that URL) is an :class:`AnytimeError` like every other failure, not a pydantic or JSON error."""
    try:
        return parse(response.content)
    except ValueError as exc:  # pydantic's ValidationError and json's JSONDecodeError are ValueErrors
        raise AnytimeError(
            f"{response.request.method} {response.request.url}: answer {response.status_code} is not the anytime "
            f"service's ({type(exc).__name__}); is the URL right?"
        ) from exc


def _json_object(body: bytes) -> dict[str, Any]:
    value = json.loads(body)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def _client_url(base_url: str) -> str:
    """The base URL without its trailing slash, refused up front if httpx cannot parse it."""
    try:
        httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        raise AnytimeError(f"not a URL: {base_url!r} ({exc})") from exc
    return base_url.rstrip("/")


def _lost(exc: httpx.TransportError, request: str) -> ConnectionLost:
    return ConnectionLost(f"{request}: {type(exc).__name__}: {exc}" if str(exc) else f"{request}: {exc!r}")


class AnytimeClient:
    """Blocking client; use as a context manager (or call ``close()``) to release the connection pool."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = _client_url(base_url)
        self._http = httpx.Client(base_url=self.base_url, headers=_headers(token), timeout=timeout, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return _check(self._http.request(method, path, **kwargs))
        except httpx.TransportError as exc:
            raise _lost(exc, f"{method} {self.base_url}{path}") from exc

    def classify(
        self, image: ImageInput, deadline_ms: float = 50, exit: int | None = None, *, content_type: str | None = None
    ) -> ClassifyResponse:
        """The deepest exit the service reaches within ``deadline_ms`` (or exactly exit ``exit``)."""
        response = self._request("POST", "/classify", **_classify_request(image, deadline_ms, exit, content_type))
        return _parsed(ClassifyResponse.model_validate_json, response)

    def classify_batch(
        self, images: Iterable[ImageInput], budget_mflops: float, deadline_ms: float = 10000
    ) -> BatchClassifyResponse:
        """Budgeted batch classification: each image leaves at the first exit confident enough for the
        thresholds that fit ``budget_mflops`` (average multiply-adds per image, millions)."""
        response = self._request("POST", "/classify/batch", **_batch_request(images, budget_mflops, deadline_ms))
        return _parsed(BatchClassifyResponse.model_validate_json, response)

    def cameras(self) -> list[CameraInfo]:
        return _parsed(_CAMERAS.validate_json, self._request("GET", "/cameras"))

    def model_card(self) -> dict[str, Any]:
        """The served model's card (classes, per-exit cost and accuracy); kept a dict as its shape is the model's."""
        return _parsed(_json_object, self._request("GET", "/model"))

    def metrics(self) -> str:
        return self._request("GET", "/metrics").text

    def health(self) -> bool:
        """True when the process answers; never raises, so it suits polling loops."""
        return self._probe("/health")

    def ready(self) -> bool:
        """True when the model is loaded and the service accepts work."""
        return self._probe("/ready")

    def _probe(self, path: str) -> bool:
        try:
            return self._http.get(path).is_success
        except httpx.TransportError:
            return False


class AsyncAnytimeClient:
    """The asyncio twin of ``AnytimeClient``: same methods, awaited; ``async with`` closes it."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = _client_url(base_url)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=_headers(token), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return _check(await self._http.request(method, path, **kwargs))
        except httpx.TransportError as exc:
            raise _lost(exc, f"{method} {self.base_url}{path}") from exc

    async def classify(
        self, image: ImageInput, deadline_ms: float = 50, exit: int | None = None, *, content_type: str | None = None
    ) -> ClassifyResponse:
        response = await self._request("POST", "/classify", **_classify_request(image, deadline_ms, exit, content_type))
        return _parsed(ClassifyResponse.model_validate_json, response)

    async def classify_batch(
        self, images: Iterable[ImageInput], budget_mflops: float, deadline_ms: float = 10000
    ) -> BatchClassifyResponse:
        request = _batch_request(images, budget_mflops, deadline_ms)
        response = await self._request("POST", "/classify/batch", **request)
        return _parsed(BatchClassifyResponse.model_validate_json, response)

    async def cameras(self) -> list[CameraInfo]:
        return _parsed(_CAMERAS.validate_json, await self._request("GET", "/cameras"))

    async def model_card(self) -> dict[str, Any]:
        return _parsed(_json_object, await self._request("GET", "/model"))

    async def metrics(self) -> str:
        return (await self._request("GET", "/metrics")).text

    async def health(self) -> bool:
        return await self._probe("/health")

    async def ready(self) -> bool:
        return await self._probe("/ready")

    async def _probe(self, path: str) -> bool:
        try:
            return (await self._http.get(path)).is_success
        except httpx.TransportError:
            return False

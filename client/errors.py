"""Exceptions the client raises: one family, so callers can catch ``AnytimeError`` and nothing else.

HTTP failures become an ``HTTPStatusError`` subclass chosen by status code, carrying the server's
``detail`` as readable text and ``Retry-After`` as seconds, so a caller can back off on ``Overloaded``
without parsing headers itself.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "AnytimeError",
    "BadRequest",
    "CameraNotFound",
    "ConnectionLost",
    "HTTPStatusError",
    "InvalidParameters",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "ServerError",
    "Unauthorized",
    "UnsupportedMediaType",
    "error_for_status",
    "format_detail",
    "parse_retry_after",
]


class AnytimeError(Exception):
    """Base of every error raised by the client."""


class ConnectionLost(AnytimeError):
    """The service could not be reached, timed out, or dropped the connection (and no retry was allowed)."""


class CameraNotFound(AnytimeError):
    """The service has no camera of that id (websocket close code 4404); retrying cannot help."""

    def __init__(self, camera_id: str, reason: str = "") -> None:
        self.camera_id = camera_id
        self.reason = reason
        super().__init__(f"camera {camera_id!r} not found" + (f": {reason}" if reason else ""))


class HTTPStatusError(AnytimeError):
    """The service answered with a non-2xx status; ``detail`` is its explanation as text."""

    title = "HTTP error"

    def __init__(self, status_code: int, detail: str, retry_after: float | None = None, body: Any = None) -> None:
        self.status_code = status_code
        self.detail = detail
        self.retry_after = retry_after
        self.body = body  # the parsed JSON body (or text) as sent, for callers that want the raw form
        super().__init__(f"{status_code} {self.title}: {detail}" if detail else f"{status_code} {self.title}")


class BadRequest(HTTPStatusError):
    title = "bad request"  # 400: undecodable image, too many pixels


class Unauthorized(HTTPStatusError):
    title = "unauthorized"  # 401 (or websocket close 4401): missing or wrong token


class NotFound(HTTPStatusError):
    title = "not found"


class PayloadTooLarge(HTTPStatusError):
    title = "payload too large"


class UnsupportedMediaType(HTTPStatusError):
    title = "unsupported media type"  # 415: the body is not an image the service accepts


class InvalidParameters(HTTPStatusError):
    title = "invalid parameters"  # 422: FastAPI's request validation


class Overloaded(HTTPStatusError):
    title = "overloaded"  # 503: retry after ``retry_after`` seconds


class ServerError(HTTPStatusError):
    title = "server error"


_BY_STATUS: dict[int, type[HTTPStatusError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidParameters,
    503: Overloaded,
}


def format_detail(detail: Any) -> str:
    """FastAPI's ``detail``: a string, or for 422 a list of ``{loc, msg, ...}``; render both as one line."""
    if detail is None:
        return ""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", ()) if p not in ("query", "body", "path"))
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` is either delay-seconds or an HTTP date; return seconds from now, or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def error_for_status(status_code: int, body: Any, retry_after: str | None = None) -> HTTPStatusError:
    """The typed exception for a non-2xx answer; ``body`` is the decoded JSON body, or its text."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    cls = _BY_STATUS.get(status_code, ServerError if status_code >= 500 else HTTPStatusError)
    return cls(status_code, format_detail(detail), parse_retry_after(retry_after), body)

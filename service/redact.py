"""Keep secrets out of what the service writes: the access token out of the access log, and camera
credentials out of /cameras and the log.

The browser cannot set an ``Authorization`` header on ``<img src>`` (the MJPEG stream, snapshots) or
on a websocket, so the overlay sends the token as ``?token=``; uvicorn's access log writes every
request line with its query string, several times a second per camera. This filter blanks the value.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

__all__ = ["RedactTokens", "redact_token", "redact_url"]

_QUERY_PAIR = re.compile(r"([?&])([^=&\s?#]+)=([^&\s#]*)")
_SECRET_QUERY_KEYS = {"password", "pass", "pwd", "passwd", "token", "key", "secret", "auth", "apikey", "api_key"}


def redact_token(text: str) -> str:
    """``/x?token=secret&y=1`` becomes ``/x?token=***&y=1``. The name is compared decoded, as the service
    reads it: ``?%74oken=secret`` is the token too."""

    def blank(match: re.Match[str]) -> str:
        sep, name, _ = match.groups()
        return f"{sep}{name}=***" if unquote_plus(name).lower() == "token" else match.group(0)

    return _QUERY_PAIR.sub(blank, text)


class RedactTokens(logging.Filter):
    """Blanks ``token=`` query values in a log record's arguments (uvicorn passes the path as one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_token(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact_token(record.msg)
        return True


def redact_url(source: str) -> str:
    """A camera source fit to show in /cameras and the log: ``rtsp://user:pw@host/x?token=t`` becomes
    ``rtsp://***@host/x?token=***``; anything that is not a URL comes back unchanged."""
    if "://" not in source:
        return source
    try:
        parts = urlsplit(source)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rsplit("@", 1)[1]
        query = parts.query
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_QUERY_KEYS for k, _ in pairs):
            query = urlencode([(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return source.split("://", 1)[0] + "://***"

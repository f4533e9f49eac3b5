"""Keep the access token out of the access log.

The browser cannot set an ``Authorization`` header on ``<img src>`` (the MJPEG stream, snapshots) or
on a websocket, so the overlay sends the token as ``?token=``; uvicorn's access log writes every
request line with its query string, several times a second per camera. This filter blanks the value.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

__all__ = ["RedactTokens", "redact"]

_QUERY_PAIR = re.compile(r"([?&])([^=&\s?#]+)=([^&\s#]*)")


def redact(text: str) -> str:
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
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True

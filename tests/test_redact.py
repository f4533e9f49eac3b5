"""The access token never reaches the access log, where the overlay's ?token= URLs would put it."""

from __future__ import annotations

import logging

from service.redact import RedactTokens, redact_token


def test_redact_blanks_only_the_token_value() -> None:
    assert redact_token("/cameras/a/stream.mjpg?token=s3cret") == "/cameras/a/stream.mjpg?token=***"
    assert redact_token("/x?fps=5&token=s3cret&quality=70") == "/x?fps=5&token=***&quality=70"
    assert redact_token("/x?TOKEN=abc") == "/x?TOKEN=***"
    assert redact_token("/x?mytoken=abc&notatoken=1") == "/x?mytoken=abc&notatoken=1"
    assert redact_token("/x?%74oken=abc&y=1") == "/x?%74oken=***&y=1"  # the service decodes the name: so must this
    assert redact_token("GET /a?b=1&token=abc HTTP/1.1") == "GET /a?b=1&token=*** HTTP/1.1"


def test_an_access_log_line_as_uvicorn_writes_it_is_redacted(caplog) -> None:
    logger = logging.getLogger("test.uvicorn.access")
    logger.addFilter(RedactTokens())
    with caplog.at_level(logging.INFO, logger=logger.name):
        # uvicorn's access logger: '%s - "%s %s HTTP/%s" %d' with the path and query as one argument
        logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/ws/cameras/a?token=s3cret", "1.1", 101)
    assert "s3cret" not in caplog.text and "token=***" in caplog.text

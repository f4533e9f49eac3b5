"""``anytime serve``: load settings, build the app, run it under uvicorn until Ctrl-C/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run the service (synthetic camera and shipped model by default)")
    serve.add_argument("--config", help="YAML settings file (environment variables ANYTIME_* override it)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.config import SettingsError, load_settings
    from service.redact import RedactTokens

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = load_settings(args.config, **overrides)
    except (SettingsError, FileNotFoundError) as exc:
        print(f"anytime serve: bad configuration:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            # uvicorn waits for open responses before the lifespan shutdown runs; turning
            # readiness off first makes /ready fail at once and lets MJPEG streams end by
            # themselves instead of being cancelled at the graceful-shutdown timeout.
            app.state.runtime.ready = False
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=2,
        ws_ping_interval=20,
        ws_ping_timeout=20,
    )
    # After uvicorn.Config, which (re)configures its loggers: ?token= never reaches the log (HTTP
    # requests go to uvicorn.access, websocket handshakes to uvicorn.error).
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(RedactTokens())
    Server(config).run()
    return 0

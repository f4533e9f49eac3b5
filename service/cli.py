"""``anytime``: the project's one console script.

Each part of the project contributes its own subcommands; this module only gathers them, so
``anytime --help`` is instant and the client commands work without torch installed.
"""

from __future__ import annotations

import argparse
import sys

from client.cli import add_commands as add_client_commands
from model.cli import add_commands as add_model_commands
from service.serve import add_commands as add_serve_commands

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anytime", description="Anytime-prediction video classification")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_commands(sub)
    add_model_commands(sub)
    add_client_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"anytime {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

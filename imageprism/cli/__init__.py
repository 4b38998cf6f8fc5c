"""The ``imageprism`` command line.

Each command lives in its own module in this package, exposing
``register(subparsers)``, which adds its parser and sets ``func`` to a function
taking the parsed arguments and returning the exit code. Adding a command is one
module plus one entry in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from imageprism._version import __version__
from imageprism.cli._common import cli_message
from imageprism.errors import ImagePrismError

__all__ = ["main"]

#: modules of this package that each register one command (or command group)
COMMANDS: list[str] = ["compare", "embed", "dedup", "match", "profiles", "models", "index", "search", "serve"]

EXIT_USAGE = 2
EXIT_ERROR = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imageprism",
        description="How similar are these images? Compare, embed, deduplicate and search.",
    )
    parser.add_argument("--version", action="version", version=f"imageprism {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"imageprism.cli.{name}").register(sub)
    _plain_descriptions(parser)
    return parser


def _plain_descriptions(parser: argparse.ArgumentParser) -> None:
    """Help shows 'imageprism dedup', not the docstrings' reStructuredText ``imageprism dedup``."""
    if parser.description:
        parser.description = parser.description.replace("``", "'")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _plain_descriptions(child)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    def warn(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        text = " ".join(str(message).split())  # one line, without the source line Python adds
        sys.stderr.write(f"imageprism {args.command}: warning: {cli_message(text)}\n")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # each distinct warning once
            warnings.showwarning = warn
            code: int = args.func(args)
    except ImagePrismError as exc:
        sys.stderr.write(f"imageprism {args.command}: error: {cli_message(str(exc))}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `imageprism embed ... | head`: the reader left, not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code

"""Helpers shared by the CLI commands: building an ImagePrism from flags, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from imageprism._cache import PersistentCache
from imageprism._prism import ImagePrism


def add_selection_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that build the ImagePrism: ``--dimensions a,b`` or ``--profile NAME|PATH``, and ``--cache``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--dimensions", metavar="DIMS",
        help="comma-separated dimensions, e.g. hash,semantic (default: hash)",
    )
    group.add_argument("--profile", metavar="NAME|PATH", help="a built-in profile name or a YAML profile file")
    parser.add_argument(
        "--cache", nargs="?", const="", metavar="SQLITE",
        help="keep embeddings in a persistent SQLite cache (default file under the user cache "
        "directory), so re-running over the same images skips the work",
    )


def prism_from_args(args: argparse.Namespace) -> ImagePrism:
    """The ImagePrism selected by ``--dimensions``/``--profile``, with ``--cache`` if given."""
    cache = None if getattr(args, "cache", None) is None else PersistentCache(args.cache or None)
    if getattr(args, "profile", None):
        return ImagePrism(profile=args.profile, cache=cache)
    if getattr(args, "dimensions", None):
        return ImagePrism(dimensions=[d for d in args.dimensions.split(",") if d.strip()], cache=cache)
    return ImagePrism(cache=cache)


def write_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")


def fmt_score(value: float | None) -> str:
    return "n/a (cannot score this pair)" if value is None else f"{value:.4f}"

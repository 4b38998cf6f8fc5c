"""Helpers shared by the CLI commands: building an ImagePrism from flags, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from imageprism._cache import PersistentCache
from imageprism._image import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from imageprism._prism import ImagePrism


def add_selection_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that build the ImagePrism: ``--dimensions a,b`` or ``--profile NAME|PATH``, ``--cache``,
    and the input limits ``--max-pixels``/``--max-bytes``."""
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
    add_limit_flags(parser)


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """``--max-pixels`` and ``--max-bytes``: the input limits of every command that reads images."""
    parser.add_argument(
        "--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
        help=f"refuse images declaring more than N pixels (width x height), before decoding (default: {DEFAULT_MAX_PIXELS:,})",
    )
    parser.add_argument(
        "--max-bytes", type=_positive_int, default=DEFAULT_MAX_BYTES, metavar="N",
        help=f"refuse image files larger than N bytes, before reading them (default: {DEFAULT_MAX_BYTES:,} = 256 MiB)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give a positive integer, e.g. 500000000") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not positive; give a positive integer")
    return value


def prism_from_args(args: argparse.Namespace) -> ImagePrism:
    """The ImagePrism selected by ``--dimensions``/``--profile``, with ``--cache`` and the input limits."""
    cache = None if getattr(args, "cache", None) is None else PersistentCache(args.cache or None)
    dimensions = getattr(args, "dimensions", None)
    return ImagePrism(
        dimensions=[d for d in dimensions.split(",") if d.strip()] if dimensions else None,
        profile=getattr(args, "profile", None) or None,
        cache=cache,
        max_pixels=args.max_pixels,
        max_bytes=args.max_bytes,
    )


def apply_limits(prism: ImagePrism, args: argparse.Namespace) -> ImagePrism:
    """Set the ``--max-pixels``/``--max-bytes`` limits on a prism that was not built from flags (an index's)."""
    prism.max_pixels, prism.max_bytes = args.max_pixels, args.max_bytes
    return prism


def write_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")


def fmt_score(value: float | None) -> str:
    return "n/a (cannot score this pair)" if value is None else f"{value:.4f}"

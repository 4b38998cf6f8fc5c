"""Helpers shared by the CLI commands: building an ImagePrism from flags, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from imageprism._cache import PersistentCache
from imageprism._files import check_writable_folder
from imageprism._prism import ImagePrism
from imageprism.errors import InputError


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


def plural(n: int, word: str) -> str:
    """``word`` or ``word + "s"`` for ``n`` of them: 1 group, 2 groups."""
    return word if n == 1 else word + "s"


def check_output_files(outputs: Sequence[str], inputs: Sequence[str], *, force: bool) -> None:
    """Refuse, before any work, outputs that would replace an input, an existing file (without
    ``--force``), or that cannot be written; one line each."""
    sources = {os.path.realpath(p) for p in inputs}
    seen: set[str] = set()
    for output in outputs:
        real = os.path.realpath(output)
        if real in sources:
            raise InputError(f"output {output!r} is one of the inputs; inputs are never overwritten (choose another name)")
        if real in seen:
            raise InputError(f"output {output!r} is given twice; give each output its own file")
        seen.add(real)
        if os.path.isdir(output):
            raise InputError(f"output {output!r} is a folder; give a file name")
        if os.path.lexists(output) and not force:
            raise InputError(f"output {output!r} already exists; pass --force to replace it, or choose another name")
        folder = os.path.dirname(os.path.abspath(output))
        if not os.path.exists(folder):
            raise InputError(f"output {output!r} cannot be written: the folder {folder!r} does not exist")
        check_writable_folder(folder, what=f"output {output!r}:")

"""Helpers shared by the CLI commands: building an ImagePrism from flags, JSON output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from imageprism._cache import PersistentCache
from imageprism._files import check_writable_folder
from imageprism._image import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from imageprism._prism import ImagePrism
from imageprism._search.ann import Exact
from imageprism._types import Dimension
from imageprism.dimensions import parse_dimension, plugin_class
from imageprism.dimensions.hash import HashConfig
from imageprism.errors import ConfigError, InputError


def add_selection_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that build the ImagePrism: ``--dimensions a,b`` or ``--profile NAME|PATH``,
    ``--hash``, ``--model DIM=PATH``, ``--cache``, and the input limits ``--max-pixels``/``--max-bytes``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--dimensions", metavar="DIMS",
        help="comma-separated dimensions, e.g. hash,semantic (default: hash)",
    )
    group.add_argument("--profile", metavar="NAME|PATH", help="a built-in profile name or a YAML profile file")
    parser.add_argument(
        "--hash", choices=HASH_MODES, metavar="MODE",
        help="hash flavour: robust (default; also matches flips, rotations and crops), plain, or "
        "imagehash (bit-exact with the imagehash package)",
    )
    parser.add_argument(
        "--model", action="append", default=[], metavar="DIM=PATH",
        help="use a local ONNX file for a dimension instead of its download, e.g. semantic=clip.onnx "
        "(face: the embedding model); repeat for several dimensions",
    )
    add_cache_flag(parser)
    add_limit_flags(parser)


def add_workers_flag(parser: argparse.ArgumentParser) -> None:
    """``--workers N``: processes decoding and embedding images (default: every core)."""
    parser.add_argument(
        "--workers", type=_positive_int, default=None, metavar="N",
        help="processes decoding and embedding images in parallel (default: every core; 1: no extra process)",
    )


#: ``--exact`` values and the ``exact=`` settings they stand for
EXACT_CHOICES: dict[str, Exact] = {"true": True, "false": False, "auto": "auto"}


def add_exact_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """``--exact {true,false,auto}``: the ``exact=`` setting of vector search (the value is in ``args.exact``)."""
    parser.add_argument(
        "--exact", choices=list(EXACT_CHOICES), default="true", type=str.lower,
        help=f"true (the default): {what} finds every match; false: an approximate search of the vector "
        "dimensions (semantic, instance, style), faster at hundreds of thousands of images, may miss a "
        "match but never reports one below the threshold; auto: approximate from 50,000 images",
    )


def add_cache_flag(parser: argparse.ArgumentParser) -> None:
    """``--cache [SQLITE]``: a persistent embedding cache."""
    parser.add_argument(
        "--cache", nargs="?", const="", metavar="SQLITE",
        help="keep embeddings in a persistent SQLite cache (default file under the user cache "
        "directory), so re-running over the same images skips the work",
    )


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


def prism_with_cache(index_dir: str, cache: str | None) -> ImagePrism | None:
    """For a saved index: its own ImagePrism rebuilt with ``--cache``, or ``None`` (let the index rebuild it)."""
    if cache is None:
        return None
    from imageprism._index import saved_prism  # the saved profile and weights; load() checks the rest

    return saved_prism(index_dir, cache=PersistentCache(cache or None))


#: ``--hash`` values and the HashConfig constructor each selects
HASH_MODES: tuple[str, ...] = ("robust", "plain", "imagehash")


def prism_from_args(args: argparse.Namespace) -> ImagePrism:
    """The ImagePrism selected by ``--dimensions``/``--profile``, ``--hash``, ``--model``, ``--cache`` and the limits."""
    cache = None if getattr(args, "cache", None) is None else PersistentCache(args.cache or None)
    config = model_configs(getattr(args, "model", None) or [])
    mode = getattr(args, "hash", None)
    if mode:
        config[Dimension.HASH.value] = {
            "robust": HashConfig.robust, "plain": HashConfig.plain, "imagehash": HashConfig.imagehash_compatible,
        }[mode]()
    dimensions = getattr(args, "dimensions", None)
    return ImagePrism(
        dimensions=[d for d in dimensions.split(",") if d.strip()] if dimensions else None,
        profile=getattr(args, "profile", None) or None,
        cache=cache,
        config=config or None,
        max_pixels=args.max_pixels,
        max_bytes=args.max_bytes,
    )


def model_configs(values: Sequence[str]) -> dict[str, Any]:
    """``--model DIM=PATH`` values as ``{dimension: config}`` (the dimension's config with the local file)."""
    configs: dict[str, Any] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--model {value!r} is invalid; use DIM=PATH, e.g. --model semantic=clip.onnx")
        dimension = parse_dimension(name.strip())
        if not os.path.isfile(path):
            raise ConfigError(f"--model {value!r}: {path!r} is not a file; give the path of an .onnx model file")
        field = "embed_path" if dimension == Dimension.FACE.value else "model_path"
        config_type = plugin_class(dimension).config_type
        if field not in {f.name for f in dataclasses.fields(config_type)}:
            raise ConfigError(f"--model {value!r}: the {dimension!r} dimension uses no model file")
        configs[dimension] = config_type(**{field: path})
    return configs


def apply_limits(prism: ImagePrism, args: argparse.Namespace) -> ImagePrism:
    """Set the ``--max-pixels``/``--max-bytes`` limits on a prism that was not built from flags (an index's)."""
    prism.max_pixels, prism.max_bytes = args.max_pixels, args.max_bytes
    return prism


def write_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")


def write_json_list(items: Iterable[Any]) -> None:
    """A JSON list written one item at a time, one compact item per line: the items are never all in memory,
    and the output of a million images can be read line by line."""
    sys.stdout.write("[")
    n = 0
    for n, item in enumerate(items, 1):
        sys.stdout.write(("," if n > 1 else "") + "\n  " + json.dumps(item))
    sys.stdout.write("\n]\n" if n else "]\n")


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


#: Python advice in library errors, and what to say on the command line instead
_CLI_HINTS: tuple[tuple[str, str], ...] = (
    (r"prism\.dedup\(images, threshold=([0-9.]+)\)", r"--threshold \1"),
    (r"needs threshold= ", "needs a threshold "),
    (r"ImagePrism\(max_pixels=\.\.\.\)", "--max-pixels N"),
    (r"\(pass ids=\[\.\.\.\] to rename\)", "(pass --skip-existing to leave items already indexed alone)"),
    (r"build one with ImageIndex\.save", "build one with 'imageprism index build PATH... --out INDEX'"),
    (r"\w+Config\((?:model|embed)_path=\.\.\.\) for the (\w+) dimension", r"--model \1=PATH"),
)


def cli_message(message: str) -> str:
    """A library error message with its Python advice replaced by the matching command-line flag."""
    for pattern, replacement in _CLI_HINTS:
        message = re.sub(pattern, replacement, message)
    return message

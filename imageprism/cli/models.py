"""``imageprism models``: list, download and locate the model files.

- ``imageprism models list``: every default model of every dimension, with its
  pinned revision, size, licence and whether it is in the cache.
- ``imageprism models download [DIMENSION ...]``: fetch the default models of
  the given dimensions (all when none is given), or one file of your own with
  ``--repo/--file/--revision``.
- ``imageprism models path``: print the model cache directory.

The cache directory follows ``--cache-dir``, else ``IMAGEPRISM_CACHE_DIR``,
else the platform's user cache; the Hub endpoint follows ``HF_ENDPOINT``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from imageprism._runtime import ModelRuntime, ModelSpec, resolve_spec
from imageprism.cli._common import write_json
from imageprism.dimensions import available, parse_dimension, plugin_class
from imageprism.errors import ConfigError, ImagePrismError

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list, download and locate model files",
        description="List, download and locate the ONNX model files the model-backed dimensions use.",
    )
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    cache_help = "model cache directory (default: $IMAGEPRISM_CACHE_DIR or the user cache)"

    listing = actions.add_parser("list", help="list the default models and whether they are cached")
    listing.add_argument("--cache-dir", help=cache_help)
    listing.add_argument("--json", action="store_true", help="print every field (repository, revision, sizes...) as JSON")

    download = actions.add_parser(
        "download",
        help="download default models (all dimensions when none is named) or one file of your own",
    )
    download.add_argument("dimensions", nargs="*", metavar="DIMENSION", help="dimensions whose default models to fetch")
    download.add_argument("--repo", help="a Hub repository id (org/name) instead of the defaults")
    download.add_argument("--file", dest="filename", help="the file inside --repo, e.g. onnx/model.onnx")
    download.add_argument("--revision", help="commit hash (recommended) or branch of --repo (default: main)")
    download.add_argument("--force", action="store_true", help="download again even when cached")
    download.add_argument("--cache-dir", help=cache_help)

    path = actions.add_parser("path", help="print the model cache directory")
    path.add_argument("--cache-dir", help=cache_help)

    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    runtime = ModelRuntime(cache_dir=args.cache_dir)
    if args.models_command == "path":
        print(runtime.cache_path)
        return 0
    if args.models_command == "list":
        return _list(runtime, as_json=args.json)
    return _download(runtime, args)


def default_models(dimensions: Sequence[str] | None = None) -> list[ModelSpec]:
    """The default model specs of the named dimensions (all available ones when ``None``)."""
    names = available() if not dimensions else [parse_dimension(d) for d in dimensions]
    specs: list[ModelSpec] = []
    for name in names:
        specs.extend(plugin_class(name).default_models)
    return specs


def _size(n: int | None) -> str:
    if n is None:
        return "not pinned"
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f} MB"
    return f"{n / 1_000:.1f} kB"


def _list(runtime: ModelRuntime, *, as_json: bool = False) -> int:
    specs = default_models()
    if as_json:
        write_json({
            "cache": str(runtime.cache_path),
            "models": [
                {"dimension": s.dimension, "repo": s.repo, "file": s.filename, "revision": s.revision,
                 "size": s.size, "license": s.license, "cached": runtime.is_cached(s)}
                for s in specs
            ],
        })
        return 0
    if not specs:
        print(f"no model-backed dimensions are available (available: {', '.join(available())})")
        return 0
    # narrow: the file's name, not its repository path and revision (--json has every field)
    header = ("DIMENSION", "FILE", "SIZE", "LICENCE", "CACHED")
    rows = [header]
    for spec in specs:
        rows.append((
            spec.dimension or "?",
            spec.filename.rsplit("/", 1)[-1],
            _size(spec.size),
            _short_licence(spec.license),
            "yes" if runtime.is_cached(spec) else "no",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        print("  ".join([*cells, row[-1]]))
    print(f"cache: {runtime.cache_path}  (repositories and revisions: imageprism models list --json)")
    return 0


def _short_licence(text: str, width: int = 28) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _download(runtime: ModelRuntime, args: argparse.Namespace) -> int:
    if args.repo or args.filename or args.revision:
        if args.dimensions:
            raise ConfigError("give either DIMENSION names or --repo/--file/--revision, not both")
        if not (args.repo and args.filename):
            raise ConfigError("--repo and --file are both needed to download a file of your own")
        base = ModelSpec(repo=args.repo, filename=args.filename)
        specs = [resolve_spec(base, revision=args.revision)]
    else:
        specs = default_models(args.dimensions)
        if not specs:
            print("nothing to download: the selected dimensions use no model files")
            return 0
    failed = 0
    for spec in specs:
        try:
            path = runtime.fetch(spec, force=args.force)
        except ImagePrismError as exc:
            failed += 1
            sys.stderr.write(f"imageprism models download: error: {exc}\n")
            continue
        print(f"{spec.dimension or 'model'}: {spec.location} -> {path}")
    return 1 if failed else 0

"""``imageprism index build|add``: a searchable index of a catalogue of images (and video frames)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from imageprism._index import ImageIndex
from imageprism._results import Failure
from imageprism._video import frame_label
from imageprism.cli._common import (
    EXACT_CHOICES,
    add_cache_flag,
    add_exact_flag,
    add_limit_flags,
    add_selection_flags,
    add_workers_flag,
    apply_limits,
    prism_from_args,
    prism_with_cache,
)
from imageprism.cli._walk import image_files
from imageprism.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("index", help="build or extend a search index", description=__doc__)
    commands = parser.add_subparsers(dest="index_command", metavar="SUBCOMMAND", required=True)

    build = commands.add_parser(
        "build",
        help="index images, folders and videos into a new index directory",
        description="Embed every image (folders are searched recursively; videos are sampled at --fps) "
        "and save the index. Inputs that cannot be read are reported and skipped (exit code 1).",
    )
    build.add_argument("paths", nargs="*", metavar="PATH", help="image files, video files or folders")
    build.add_argument(
        "--from", dest="table", metavar="PARQUET",
        help="index the embeddings written by 'imageprism embed PATH... --out PARQUET' instead of images "
        "(select the same --dimensions/--hash/--model/--profile as then)",
    )
    build.add_argument("--out", required=True, metavar="INDEX", help="directory to write the index to")
    build.add_argument("--force", action="store_true", help="replace an index already at --out")
    add_exact_flag(build, "a search of the index")
    add_selection_flags(build)
    add_workers_flag(build)
    _add_fps(build)
    build.set_defaults(func=run_build)

    add = commands.add_parser(
        "add",
        help="add images to an existing index",
        description="Embed the images with the index's own configuration and add them to it.",
    )
    add.add_argument("index", metavar="INDEX", help="an index directory from 'imageprism index build'")
    add.add_argument("paths", nargs="+", metavar="PATH", help="image files, video files or folders")
    add.add_argument(
        "--skip-existing", action="store_true",
        help="leave files already in the index alone (e.g. re-adding a folder that grew) instead of failing",
    )
    add_cache_flag(add)
    add_workers_flag(add)
    _add_fps(add)
    add_limit_flags(add)
    add.set_defaults(func=run_add)


def _add_fps(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fps", type=float, default=1.0, metavar="RATE",
        help='frames per second sampled from videos (default: 1); needs PyAV: pip install ".[video]"',
    )


def run_build(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if (out / "manifest.json").exists() and not args.force:
        raise InputError(
            f"{args.out!r} already holds an index; add to it with 'imageprism index add {args.out} PATH...', "
            "or pass --force to replace it"
        )
    if (args.table is None) == (not args.paths):
        raise InputError("give either image paths or --from PARQUET (a table from 'imageprism embed --out'), one of the two")
    index = ImageIndex(prism_from_args(args), exact=EXACT_CHOICES[args.exact])
    failures: Sequence[Failure]
    if args.table is not None:
        failures = _add_table(index, args)
    else:
        failures = index.add(image_files(args.paths), fps=args.fps, on_error="skip", workers=args.workers)
    index.save(out)
    return _report(failures, f"indexed {len(index)} items into {args.out}", "index build")


def run_add(args: argparse.Namespace) -> int:
    index = ImageIndex.load(args.index, prism=prism_with_cache(args.index, args.cache))
    apply_limits(index.prism, args)
    before = len(index)
    files = image_files(args.paths)
    if args.skip_existing:
        files = [f for f in files if f not in index and frame_label(f, 0.0) not in index]
    failures = index.add(files, fps=args.fps, on_error="skip", workers=args.workers)
    index.save(args.index)
    return _report(failures, f"added {len(index) - before} items to {args.index} ({len(index)} in all)", "index add")


def _add_table(index: ImageIndex, args: argparse.Namespace) -> Sequence[Failure]:
    """Add the rows of the ``--from`` table (error rows are failures); ids are the paths."""
    from imageprism.columnar.parquet import read_parquet, table_embeddings

    if args.workers is not None:
        raise InputError("--workers does not apply to --from (nothing is decoded); drop --workers")
    inputs = table_embeddings(read_parquet(args.table), index.prism, source=args.table)
    rows = [(path, e) for path, e in zip(inputs.paths, inputs.embeddings) if e is not None]
    index.add_embeddings([e for _, e in rows], ids=[path for path, _ in rows])
    return inputs.failures


def _report(failures: Sequence[Failure], message: str, command: str) -> int:
    sys.stdout.write(message + "\n")
    for failure in failures:
        sys.stderr.write(f"imageprism {command}: error: {failure.error}\n")
    return 1 if failures else 0

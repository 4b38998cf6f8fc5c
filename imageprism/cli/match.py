"""``imageprism match LIBRARY... --inputs INPUT...``: each input's best library matches.

The library is folders and image files (embedded now, videos sampled at --fps), or
one saved index from 'imageprism index build' (with its own dimensions), plus any
folders to add to it for this run. Inputs (files or folders, walked recursively)
are embedded a chunk at a time and each is ranked against the whole library
exactly, so any number of inputs runs in bounded memory. Each input gets its best
K library items whose score reaches the threshold; an input without one is listed
with no match. Unreadable inputs are reported on stderr (exit code 1).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator, Sequence

from imageprism._index import ImageIndex
from imageprism._match import InputMatches, is_saved_index, match
from imageprism.cli._common import add_selection_flags, plural, prism_from_args, write_json_list
from imageprism.cli._walk import image_files
from imageprism.errors import ConfigError

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "match", help="find each input's best matches in a library of images", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("library", nargs="+", metavar="LIBRARY", help="library folders or images, or a saved index")
    parser.add_argument("--inputs", nargs="+", required=True, metavar="INPUT", help="images or folders to match")
    parser.add_argument(
        "--threshold", type=float, metavar="T",
        help="lowest score that counts as a match (default: the profile's, else 0.9 for hash)",
    )
    parser.add_argument("-k", type=int, default=1, metavar="K", help="matches per input (default: 1)")
    add_selection_flags(parser)
    parser.add_argument("--fps", type=float, default=1.0, metavar="RATE", help="frames per second sampled from library videos (default: 1)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help='print a JSON list of {"input", "matches": [{"id", "score", "scores"}]}')
    output.add_argument("--csv", action="store_true", help="print one CSV row per input and match: input, rank, match, score, score_DIM...")
    parser.set_defaults(func=run)


def open_library(paths: Sequence[str], args: argparse.Namespace) -> tuple[ImageIndex, int]:
    """The library index for ``paths`` (a saved index and/or files to embed), and the failures while building it."""
    saved = [p for p in paths if is_saved_index(p)]
    if len(saved) > 1:
        raise ConfigError(f"give at most one saved index as the library, not {len(saved)} ({', '.join(saved)})")
    if saved and (args.dimensions or args.profile):
        raise ConfigError(f"the saved index {saved[0]!r} has its own dimensions; drop --dimensions/--profile")
    index = ImageIndex.load(saved[0]) if saved else ImageIndex(prism_from_args(args))
    others = [p for p in paths if p not in saved]
    failures = index.add(image_files(others), fps=args.fps, on_error="skip") if others else ()
    for failure in failures:
        sys.stderr.write(f"imageprism match: library: skipped: {failure.error}\n")
    return index, len(failures)


def run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise ConfigError(f"-k {args.k} is invalid; give a positive number of matches per input")
    inputs = image_files(args.inputs)  # walked before the library is built, so a bad input path fails at once
    library, library_failures = open_library(args.library, args)
    results = match(library, inputs, threshold=args.threshold, k=args.k)
    dims = list(library.dimensions)
    counts = {"inputs": 0, "matched": 0, "failed": 0}

    def counted() -> Iterator[InputMatches]:
        for found in results:
            counts["inputs"] += 1
            counts["matched"] += bool(found.matches)
            if found.error is not None:
                counts["failed"] += 1
                sys.stderr.write(f"imageprism match: skipped: {found.error}\n")
            yield found

    if args.json:
        write_json_list(found.to_dict() for found in counted())
    elif args.csv:
        _write_csv(counted(), dims)
    else:
        for found in counted():
            _write_text(found)
        n = counts["inputs"]
        sys.stdout.write(
            f"{n} {plural(n, 'input')}: {counts['matched']} matched, {n - counts['matched'] - counts['failed']} without "
            f"a match, {counts['failed']} failed; library of {len(library)} {plural(len(library), 'item')}\n"
        )
    return 1 if counts["failed"] or library_failures else 0


def _write_csv(results: Iterator[InputMatches], dims: Sequence[str]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["input", "rank", "match", "score", *(f"score_{d}" for d in dims)])
    for found in results:
        if not found.matches:
            writer.writerow([found.input, "", "", "", *("" for _ in dims)])
        for rank, hit in enumerate(found.matches, 1):
            writer.writerow([found.input, rank, hit.id, f"{hit.score:.6f}",
                             *("" if hit.scores.get(d) is None else f"{hit.scores[d]:.6f}" for d in dims)])


def _write_text(found: InputMatches) -> None:
    if found.error is not None:
        sys.stdout.write(f"{found.input}  (failed)\n")
    elif not found.matches:
        sys.stdout.write(f"{found.input}  no match\n")
    for hit in found.matches:
        detail = ", ".join(f"{k} {'n/a' if v is None else f'{v:.4f}'}" for k, v in hit.scores.items())
        sys.stdout.write(f"{found.input}  ->  {hit.id}  {hit.score:.4f} ({detail})\n")

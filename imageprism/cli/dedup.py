"""``imageprism dedup PATH...``: group near-duplicate images, one representative per group.

Folders are walked recursively for image files (every extension Pillow reads) and
video files. A video's frames, sampled at --fps, are inputs labelled
"clip.mp4@12.50s" (needs PyAV: pip install ".[video]"); --frames writes the
distinct ones as PNG. Inputs are visited in the --keep order (default: largest
first, so the largest copy of each group is the one kept; video frames in time
order); each joins the first representative whose score with it reaches the
threshold, else is kept. With --linkage connected an image joins a group when it
reaches the threshold with any member (a crop that matches the original but not
its rotated copy), while every member stays within --max-hops such links of the
kept copy (default 2). Every duplicate is shown with its score to the kept copy,
blended and per dimension. Unreadable files are reported on stderr (exit code 1)
and listed as failures; the others are still grouped.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from imageprism._dedup import DedupResult, check_threshold, default_threshold
from imageprism._files import atomic_write, check_writable_folder
from imageprism._keep import KEEP_POLICIES, dedup_in_order, keep_order
from imageprism._search.components import DEFAULT_MAX_HOPS, LINKAGES
from imageprism._video import dedup_inputs, is_video, write_frames
from imageprism.cli._common import (
    EXACT_CHOICES,
    add_exact_flag,
    add_selection_flags,
    add_workers_flag,
    check_output_files,
    cli_message,
    plural,
    prism_from_args,
    write_json,
)
from imageprism.cli._evidence import Member, members, score_text
from imageprism.cli._walk import image_files
from imageprism.columnar.parquet import read_parquet, table_embeddings, table_keep_order
from imageprism.errors import ConfigError, InputError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "dedup", help="group near-duplicate images", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", metavar="PATH", nargs="*", help="image files or folders (walked recursively)")
    parser.add_argument(
        "--from", dest="table", metavar="PARQUET",
        help="start from the embeddings written by 'imageprism embed PATH... --out PARQUET' instead of images "
        "(select the same --dimensions/--hash/--model/--profile as then)",
    )
    parser.add_argument(
        "--threshold", type=float, metavar="T",
        help="score from 0 to 1 at which two images are duplicates (default: the profile's, else 0.9 for hash)",
    )
    add_selection_flags(parser)
    add_workers_flag(parser)
    parser.add_argument(
        "--keep", choices=KEEP_POLICIES, default="largest",
        help="which copy of a group is kept as its representative: largest (most pixels, then largest "
        "file; the default), newest or oldest (file time), or first (sorted path order)",
    )
    parser.add_argument(
        "--linkage", choices=LINKAGES, default="representative",
        help="representative (the default): an image joins a group when it matches the kept copy; connected: "
        "when it matches any member (finds every copy; groups can link through members)",
    )
    add_exact_flag(parser, "dedup")
    parser.add_argument(
        "--max-hops", type=int, default=None, metavar="N",
        help=f"with --linkage connected: the most links (pairs reaching the threshold) between a member and the "
        f"kept copy (default: {DEFAULT_MAX_HOPS}, copies that match the same original; 0: no cap); longer chains are split",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print every group as JSON, with scores")
    output.add_argument(
        "--csv", action="store_true",
        help="print one CSV row per input: path, representative, group, is_representative, score, score_DIM...",
    )
    parser.add_argument("--contact-sheet", metavar="PNG", help="write a PNG grid of the duplicate groups for review")
    parser.add_argument(
        "--report", metavar="HTML",
        help="write a self-contained HTML page of the duplicate groups (thumbnails, paths, sizes, scores)",
    )
    parser.add_argument("--fps", type=float, default=1.0, metavar="RATE", help="frames per second sampled from videos (default: 1)")
    parser.add_argument("--frames", metavar="DIR", help="write the distinct frames of the videos as PNG files to DIR")
    parser.add_argument("--out", dest="frames_old", metavar="DIR", help=argparse.SUPPRESS)  # deprecated alias of --frames
    parser.add_argument("--force", action="store_true", help="let --contact-sheet, --report and --frames replace existing files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.frames_old:
        sys.stderr.write("imageprism dedup: note: --out is now --frames (--out will be removed)\n")
        args.frames = args.frames or args.frames_old
    if args.table is not None and args.paths:
        raise InputError("give either image paths or --from PARQUET, not both")
    if args.table is None and not args.paths:
        raise InputError("give image files or folders to dedup, or --from PARQUET (a table from 'imageprism embed --out')")
    table = None if args.table is None else read_parquet(args.table)
    files = image_files(args.paths) if table is None else table.column("path").to_pylist()
    videos = [f for f in files if f is not None and is_video(f)]
    if args.frames and not videos:
        raise InputError("--frames writes the distinct frames of videos, and no input is a video file")
    for flag, value in (("--contact-sheet", args.contact_sheet), ("--report", args.report)):
        if value and videos:
            raise InputError(f"{flag} shows image files; for videos, write the distinct frames with --frames DIR")
    outputs = [p for p in (args.contact_sheet, args.report) if p]
    check_output_files(outputs, files, force=args.force)  # before the work, so a bad path fails at once
    if args.frames:
        check_writable_folder(args.frames, what="--frames")
    max_hops = _max_hops(args)
    exact = EXACT_CHOICES[args.exact]
    if exact is False and args.linkage == "connected":
        raise ConfigError("--exact false is for --linkage representative (--linkage connected searches exactly); drop one of the two")
    prism = prism_from_args(args)
    threshold = check_threshold(default_threshold(prism.blend, prism.plugins) if args.threshold is None else args.threshold)
    if table is not None:
        if args.workers is not None:
            raise InputError("--workers does not apply to --from (nothing is decoded); drop --workers")
        loaded = table_embeddings(table, prism, source=args.table)
        keep, files, embeddings = args.keep, loaded.paths, loaded.embeddings
        order = table_keep_order(table, keep)
        result = dedup_in_order(
            prism, embeddings, loaded.failures, order, threshold, linkage=args.linkage, max_hops=max_hops, exact=exact
        )
    elif videos:
        embedded, result = dedup_inputs(
            prism, files, threshold, fps=args.fps, linkage=args.linkage, max_hops=max_hops, workers=args.workers, exact=exact
        )
        inputs, files, embeddings, keep = files, list(embedded.labels), embedded.embeddings, "first"
    else:
        keep = args.keep
        order = keep_order(files, keep)
        batch = prism.embed_batch(files, on_error="skip", workers=args.workers)
        result = dedup_in_order(
            prism, batch.embeddings, batch.failures, order, threshold, linkage=args.linkage, max_hops=max_hops, exact=exact
        )
        embeddings = batch.embeddings
    rows = members(prism, result, files, embeddings)
    dims = list(prism.dimensions)
    if args.json:
        write_json(as_json(result, files, rows, keep))
    elif args.csv:
        write_csv(result, files, rows, dims)
        sys.stderr.write(f"imageprism dedup: representatives: {_KEPT[keep]} (--keep {keep})\n")
    else:
        sys.stdout.write(as_text(result, files, rows, keep))
    if args.contact_sheet:
        _write_contact_sheet(rows, args.contact_sheet, args.force)
    if args.report:
        _write_report(rows, args.report, as_text(result, files, [], keep).strip(), args.force)
    if args.frames:
        written = []
        stems = _frame_stems([inputs[o] for o in dict.fromkeys(embedded.origins)])
        for origin in dict.fromkeys(embedded.origins[i] for i in result.unique if embedded.times[i] is not None):
            times = [embedded.times[i] for i in result.unique if embedded.origins[i] == origin]
            written += write_frames(inputs[origin], times, args.frames, fps=args.fps,
                                    stem=stems[inputs[origin]], overwrite=args.force)
        sys.stderr.write(f"{len(written)} distinct frames written to {args.frames}\n")
    for failure in result.failures:
        sys.stderr.write(f"imageprism dedup: skipped: {cli_message(str(failure.error))}\n")
    return 1 if result.failures else 0


def _max_hops(args: argparse.Namespace) -> int | None:
    """``--max-hops`` as ``dedup``'s ``max_hops`` (0: no cap), checked before any work."""
    if args.max_hops is None:
        return DEFAULT_MAX_HOPS
    if args.linkage != "connected":
        raise ConfigError(f"--max-hops {args.max_hops} applies to --linkage connected only; add --linkage connected or drop --max-hops")
    if args.max_hops < 0:
        raise ConfigError(f"--max-hops {args.max_hops} is invalid; use 1 or more links, or 0 for no cap")
    return args.max_hops or None


def _frame_stems(videos: Sequence[str]) -> dict[str, str]:
    """A file-name stem per video; videos sharing a stem get ``stem-2``, ``stem-3``... so frames never collide."""
    stems: dict[str, str] = {}
    taken: set[str] = set()
    for video in videos:
        base = Path(video).stem
        stem, n = base, 1
        while stem in taken:
            n += 1
            stem = f"{base}-{n}"
        taken.add(stem)
        stems[video] = stem
    return stems


def _write_contact_sheet(rows: Sequence[Member], path: str, force: bool) -> None:
    from imageprism.cli._contact_sheet import contact_sheet

    groups = _duplicate_groups(rows)
    captions = [[f"#{m.group} {'kept' if m.score is None else f'{m.score:.3f}'} {Path(m.name).name}" for m in g]
                for g in groups]
    buffer = io.BytesIO()
    contact_sheet([[m.name for m in g] for g in groups], names=captions).save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue(), overwrite=force)
    sys.stderr.write(f"contact sheet of {len(groups)} {plural(len(groups), 'group')} written to {path}\n")


def _write_report(rows: Sequence[Member], path: str, summary: str, force: bool) -> None:
    from imageprism._keep import pixels_and_bytes
    from imageprism.cli._report import html_report

    shown = [m for g in _duplicate_groups(rows) for m in g]
    sizes = {}
    for m in shown:
        pixels, size = pixels_and_bytes(m.name)
        dims = _dimensions(m.name)
        sizes[m.index] = (dims or f"{pixels} pixels", f"{size / 1000:.1f} kB")
    page = html_report(shown, title="imageprism dedup", summary=summary, sizes=sizes)
    atomic_write(path, page, overwrite=force)
    sys.stderr.write(f"report of {len(_duplicate_groups(rows))} groups written to {path}\n")


def _dimensions(path: str) -> str:
    try:
        with Image.open(path) as image:
            return f"{image.width}x{image.height}"
    except Exception:  # noqa: BLE001 - unreadable now: the report says so
        return "unreadable"


def _duplicate_groups(rows: Sequence[Member]) -> list[list[Member]]:
    groups: dict[int, list[Member]] = {}
    for m in rows:
        groups.setdefault(m.group, []).append(m)
    return [g for g in groups.values() if len(g) > 1]


def as_json(result: DedupResult, files: Sequence[str], rows: Sequence[Member], keep: str) -> dict[str, object]:
    by_group: dict[int, list[Member]] = {}
    for m in rows:
        by_group.setdefault(m.group, []).append(m)
    return {
        "threshold": result.threshold,
        "keep": keep,
        "linkage": "connected" if result.scores is not None else "representative",
        "count": len(files),
        "unique": len(result.unique),
        "groups": [
            {
                "id": group,
                "representative": files[members_[0].representative],
                "members": [m.name for m in members_],
                "scores": [{"path": m.name, "score": m.score, "scores": m.scores}
                           for m in members_ if not m.is_representative],
            }
            for group, members_ in by_group.items()
        ],
        "failures": [{"path": files[f.index], "error": str(f.error)} for f in result.failures],
    }


def write_csv(result: DedupResult, files: Sequence[str], rows: Sequence[Member], dims: Sequence[str]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["path", "representative", "group", "is_representative", "score", *(f"score_{d}" for d in dims)])
    by_index = {m.index: m for m in rows}
    for i, path in enumerate(files):
        m = by_index.get(i)
        if m is None:  # a failed input
            writer.writerow([path, "", "", "", "", *("" for _ in dims)])
            continue
        scores = m.scores or {}
        writer.writerow([
            path, files[m.representative], m.group, str(m.is_representative).lower(), _cell(m.score),
            *(_cell(scores.get(d)) for d in dims),
        ])


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def as_text(result: DedupResult, files: Sequence[str], rows: Sequence[Member], keep: str) -> str:
    lines = []
    for group in _duplicate_groups(rows):
        lines.append(f"group {group[0].group} ({len(group)} images)")
        lines.extend(f"  * {m.name}  [kept]" if m.is_representative else f"    {m.name}  {score_text(m)}" for m in group)
    dup = result.duplicate_groups
    singles = len(result.unique) - len(dup)
    duplicates = sum(len(m) - 1 for m in dup.values())
    lines.append(
        f"{len(files)} inputs: {len(result.unique)} unique, {len(dup)} {plural(len(dup), 'group')} with duplicates "
        f"({duplicates} {plural(duplicates, 'duplicate')}), {singles} without a duplicate, "
        f"{len(result.failures)} failed (threshold {result.threshold:g}{_linkage_note(result)}; "
        f"kept: {_KEPT[keep]}, --keep {keep})"
    )
    return "\n".join(lines) + "\n"


def _linkage_note(result: DedupResult) -> str:
    """``; --linkage connected, lowest score to a kept copy 0.8312`` (empty for the greedy linkage)."""
    if result.scores is None:
        return ""
    members = result.scores[(result.labels >= 0) & (result.labels != np.arange(len(result.labels)))]
    lowest = f", lowest score to a kept copy {members.min():.4f}" if len(members) else ""
    return f"; --linkage connected{lowest}"


_KEPT = {
    "first": "the first copy in sorted path order",
    "largest": "the largest copy (most pixels, then largest file)",
    "newest": "the newest copy (file time)",
    "oldest": "the oldest copy (file time)",
}

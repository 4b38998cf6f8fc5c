"""``imageprism dedup PATH...``: group near-duplicate images, one representative per group.

Folders are walked recursively for image files (every extension Pillow reads) and
video files. A video's frames, sampled at --fps, are inputs labelled
"clip.mp4@12.50s" (needs imageprism[video]); --out writes the distinct ones as PNG.
Inputs are taken in sorted path order; each joins the first representative whose
score with it reaches the threshold. Unreadable files are reported on stderr (exit
code 1) and listed as failures; the others are still grouped.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from imageprism._dedup import DedupResult
from imageprism._video import VIDEO_EXTENSIONS, dedup_inputs, is_video, write_frames
from imageprism.cli._common import add_selection_flags, prism_from_args, write_json
from imageprism.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "dedup", help="group near-duplicate images", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders (walked recursively)")
    parser.add_argument(
        "--threshold", type=float, metavar="T",
        help="score from 0 to 1 at which two images are duplicates (default: the profile's, else 0.9 for hash)",
    )
    add_selection_flags(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print every group as JSON")
    output.add_argument("--csv", action="store_true", help="print one CSV row per input: path, representative, group")
    parser.add_argument("--contact-sheet", metavar="PNG", help="write a PNG grid of the duplicate groups for review")
    parser.add_argument("--fps", type=float, default=1.0, metavar="RATE", help="frames per second sampled from videos (default: 1)")
    parser.add_argument("--out", metavar="DIR", help="write the distinct frames of the videos as PNG files to DIR")
    parser.set_defaults(func=run)


def image_files(paths: Sequence[str]) -> list[str]:
    """Files as given; folders replaced by the image and video files below them (recursive, sorted)."""
    wanted = set(Image.registered_extensions()) | set(VIDEO_EXTENSIONS)
    out: list[str] = []
    for path in paths:
        if not os.path.isdir(path):
            out.append(path)
            continue
        found = sorted(str(p) for p in Path(path).rglob("*") if p.suffix.lower() in wanted and p.is_file())
        if not found:
            raise InputError(
                f"folder {path!r} holds no image files (looked for .jpg, .png, .webp and the other Pillow "
                "formats) and no video files (.mp4, .mov, .mkv, .webm and the other video extensions)"
            )
        out.extend(found)
    return out


def run(args: argparse.Namespace) -> int:
    files = image_files(args.paths)
    prism = prism_from_args(args)
    videos = [f for f in files if is_video(f)]
    if args.out and not videos:
        raise InputError("--out writes the distinct frames of videos, and no input is a video file")
    if args.contact_sheet and videos:
        raise InputError("--contact-sheet shows image files; for videos, write the distinct frames with --out DIR")
    if videos:
        embedded, result = dedup_inputs(prism, files, args.threshold, fps=args.fps)
        inputs, files = files, list(embedded.labels)
    else:
        result = prism.dedup(files, args.threshold, on_error="skip")
    if args.json:
        write_json(as_json(result, files))
    elif args.csv:
        write_csv(result, files)
    else:
        sys.stdout.write(as_text(result, files))
    if args.contact_sheet:
        from imageprism.cli._contact_sheet import contact_sheet

        groups = [[files[i] for i in members] for members in result.duplicate_groups.values()]
        contact_sheet(groups).save(args.contact_sheet, format="PNG")
        sys.stderr.write(f"contact sheet of {len(groups)} groups written to {args.contact_sheet}\n")
    if args.out:
        written = []
        for origin in dict.fromkeys(embedded.origins[i] for i in result.unique if embedded.times[i] is not None):
            times = [embedded.times[i] for i in result.unique if embedded.origins[i] == origin]
            written += write_frames(inputs[origin], times, args.out, fps=args.fps)
        sys.stderr.write(f"{len(written)} distinct frames written to {args.out}\n")
    for failure in result.failures:
        sys.stderr.write(f"imageprism dedup: skipped: {failure.error}\n")
    return 1 if result.failures else 0


def as_json(result: DedupResult, files: Sequence[str]) -> dict[str, object]:
    return {
        "threshold": result.threshold,
        "count": len(files),
        "unique": len(result.unique),
        "groups": [
            {"representative": files[rep], "members": [files[i] for i in members]}
            for rep, members in result.groups.items()
        ],
        "failures": [{"path": files[f.index], "error": str(f.error)} for f in result.failures],
    }


def write_csv(result: DedupResult, files: Sequence[str]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["path", "representative", "group", "is_representative"])
    group_of = {rep: g for g, rep in enumerate(result.groups)}
    for i, (path, label) in enumerate(zip(files, result.labels.tolist())):
        if label < 0:
            writer.writerow([path, "", "", ""])
        else:
            writer.writerow([path, files[label], group_of[label], str(label == i).lower()])


def as_text(result: DedupResult, files: Sequence[str]) -> str:
    dup = result.duplicate_groups
    lines = []
    for number, (rep, members) in enumerate(dup.items(), 1):
        lines.append(f"group {number} ({len(members)} images)")
        lines.append(f"  * {files[rep]}")
        lines.extend(f"    {files[i]}" for i in members[1:])
    singles = len(result.unique) - len(dup)
    lines.append(
        f"{len(files)} inputs: {len(result.unique)} unique, {len(dup)} groups with duplicates "
        f"({sum(len(m) - 1 for m in dup.values())} duplicates), {singles} without a duplicate, "
        f"{len(result.failures)} failed (threshold {result.threshold:g})"
    )
    return "\n".join(lines) + "\n"

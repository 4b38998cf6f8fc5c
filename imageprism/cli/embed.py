"""``imageprism embed IMAGE|DIR...``: embeddings to store in your own index.

Folders are walked recursively for image files. Unreadable files are reported on
stderr (exit code 1) and, with --json, listed with their error.

With --out FILE.parquet the embeddings go to a Parquet table instead (needs pyarrow:
pip install ".[parquet]"): one row per input with path, file size, mtime, pixel key,
width, height, one column per dimension and an error column (failed inputs are rows
too), in input order, the same table whatever --workers. Written in chunks and
atomically (a killed run leaves no table; with --cache, running it again resumes);
'imageprism dedup --from FILE.parquet' and 'imageprism index build --from FILE.parquet'
start from it without decoding again.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from imageprism.cli._common import (
    add_selection_flags,
    add_workers_flag,
    check_output_files,
    cli_message,
    prism_from_args,
    write_json_list,
)
from imageprism.cli._walk import image_files
from imageprism.errors import InputError

if TYPE_CHECKING:
    from imageprism._prism import ImagePrism


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "embed", help="print the embeddings of images", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (walked recursively)")
    add_selection_flags(parser)
    add_workers_flag(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON (hashes as hex, vectors as lists; failures with their error)")
    output.add_argument(
        "--out", metavar="PARQUET",
        help="write the embeddings to a Parquet table, one row per input in input order (any --workers: the same table)",
    )
    parser.add_argument("--force", action="store_true", help="let --out replace an existing file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    files = image_files(args.images)
    if args.out:
        return _write_table(args, files)
    if args.force:
        raise InputError("--force applies to --out only; add --out FILE.parquet or drop --force")
    prism = prism_from_args(args)
    batch = prism.embed_batch(files, on_error="skip", workers=args.workers)
    errors = {f.index: cli_message(str(f.error)) for f in batch.failures}
    records = (_record(prism, path, embedding, errors.get(i)) for i, (path, embedding) in enumerate(zip(files, batch.embeddings)))
    if args.json:
        write_json_list(records)  # streamed, one image per line
    else:
        for record in records:
            sys.stdout.write(f"{record['image']}\n")
            if "error" in record:
                sys.stdout.write(f"  failed: {record['error']}\n")
            for name, value in record.items():
                if name not in ("image", "error"):
                    sys.stdout.write(f"  {name}: {_short(value)}\n")
    for message in errors.values():
        sys.stderr.write(f"imageprism embed: error: {message}\n")
    return 1 if batch.failures else 0


def _write_table(args: argparse.Namespace, files: list[str]) -> int:
    from imageprism.columnar.embed import ArrowEmbedder
    from imageprism.columnar.parquet import write_parquet
    from imageprism.columnar.schema import pyarrow

    pyarrow()  # a missing extra fails before any work
    check_output_files([args.out], files, force=args.force)
    embedder = ArrowEmbedder.from_prism(prism_from_args(args))
    failures = write_parquet(embedder, files, args.out, overwrite=args.force, workers=args.workers, progress=None)
    sys.stderr.write(f"{len(files)} rows ({failures} failed) written to {args.out}\n")
    return 1 if failures else 0


def _record(prism: ImagePrism, path: str, embedding: Mapping[str, Any] | None, error: str | None) -> dict[str, object]:
    if embedding is None:
        return {"image": path, "error": error or str(InputError(f"{path} could not be embedded"))}
    return {"image": path, **{name: prism.plugins[name].to_json(value) for name, value in embedding.items()}}


def _short(value: object) -> str:
    if isinstance(value, dict):
        plain = {k: v for k, v in value.items() if "/" not in str(k)}
        variants = len(value) - len(plain)
        text = "  ".join(f"{k}={v}" for k, v in plain.items())
        return text + (f"  (+{variants} hashes of flips, rotations and crops; --json shows them)" if variants else "")
    if isinstance(value, list) and len(value) > 6:
        head = ", ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in value[:4])
        return f"[{head}, ...] ({len(value)} values)"
    return str(value)

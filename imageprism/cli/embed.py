"""``imageprism embed IMAGE...``: embeddings to store in your own index."""

from __future__ import annotations

import argparse
import sys

from imageprism.cli._common import add_selection_flags, prism_from_args, write_json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("embed", help="print the embeddings of images", description=__doc__)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    add_selection_flags(parser)
    parser.add_argument("--json", action="store_true", help="print JSON (hashes as hex, vectors as lists)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    prism = prism_from_args(args)
    batch = prism.embed_batch(args.images, on_error="skip")
    records = []
    for path, embedding in zip(args.images, batch.embeddings):
        if embedding is not None:
            records.append({"image": path, **{name: prism.plugins[name].to_json(value)
                                              for name, value in embedding.items()}})
    if args.json:
        write_json(records)
    else:
        for record in records:
            sys.stdout.write(f"{record['image']}\n")
            for name, value in record.items():
                if name != "image":
                    sys.stdout.write(f"  {name}: {_short(value)}\n")
    for failure in batch.failures:
        sys.stderr.write(f"imageprism embed: error: {failure.error}\n")
    return 1 if batch.failures else 0


def _short(value: object) -> str:
    if isinstance(value, dict):
        return "  ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list) and len(value) > 6:
        head = ", ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in value[:4])
        return f"[{head}, ...] ({len(value)} values)"
    return str(value)

"""``imageprism search INDEX IMAGE``: the images of an index most similar to IMAGE."""

from __future__ import annotations

import argparse
import sys

from imageprism._index import ImageIndex
from imageprism.cli._common import add_cache_flag, add_limit_flags, apply_limits, prism_with_cache, write_json
from imageprism.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("search", help="find the images of an index most similar to an image", description=__doc__)
    parser.add_argument("index", metavar="INDEX", help="an index directory from 'imageprism index build'")
    parser.add_argument("image", metavar="IMAGE", help="the query image")
    parser.add_argument("-k", type=int, default=10, metavar="K", help="number of hits (default: 10)")
    ranking = parser.add_mutually_exclusive_group()
    ranking.add_argument(
        "--dimensions", "--dimension", dest="dimension", metavar="DIM",
        help="rank by one indexed dimension, e.g. hash (--dimension is the older spelling)",
    )
    ranking.add_argument("--weights", metavar="DIM=W,...", help="rank by these weights, e.g. hash=0.3,semantic=0.7")
    ranking.add_argument("--profile", metavar="NAME|PATH", help="rank by a profile (its dimensions must be indexed)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_cache_flag(parser)
    add_limit_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    index = ImageIndex.load(args.index, prism=prism_with_cache(args.index, args.cache))
    apply_limits(index.prism, args)
    if args.dimension and "," in args.dimension:
        raise ConfigError(f"--dimensions {args.dimension!r}: search ranks by one dimension; to blend, use --weights DIM=W,...")
    weights = _parse_weights(args.weights) if args.weights else None
    hits = index.search(args.image, k=args.k, dimension=args.dimension, weights=weights, profile=args.profile)
    if args.json:
        write_json({"index": args.index, "query": args.image, "hits": [hit.to_dict() for hit in hits]})
        return 0
    for rank, hit in enumerate(hits, 1):
        detail = "  ".join(f"{name}={'n/a' if score is None else f'{score:.4f}'}" for name, score in hit.scores.items())
        sys.stdout.write(f"{rank:>3}  {hit.score:.4f}  {hit.id}  ({detail})\n")
    return 0


def _parse_weights(text: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"--weights {text!r} is invalid at {part!r}; use DIM=WEIGHT pairs, e.g. hash=0.3,semantic=0.7")
    return weights

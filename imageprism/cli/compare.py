"""``imageprism compare A B``: similarity of two images."""

from __future__ import annotations

import argparse
import sys

from imageprism.cli._common import add_selection_flags, fmt_score, prism_from_args, write_json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("compare", help="score how similar two images are", description=__doc__)
    parser.add_argument("a", metavar="A", help="first image file")
    parser.add_argument("b", metavar="B", help="second image file")
    add_selection_flags(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    prism = prism_from_args(args)
    result = prism.compare(args.a, args.b)
    if args.json:
        write_json({"a": args.a, "b": args.b, **result.to_dict()})
        return 0
    width = max(len(name) for name in [*result.scores, "weighted"])
    lines = [f"{name:<{width}}  {fmt_score(score)}  (weight {result.weights[name]:.3g})"
             for name, score in result.scores.items()]
    lines.append(f"{'weighted':<{width}}  {result.weighted_score:.4f}")
    if result.threshold is not None:
        verdict = "match" if result.is_match else "no match"
        lines.append(f"{'verdict':<{width}}  {verdict} (threshold {result.threshold:.3g})")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0

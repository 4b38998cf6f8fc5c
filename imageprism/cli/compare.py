"""``imageprism compare A B``: similarity of two images."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from imageprism._dedup import check_threshold, default_threshold
from imageprism._prism import ImagePrism
from imageprism.cli._common import (
    add_selection_flags,
    fmt_score,
    prism_from_args,
    write_json,
)
from imageprism.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("compare", help="score how similar two images are", description=__doc__)
    parser.add_argument("a", metavar="A", help="first image file")
    parser.add_argument("b", metavar="B", help="second image file")
    add_selection_flags(parser)
    parser.add_argument(
        "--threshold", type=float, metavar="T",
        help="score from 0 to 1 from which the pair is a match (default: the profile's, else 0.9 for hash alone)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    prism = prism_from_args(args)
    result = prism.compare(args.a, args.b)
    threshold, source = _threshold(args.threshold, result.threshold, prism)
    if threshold is not None:
        result = dataclasses.replace(result, threshold=check_threshold(threshold))
    if args.json:
        write_json({"a": args.a, "b": args.b, **result.to_dict(), "threshold_source": source})
        return 0
    width = max(len(name) for name in [*result.scores, "weighted"])
    lines = [f"{name:<{width}}  {fmt_score(score)}  (weight {result.weights[name]:.3g})"
             for name, score in result.scores.items()]
    lines.append(f"{'weighted':<{width}}  {result.weighted_score:.4f}")
    if result.threshold is not None:
        verdict = "match" if result.is_match else "no match"
        lines.append(f"{'verdict':<{width}}  {verdict} (threshold {result.threshold:.3g}, {source})")
    else:
        lines.append(f"{'verdict':<{width}}  none: no default threshold for these dimensions; give --threshold T or --profile")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _threshold(given: float | None, profile: float | None, prism: ImagePrism) -> tuple[float | None, str | None]:
    """The threshold for the verdict and where it comes from: --threshold, the profile, or the dimension's default."""
    if given is not None:
        return given, "--threshold"
    if profile is not None:
        return profile, "the profile's"
    try:
        return default_threshold(prism.blend, prism.plugins), "the default for " + ", ".join(prism.weights)
    except ConfigError:
        return None, None

"""``imageprism profiles``: list the built-in profiles, or check and show profile files."""

from __future__ import annotations

import argparse
import sys

from imageprism._profiles import ProfileSpec, list_profiles, load_profile
from imageprism.cli._common import write_json

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "profiles",
        help="list the profiles: dimensions, weights, threshold",
        description=(
            "List the built-in profiles with their dimensions, weights, match threshold and "
            "missing-score policy. Give names or paths of .yaml files to show (and validate) those instead."
        ),
    )
    parser.add_argument(
        "profiles",
        nargs="*",
        metavar="NAME|PATH",
        help="built-in profile names or profile files to show (default: every built-in profile)",
    )
    parser.add_argument("--json", action="store_true", help="print the profiles as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    specs = [load_profile(p) for p in args.profiles] if args.profiles else list_profiles()
    if args.json:
        write_json([spec.as_dict() for spec in specs])
    else:
        sys.stdout.write("\n".join(_format(spec) for spec in specs))
    return 0


def _format(spec: ProfileSpec) -> str:
    weights = "  ".join(f"{dim} {weight:.2f}" for dim, weight in spec.weights.items())
    threshold = "none (ranking only)" if spec.threshold is None else f"{spec.threshold:g}"
    lines = [
        f"{spec.name}: {spec.summary}",
        f"  weights    {weights}",
        f"  threshold  {threshold}",
        f"  missing    {spec.missing}",
    ]
    if spec.settings:
        for dim, values in spec.settings.items():
            fields = ", ".join(f"{key}={value!r}" for key, value in values.items())
            lines.append(f"  settings   {dim}: {fields}")
    return "\n".join(lines) + "\n"

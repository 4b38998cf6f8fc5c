"""What a prism scores: its plugins, and the blend chosen by ``dimensions=``, ``weights=`` or ``profile=``.

One home for the selection rules, used by :class:`~imageprism.ImagePrism`, the index and its loader.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import cast

from imageprism._blend import Blend
from imageprism._profiles import ProfileSpec, load_profile, normalize_weights
from imageprism._runtime import ModelRuntime
from imageprism._types import Dimension, Profile
from imageprism.dimensions import DimensionPlugin, Registry, known_names, parse_dimension, plugin_class
from imageprism.errors import ConfigError

__all__ = ["build_plugins", "resolve_blend"]


def build_plugins(
    names: Iterable[str], configs: Mapping[str, object], runtime: ModelRuntime, registry: Registry | None = None
) -> dict[str, DimensionPlugin]:
    """One plugin per dimension name, with its config from ``configs`` (else the default config)."""
    plugins: dict[str, DimensionPlugin] = {}
    for name in names:
        cls = plugin_class(name, registry)
        plugins[name] = cls(configs.get(name) or cls.config_type(), runtime)
    return plugins


def resolve_blend(
    *,
    dimensions: Iterable[Dimension | str] | Dimension | str | None = None,
    weights: Mapping[Dimension | str, float] | None = None,
    profile: Profile | str | os.PathLike[str] | ProfileSpec | None = None,
    registry: Registry | None = None,
) -> tuple[Blend, ProfileSpec | None]:
    """The one resolver of ``dimensions=`` / ``weights=`` / ``profile=`` into a :class:`Blend`.

    ``weights=`` selects the dimensions (and replaces a profile's weights);
    ``dimensions=`` alone weights them equally; a profile gives weights, missing
    policy and threshold; nothing at all means hash alone. Returns the blend and the
    loaded profile (``None`` without one). ``registry`` adds dimension names (see ``ImagePrism``).
    """
    known = known_names(registry)
    spec = profile if isinstance(profile, ProfileSpec) else load_profile(profile) if profile is not None else None
    if isinstance(dimensions, (str, Dimension)):
        dimensions = [dimensions]
    if spec is not None and dimensions is not None:
        raise ConfigError(
            f"give either profile= or dimensions=, not both (profile {spec.name!r}); "
            "to change a profile's dimensions, pass weights="
        )
    if weights is not None:
        chosen = normalize_weights(cast("Mapping[object, object]", weights), source="ImagePrism(weights=...)", known=known)
        if dimensions is not None:
            names = [parse_dimension(d, known) for d in dimensions]
            if sorted(set(names)) != sorted(chosen):
                raise ConfigError(
                    f"dimensions={names} and the keys of weights={sorted(chosen)} differ; "
                    "give weights= alone (its keys select the dimensions)"
                )
    elif dimensions is not None:
        names = list(dict.fromkeys(parse_dimension(d, known) for d in dimensions))
        if not names:
            raise ConfigError("dimensions= is empty; give at least one of: " + ", ".join(d.value for d in Dimension))
        chosen = {name: 1.0 / len(names) for name in names}
    elif spec is not None:
        chosen = dict(spec.weights)
    else:
        chosen = {"hash": 1.0}
    if spec is None:
        return Blend(chosen), None
    return Blend(chosen, spec.missing, spec.threshold), spec

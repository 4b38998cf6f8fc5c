"""The dimension registry: one line per dimension, imported lazily.

Adding a dimension is one module in this package (named after the dimension)
plus one line here. Modules load on first use, so ``import imageprism`` stays
cheap and a dimension's heavy imports never slow the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Mapping

from imageprism._types import Dimension
from imageprism.dimensions._base import DimensionPlugin, ImageRequest, Layout
from imageprism.errors import ConfigError, DimensionUnavailableError

__all__ = [
    "REGISTRY",
    "DimensionPlugin",
    "ImageRequest",
    "Layout",
    "Registry",
    "available",
    "known_names",
    "parse_dimension",
    "plugin_class",
]

#: dimension name -> "module:PluginClass"
REGISTRY: dict[str, str] = {
    "hash": "imageprism.dimensions.hash:HashDimension",
    "semantic": "imageprism.dimensions.semantic:SemanticDimension",
    "instance": "imageprism.dimensions.instance:InstanceDimension",
    "style": "imageprism.dimensions.style:StyleDimension",
    "face": "imageprism.dimensions.face:FaceDimension",
}


#: dimension classes given to one ``ImagePrism`` (``registry=``), consulted before :data:`REGISTRY`
Registry = Mapping[str, type[DimensionPlugin]]


def known_names(registry: Registry | None = None) -> list[str]:
    """Every dimension name: the ``Dimension`` members, the registry's, and ``registry``'s."""
    return list(dict.fromkeys([*(d.value for d in Dimension), *REGISTRY, *(registry or {})]))


def parse_dimension(value: object, known: Collection[str] | None = None) -> str:
    """Normalise a :class:`Dimension` member or plain string to the dimension name.

    ``known``: the valid names (default: :func:`known_names`).
    """
    valid = list(known) if known is not None else known_names()
    if isinstance(value, Dimension) and value.value in valid:
        return value.value
    if isinstance(value, str):
        name = value.strip().lower()
        if name in valid:
            return name
    raise ConfigError(f"unknown dimension {value!r}; valid dimensions are: {', '.join(valid)}")


def available() -> list[str]:
    """Names of the dimensions this installation provides, in registry order."""
    return list(REGISTRY)


def plugin_class(name: str, registry: Registry | None = None) -> type[DimensionPlugin]:
    """The plugin class for a dimension name: from ``registry`` if it has one, else :data:`REGISTRY`
    (whose modules are imported on first use)."""
    name = parse_dimension(name, known_names(registry))
    if registry is not None and name in registry:
        return registry[name]
    target = REGISTRY.get(name)
    if target is None:
        raise DimensionUnavailableError(
            f"dimension {name!r} is not available in this version of imageprism; "
            f"available dimensions: {', '.join(available())}"
        )
    module_name, _, class_name = target.partition(":")
    cls: type[DimensionPlugin] = getattr(importlib.import_module(module_name), class_name)
    return cls

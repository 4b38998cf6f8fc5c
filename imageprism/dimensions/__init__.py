"""The dimension registry: one line per dimension, imported lazily.

Adding a dimension is one module in this package (named after the dimension)
plus one line here. Modules load on first use, so ``import imageprism`` stays
cheap and a dimension's heavy imports never slow the others.
"""

from __future__ import annotations

import importlib

from imageprism._types import Dimension
from imageprism.dimensions._base import DimensionPlugin, ImageRequest, Layout
from imageprism.errors import ConfigError, DimensionUnavailableError

__all__ = ["REGISTRY", "DimensionPlugin", "ImageRequest", "Layout", "available", "parse_dimension", "plugin_class"]

#: dimension name -> "module:PluginClass"
REGISTRY: dict[str, str] = {
    "hash": "imageprism.dimensions.hash:HashDimension",
    "semantic": "imageprism.dimensions.semantic:SemanticDimension",
    "instance": "imageprism.dimensions.instance:InstanceDimension",
    "style": "imageprism.dimensions.style:StyleDimension",
    "face": "imageprism.dimensions.face:FaceDimension",
}


def parse_dimension(value: object) -> str:
    """Normalise a :class:`Dimension` member or plain string to the dimension name."""
    if isinstance(value, Dimension):
        return value.value
    if isinstance(value, str):
        name = value.strip().lower()
        if name in {d.value for d in Dimension}:
            return name
    valid = ", ".join(d.value for d in Dimension)
    raise ConfigError(f"unknown dimension {value!r}; valid dimensions are: {valid}")


def available() -> list[str]:
    """Names of the dimensions this installation provides, in ``Dimension`` order."""
    return [d.value for d in Dimension if d.value in REGISTRY]


def plugin_class(name: str) -> type[DimensionPlugin]:
    """The plugin class for a dimension name (imports its module on first use)."""
    name = parse_dimension(name)
    target = REGISTRY.get(name)
    if target is None:
        raise DimensionUnavailableError(
            f"dimension {name!r} is not available in this version of imageprism; "
            f"available dimensions: {', '.join(available())}"
        )
    module_name, _, class_name = target.partition(":")
    cls: type[DimensionPlugin] = getattr(importlib.import_module(module_name), class_name)
    return cls

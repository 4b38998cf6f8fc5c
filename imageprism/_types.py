"""Public enumerations: the dimensions and the built-in profiles."""

from __future__ import annotations

import enum

__all__ = ["Dimension", "Profile"]


class Dimension(str, enum.Enum):
    """A similarity dimension. Plain strings (``"hash"``) work wherever a member does."""

    HASH = "hash"
    SEMANTIC = "semantic"
    INSTANCE = "instance"
    STYLE = "style"
    FACE = "face"

    def __str__(self) -> str:
        return self.value


class Profile(str, enum.Enum):
    """A built-in profile; the value is the file stem in ``profiles/``."""

    ECOMMERCE = "ecommerce"
    COPYRIGHT = "copyright"
    DEDUP = "dedup"
    VISUAL_SEARCH = "visual_search"
    IDENTITY = "identity"
    FORGERY = "forgery"

    def __str__(self) -> str:
        return self.value

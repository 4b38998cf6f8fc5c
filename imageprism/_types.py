"""Public enumerations (the dimensions, the built-in profiles) and the package's type aliases, once."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Literal, Optional

import numpy as np

__all__ = ["Dimension", "EmbeddingDict", "Embeddings", "OnError", "Profile"]

#: one input's embeddings: dimension name -> array (``None``: the dimension cannot describe it)
Embeddings = Mapping[str, Optional[np.ndarray]]
#: the same, as built and returned by ``ImagePrism.embed``
EmbeddingDict = dict[str, Optional[np.ndarray]]
#: what a batch job does with an input it cannot load
OnError = Literal["raise", "skip"]


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

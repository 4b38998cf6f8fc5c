"""The ``hash`` dimension: perceptual hashes (pHash, dHash, aHash), no model needed.

The algorithms reproduce imagehash 4.3.2 bit for bit for the same grayscale image
(``convert('L')`` then a LANCZOS resize; pHash is the top-left n x n block of the
unnormalised type-II 2-D DCT, bits above its median). Hashes from all algorithms
share one decode and one grayscale conversion.

An embedding is a packed-bit ``uint8`` array of shape ``(len(algorithms), nbytes)``:
row ``i`` holds ``algorithms[i]``, most significant bit first, exactly the bit
order of imagehash's hex strings. :meth:`HashConfig.to_hex` and
:meth:`HashConfig.from_hex` convert to and from those strings::

    >>> cfg = HashConfig()
    >>> emb = cfg.from_hex({"phash": "ba8c84536bd3c366", "dhash": "0026273b2b19550e",
    ...                     "ahash": "ffd7918181c9ffff"})
    >>> emb.shape
    (3, 8)
    >>> cfg.to_hex(emb)["dhash"]
    '0026273b2b19550e'

The score of two embeddings is the fraction of equal bits, averaged over the
algorithms: unrelated photos land near 0.5, near-duplicates above about 0.9.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
from PIL import Image

from imageprism._math import hamming_similarity
from imageprism.dimensions._base import DimensionPlugin, ImageRequest
from imageprism.errors import ConfigError, InputError

__all__ = ["ALGORITHMS", "HashConfig", "HashDimension", "compute_hashes"]

#: the supported algorithms, in their default order
ALGORITHMS: tuple[str, ...] = ("phash", "dhash", "ahash")

_LANCZOS = Image.Resampling.LANCZOS


@dataclasses.dataclass(frozen=True)
class HashConfig:
    """Configuration of the ``hash`` dimension.

    ``algorithms``: any non-empty subset of ``("phash", "dhash", "ahash")``, in the
    order the embedding rows take. ``hash_size``: bits per side (8 gives 64-bit
    hashes, 16 gives 256-bit). ``reduced_decode``: decode JPEGs at a reduced size
    (DCT scaling, shorter side kept >= ``8 * hash_size``), several times faster on
    large photos; ``False`` decodes at full size and reproduces imagehash's hex
    strings from the same file bit for bit (see :meth:`imagehash_compatible`).
    """

    algorithms: tuple[str, ...] = ALGORITHMS
    hash_size: int = 8
    reduced_decode: bool = True

    def __post_init__(self) -> None:
        algorithms = self.algorithms
        if isinstance(algorithms, str):
            algorithms = (algorithms,)
        try:
            algorithms = tuple(str(a).lower() for a in algorithms)
        except TypeError:
            raise ConfigError(f"HashConfig.algorithms must be a sequence of names, got {self.algorithms!r}") from None
        unknown = [a for a in algorithms if a not in ALGORITHMS]
        if unknown or not algorithms or len(set(algorithms)) != len(algorithms):
            raise ConfigError(
                f"HashConfig.algorithms={self.algorithms!r} is invalid; use a non-empty, duplicate-free "
                f"selection of {', '.join(ALGORITHMS)}"
            )
        object.__setattr__(self, "algorithms", algorithms)
        if isinstance(self.hash_size, bool) or not isinstance(self.hash_size, int) or not 2 <= self.hash_size <= 64:
            raise ConfigError(f"HashConfig.hash_size={self.hash_size!r} is invalid; use an integer from 2 to 64 (8 or 16 are usual)")

    @classmethod
    def imagehash_compatible(cls, algorithms: Sequence[str] = ALGORITHMS, hash_size: int = 8) -> HashConfig:
        """The configuration whose hex strings equal imagehash 4.3.2's for the same file."""
        return cls(algorithms=tuple(algorithms), hash_size=hash_size, reduced_decode=False)

    @property
    def nbits(self) -> int:
        """Bits per algorithm."""
        return self.hash_size * self.hash_size

    def to_hex(self, embedding: np.ndarray) -> dict[str, str]:
        """imagehash-style hex strings, one per algorithm, from an embedding."""
        rows = self._check(embedding)
        width = -(-self.nbits // 4)
        return {
            name: format(int.from_bytes(_bits_to_bytes(row, self.nbits), "big"), f"0{width}x")
            for name, row in zip(self.algorithms, rows)
        }

    def from_hex(self, hexes: Mapping[str, str] | Sequence[str]) -> np.ndarray:
        """The embedding for imagehash-style hex strings (a mapping by algorithm, or a sequence in order)."""
        values = [hexes[name] for name in self.algorithms] if isinstance(hexes, Mapping) else list(hexes)
        if len(values) != len(self.algorithms):
            raise InputError(f"expected {len(self.algorithms)} hex strings ({', '.join(self.algorithms)}), got {len(values)}")
        rows = []
        for text in values:
            try:
                number = int(text, 16)
            except (TypeError, ValueError):
                raise InputError(f"{text!r} is not a hexadecimal hash string") from None
            if number.bit_length() > self.nbits:
                raise InputError(f"hex hash {text!r} has more than {self.nbits} bits (hash_size={self.hash_size})")
            bits = np.array([(number >> (self.nbits - 1 - i)) & 1 for i in range(self.nbits)], dtype=np.uint8)
            rows.append(np.packbits(bits))
        return np.stack(rows)

    def _check(self, embedding: np.ndarray) -> np.ndarray:
        array = np.asarray(embedding)
        expected = (len(self.algorithms), -(-self.nbits // 8))
        if array.dtype != np.uint8 or array.shape != expected:
            raise InputError(
                f"hash embedding must be a uint8 array of shape {expected} for {self!r}, "
                f"got {array.dtype} {array.shape}"
            )
        return array


def _bits_to_bytes(row: np.ndarray, nbits: int) -> bytes:
    """Big-endian bytes of the first ``nbits`` bits of a packed row, right-aligned."""
    bits = np.unpackbits(row)[:nbits]
    pad = (-nbits) % 8
    return np.packbits(np.concatenate([np.zeros(pad, np.uint8), bits])).tobytes()


@functools.lru_cache(maxsize=16)
def _dct_rows(size: int, keep: int) -> np.ndarray:
    """First ``keep`` rows of the unnormalised type-II DCT matrix (scipy's convention)."""
    k = np.arange(keep)[:, None]
    n = np.arange(size)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * size))


def _phash_bits(gray: Image.Image, n: int) -> np.ndarray:
    size = 4 * n
    pixels = np.asarray(gray.resize((size, size), _LANCZOS), dtype=np.float64)
    basis = _dct_rows(size, n)
    low = basis @ pixels @ basis.T
    low[np.abs(low) < 1e-6] = 0.0  # scipy yields exact zeros on flat input; the matrix form leaves ~1e-13
    return low > np.median(low)


def _dhash_bits(gray: Image.Image, n: int) -> np.ndarray:
    pixels = np.asarray(gray.resize((n + 1, n), _LANCZOS))
    return pixels[:, 1:] > pixels[:, :-1]


def _ahash_bits(gray: Image.Image, n: int) -> np.ndarray:
    pixels = np.asarray(gray.resize((n, n), _LANCZOS), dtype=np.float64)
    return pixels > pixels.mean()


_ALGORITHM_BITS = {"phash": _phash_bits, "dhash": _dhash_bits, "ahash": _ahash_bits}


def compute_hashes(gray: Image.Image, algorithms: Sequence[str] = ALGORITHMS, hash_size: int = 8) -> np.ndarray:
    """Packed-bit hashes of a grayscale (mode ``L``) image, one row per algorithm."""
    if gray.mode != "L":
        gray = gray.convert("L")
    return np.stack([np.packbits(_ALGORITHM_BITS[name](gray, hash_size).ravel()) for name in algorithms])


class HashDimension(DimensionPlugin):
    """Perceptual-hash similarity: fraction of equal bits, averaged over algorithms."""

    name: ClassVar[str] = "hash"
    config_type: ClassVar[type[HashConfig]] = HashConfig
    config: HashConfig

    @property
    def image_request(self) -> ImageRequest:
        if self.config.reduced_decode:
            return ImageRequest(mode="L", min_side=8 * self.config.hash_size)
        return ImageRequest(mode="L")

    def embed_batch(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        return [compute_hashes(image, self.config.algorithms, self.config.hash_size) for image in images]

    def score(self, a: np.ndarray | None, b: np.ndarray | None) -> float | None:
        if a is None or b is None:
            return None
        a, b = self.config._check(a), self.config._check(b)
        return float(np.mean(hamming_similarity(a, b, self.config.nbits)))

    def to_json(self, embedding: np.ndarray | None) -> object:
        return None if embedding is None else self.config.to_hex(embedding)

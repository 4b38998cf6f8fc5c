"""The ``hash`` dimension: perceptual hashes (pHash, dHash, aHash), no model needed.

The algorithms reproduce imagehash 4.3.2 bit for bit for the same grayscale image
(``convert('L')`` then a LANCZOS resize; pHash is the top-left n x n block of the
unnormalised type-II 2-D DCT, bits above its median). Hashes from all algorithms
share one decode and one grayscale conversion.

An embedding is a packed-bit ``uint8`` array. With the plain hashes
(:meth:`HashConfig.plain`) it has shape ``(len(algorithms), nbytes)``: row ``i`` holds ``algorithms[i]``, most
significant bit first, exactly the bit order of imagehash's hex strings.
:meth:`HashConfig.to_hex` and :meth:`HashConfig.from_hex` convert to and from
those strings::

    >>> cfg = HashConfig.plain()
    >>> emb = cfg.from_hex({"phash": "ba8c84536bd3c366", "dhash": "0026273b2b19550e",
    ...                     "ahash": "ffd7918181c9ffff"})
    >>> emb.shape
    (3, 8)
    >>> cfg.to_hex(emb)["dhash"]
    '0026273b2b19550e'

The score of two embeddings is the fraction of equal bits, averaged over the
algorithms: unrelated photos land near 0.5, near-duplicates above about 0.9.

Flips, rotations and crops defeat plain hashes (a mirrored photo keeps about half
its bits). The default configuration, :meth:`HashConfig.robust`, also hashes the
image's flips and 90-degree rotations (derived from the one DCT: reversing an axis
negates its odd frequencies, a transpose transposes the block), a few centre
crops, small rotations of +-4 degrees and crops moved off centre, and scores the
best alignment (see :class:`HashDimension`). It was chosen by measurement
(``benchmarks/hash_robustness.py``: overall AUC 1.000 against 0.915 for the plain
hashes on the 15-transform protocol; see ``benchmarks/README.md`` for small
rotations and shifted crops); unrelated photos then score about 0.6 instead of 0.5. :meth:`HashConfig.plain` keeps the plain three hashes and
:meth:`HashConfig.imagehash_compatible` reproduces imagehash's hex strings::

    >>> HashConfig.robust().row_labels[:4]
    ('phash', 'dhash', 'ahash', 'phash/mirror')
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import ClassVar, NamedTuple

import numpy as np
from PIL import Image

from imageprism._math import best_alignment
from imageprism.dimensions import _hash_batch as hbb
from imageprism.dimensions import _hash_bits as hb
from imageprism.dimensions._base import DimensionPlugin, ImageRequest, Layout
from imageprism.errors import ConfigError, InputError

__all__ = [
    "ALGORITHMS", "GEOMETRIES", "ROBUST_CROP_SCALES", "ROBUST_ROTATIONS", "ROBUST_SHIFTED_CROPS", "SHIFT_DIRECTIONS",
    "HashConfig", "HashDimension", "HashVariant", "compute_hashes",
]

#: the supported algorithms, in their default order
ALGORITHMS: tuple[str, ...] = ("phash", "dhash", "ahash")

_LANCZOS = Image.Resampling.LANCZOS

#: ``HashConfig.geometry`` value -> the transforms whose hashes an embedding holds
GEOMETRIES: dict[str, tuple[str, ...]] = {
    "none": ("identity",),
    "mirror": ("identity", "mirror"),
    "dihedral": tuple(hb.TRANSFORMS),
}

_MIN_CROP, _MAX_CROPS = 0.25, 8
_MAX_DEGREES, _MAX_ROTATIONS, _MAX_SHIFTED = 45.0, 8, 4

#: the centre crops (side fractions) of :meth:`HashConfig.robust`, chosen with benchmarks/hash_robustness.py
ROBUST_CROP_SCALES: tuple[float, ...] = (0.9, 0.75, 0.6, 0.5)
#: the small rotations (degrees) of :meth:`HashConfig.robust`, chosen with benchmarks/hash_robustness.py
ROBUST_ROTATIONS: tuple[float, ...] = (4.0, -4.0)
#: the shifted crops (side fraction, shift) of :meth:`HashConfig.robust`, chosen with benchmarks/hash_robustness.py
ROBUST_SHIFTED_CROPS: tuple[tuple[float, float], ...] = ((0.7, 0.1),)
#: the directions (right, down) each shifted crop moves in: the 4 sides and the 4 corners
SHIFT_DIRECTIONS: tuple[tuple[int, int], ...] = ((-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1))


class HashVariant(NamedTuple):
    """One row group of a hash embedding: a window of the image, in one orientation.

    ``scale``: the window's side fraction (1.0: the whole image). ``transform``: the flip
    or 90-degree rotation applied to it (``"identity"``, ``"mirror"``, ``"rot90"``...).
    ``degrees``: a small counter-clockwise rotation of the whole image first (same
    canvas, black corners, as ``Image.rotate(degrees)``). ``shift``: the window's centre
    moved right and down by these fractions of the width and height.
    """

    scale: float
    transform: str
    degrees: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)

    @property
    def label(self) -> str:
        """The row-label suffix: ``""``, ``"/mirror"``, ``"/crop0.5"``, ``"/rotate+4"``, ``"/crop0.7/shift-0.1,+0"``."""
        text = "" if self.transform == "identity" else f"/{self.transform}"
        text += f"/rotate{self.degrees:+g}" if self.degrees else ""
        text += "" if self.scale == 1.0 else f"/crop{self.scale:g}"
        return text + (f"/shift{self.shift[0]:+g},{self.shift[1]:+g}" if self.shift != (0.0, 0.0) else "")


def _number_tuple(value: object, length: int | None = None) -> tuple[float, ...] | None:
    """``value`` as a tuple of floats (of ``length`` if given), or None if it is not one."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return None
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) for v in value):
        return None
    if length is not None and len(value) != length:
        return None
    return tuple(float(v) for v in value)


def _valid_rotations(value: object) -> tuple[float, ...]:
    fix = (
        f"use a tuple of at most {_MAX_ROTATIONS} distinct angles in degrees, each non-zero and within "
        f"+-{_MAX_DEGREES:g}, e.g. (4, -4), or () for none"
    )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    angles = _number_tuple(value)
    if angles is None or any(not 0 < abs(a) <= _MAX_DEGREES for a in angles) or len(set(angles)) != len(angles) or len(angles) > _MAX_ROTATIONS:
        raise ConfigError(f"HashConfig.rotations={value!r} is invalid; {fix}")
    return angles


def _valid_shifted_crops(value: object) -> tuple[tuple[float, float], ...]:
    fix = (
        f"use a tuple of at most {_MAX_SHIFTED} distinct (side fraction, shift) pairs, the fraction at least "
        f"{_MIN_CROP} and below 1, the shift above 0 and at most (1 - fraction) / 2, e.g. ((0.7, 0.1),), or () for none"
    )
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"HashConfig.shifted_crops={value!r} is invalid; {fix}")
    pairs = [_number_tuple(v, 2) for v in value]
    if any(p is None or not _MIN_CROP <= p[0] < 1.0 or not 0 < p[1] <= (1.0 - p[0]) / 2 + 1e-9 for p in pairs):
        raise ConfigError(f"HashConfig.shifted_crops={value!r} is invalid; {fix}")
    crops = tuple((p[0], p[1]) for p in pairs if p is not None)
    if len(set(crops)) != len(crops) or len(crops) > _MAX_SHIFTED:
        raise ConfigError(f"HashConfig.shifted_crops={value!r} is invalid; {fix}")
    return crops


@dataclasses.dataclass(frozen=True)
class HashConfig:
    """Configuration of the ``hash`` dimension.

    ``algorithms``: any non-empty subset of ``("phash", "dhash", "ahash")``, in the
    order the embedding rows take. ``hash_size``: bits per side (8 gives 64-bit
    hashes, 16 gives 256-bit). ``reduced_decode``: decode JPEGs at a reduced size
    (DCT scaling, shorter side kept >= ``8 * hash_size``), several times faster on
    large photos; ``False`` decodes at full size and, with no geometry or crops,
    reproduces imagehash's hex strings from the same file bit for bit (see
    :meth:`imagehash_compatible`).

    ``geometry``: which flips and rotations of the whole image a match survives:
    ``"none"``, ``"mirror"`` (left-right flip) or ``"dihedral"`` (both flips and the
    90, 180 and 270 degree rotations). ``crop_scales``: side fractions (each in
    [0.25, 1)) of centre crops to hash besides the whole image, so that a crop
    matches the image it came from; e.g. ``(0.75, 0.5)``. ``crop_geometry``: the
    flips and rotations hashed for each crop, capped at ``geometry`` (``None``: the
    same as ``geometry``); fewer variants keep unrelated scores lower.
    ``rotations``: small rotations of the whole image in degrees (counter-clockwise,
    same canvas, black corners, as ``Image.rotate``), e.g. ``(4, -4)``, so that a
    slightly rotated copy matches. ``shifted_crops``: ``(side fraction, shift)`` pairs,
    each hashed as a crop of that fraction moved off centre by ``shift`` of each side
    in the 8 directions of :data:`SHIFT_DIRECTIONS`, e.g. ``((0.7, 0.1),)``. With these
    options the embedding holds one group of rows per variant (see
    :attr:`variants`) and the score takes the best alignment (see
    :class:`HashDimension`).
    """

    algorithms: tuple[str, ...] = ALGORITHMS
    hash_size: int = 8
    reduced_decode: bool = True
    geometry: str = "dihedral"
    crop_scales: tuple[float, ...] = ROBUST_CROP_SCALES
    crop_geometry: str | None = "mirror"
    rotations: tuple[float, ...] = ROBUST_ROTATIONS
    shifted_crops: tuple[tuple[float, float], ...] = ROBUST_SHIFTED_CROPS

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
        if not isinstance(self.reduced_decode, bool):
            raise ConfigError(f"HashConfig.reduced_decode={self.reduced_decode!r} is invalid; use True or False")
        if not isinstance(self.geometry, str) or self.geometry.lower() not in GEOMETRIES:
            raise ConfigError(f"HashConfig.geometry={self.geometry!r} is invalid; use one of {', '.join(map(repr, GEOMETRIES))}")
        object.__setattr__(self, "geometry", self.geometry.lower())
        object.__setattr__(self, "crop_scales", self._valid_crops(self.crop_scales))
        crop_geometry = self.geometry if self.crop_geometry is None else self.crop_geometry
        if not isinstance(crop_geometry, str) or crop_geometry.lower() not in GEOMETRIES:
            raise ConfigError(
                f"HashConfig.crop_geometry={self.crop_geometry!r} is invalid; "
                f"use None (the same as geometry) or one of {', '.join(map(repr, GEOMETRIES))}"
            )
        order = list(GEOMETRIES)  # nested: each geometry's transforms include the previous one's
        capped = order[min(order.index(crop_geometry.lower()), order.index(self.geometry))]
        object.__setattr__(self, "crop_geometry", capped)
        object.__setattr__(self, "rotations", _valid_rotations(self.rotations))
        object.__setattr__(self, "shifted_crops", _valid_shifted_crops(self.shifted_crops))

    def _valid_crops(self, value: object) -> tuple[float, ...]:
        fix = (
            f"use a tuple of at most {_MAX_CROPS} distinct side fractions, each at least {_MIN_CROP} "
            "and below 1, e.g. (0.75, 0.5), or () for none"
        )
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (value,)
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"HashConfig.crop_scales={value!r} is invalid; {fix}")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not _MIN_CROP <= v < 1.0 for v in value):
            raise ConfigError(f"HashConfig.crop_scales={value!r} is invalid; {fix}")
        scales = tuple(float(v) for v in value)
        if len(set(scales)) != len(scales) or len(scales) > _MAX_CROPS:
            raise ConfigError(f"HashConfig.crop_scales={value!r} is invalid; {fix}")
        return scales

    @classmethod
    def imagehash_compatible(cls, algorithms: Sequence[str] = ALGORITHMS, hash_size: int = 8) -> HashConfig:
        """The configuration whose hex strings equal imagehash 4.3.2's for the same file."""
        return cls(
            algorithms=tuple(algorithms), hash_size=hash_size, reduced_decode=False, geometry="none", crop_scales=(),
            crop_geometry=None, rotations=(), shifted_crops=(),
        )

    @classmethod
    def plain(cls, algorithms: Sequence[str] = ALGORITHMS, hash_size: int = 8) -> HashConfig:
        """The plain hashes (no flips, rotations or crops) from a reduced decode: the fastest."""
        return cls(
            algorithms=tuple(algorithms), hash_size=hash_size, reduced_decode=True, geometry="none", crop_scales=(),
            crop_geometry=None, rotations=(), shifted_crops=(),
        )

    @classmethod
    def robust(cls, algorithms: Sequence[str] = ALGORITHMS, hash_size: int = 8) -> HashConfig:
        """Hashes that survive flips, 90-degree and small rotations, centre crops down to half
        the side and crops moved off centre.

        ``geometry="dihedral"`` (the whole image's flips and rotations), centre crops
        :data:`ROBUST_CROP_SCALES` and their mirrors (``crop_geometry="mirror"``), the
        small rotations :data:`ROBUST_ROTATIONS` and the shifted crops
        :data:`ROBUST_SHIFTED_CROPS` (26 variants); the configuration chosen with
        ``benchmarks/hash_robustness.py`` (see ``benchmarks/README.md``). Unrelated photos
        score higher than with the plain hashes (median about 0.61 instead of 0.5), so
        set thresholds accordingly.
        """
        return cls(
            algorithms=tuple(algorithms), hash_size=hash_size, geometry="dihedral",
            crop_scales=ROBUST_CROP_SCALES, crop_geometry="mirror",
            rotations=ROBUST_ROTATIONS, shifted_crops=ROBUST_SHIFTED_CROPS,
        )

    @property
    def nbits(self) -> int:
        """Bits per algorithm."""
        return self.hash_size * self.hash_size

    @property
    def transforms(self) -> tuple[str, ...]:
        """The flips and rotations of the whole image hashed, ``"identity"`` first."""
        return GEOMETRIES[self.geometry]

    @functools.cached_property  # a frozen config: computed once (to_hex runs per embedding)
    def variants(self) -> tuple[HashVariant, ...]:
        """The window and orientation of each row group; ``HashVariant(1.0, "identity")`` first.

        The whole image in every transform of ``geometry``, then each centre crop in every
        transform of ``crop_geometry``, then each small rotation of the whole image, then
        each shifted crop in each of the :data:`SHIFT_DIRECTIONS`.
        """
        whole = tuple(HashVariant(1.0, t) for t in self.transforms)
        assert self.crop_geometry is not None  # set by __post_init__
        crops = tuple(HashVariant(s, t) for s in self.crop_scales for t in GEOMETRIES[self.crop_geometry])
        rotated = tuple(HashVariant(1.0, "identity", degrees=a) for a in self.rotations)
        shifted = tuple(
            HashVariant(s, "identity", shift=(dx * d, dy * d)) for s, d in self.shifted_crops for dx, dy in SHIFT_DIRECTIONS
        )
        return whole + crops + rotated + shifted

    @property
    def is_plain(self) -> bool:
        """True when the embedding holds only the whole image, unflipped (one row per algorithm)."""
        return self.geometry == "none" and not (self.crop_scales or self.rotations or self.shifted_crops)

    @property
    def n_variants(self) -> int:
        """Row groups per embedding (``len(variants)``)."""
        return len(self.variants)

    @functools.cached_property
    def row_labels(self) -> tuple[str, ...]:
        """One label per embedding row: ``"phash"``, ``"phash/mirror"``, ``"dhash/rot90/crop0.5"``,
        ``"ahash/rotate-4"``, ``"phash/crop0.7/shift-0.1,+0"``... (see :attr:`HashVariant.label`)"""
        return tuple(f"{algorithm}{variant.label}" for variant in self.variants for algorithm in self.algorithms)

    def to_hex(self, embedding: np.ndarray) -> dict[str, str]:
        """imagehash-style hex strings, one per row, keyed by :attr:`row_labels`.

        For a plain configuration the keys are just the algorithm names.
        """
        rows = self._check(embedding)
        width = -(-self.nbits // 4)
        if self.nbits == 8 * rows.shape[1]:  # whole bytes (the usual 8 x 8 hash): one hex string, cut per row
            text = rows.tobytes().hex()
            return dict(zip(self.row_labels, (text[i : i + width] for i in range(0, len(text), width))))
        return {
            label: format(int.from_bytes(_bits_to_bytes(row, self.nbits), "big"), f"0{width}x")
            for label, row in zip(self.row_labels, rows)
        }

    def from_hex(self, hexes: Mapping[str, str] | Sequence[str]) -> np.ndarray:
        """The embedding for imagehash-style hex strings (a mapping by row label, or a sequence in order)."""
        labels = self.row_labels
        if isinstance(hexes, Mapping):
            missing = [label for label in labels if label not in hexes]
            if missing:
                raise InputError(f"hex strings missing for {', '.join(missing)}; {self!r} needs: {', '.join(labels)}")
            values = [hexes[label] for label in labels]
        else:
            values = list(hexes)
        if len(values) != len(labels):
            raise InputError(f"expected {len(labels)} hex strings ({', '.join(labels)}), got {len(values)}")
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
        expected = (self.n_variants * len(self.algorithms), -(-self.nbits // 8))
        if array.dtype != np.uint8 or array.shape != expected:
            raise InputError(
                f"hash embedding must be a uint8 array of shape {expected} for {self!r}, "
                f"got {array.dtype} {array.shape}"
            )
        return array


def _bits_to_bytes(row: np.ndarray, nbits: int) -> bytes:
    """Big-endian bytes of the first ``nbits`` bits of a packed row, right-aligned."""
    if nbits == 8 * row.size:  # whole bytes (the usual 8 x 8 hash): no shift, no per-bit pass
        return row.tobytes()
    return np.packbits(np.concatenate([np.zeros((-nbits) % 8, np.uint8), np.unpackbits(row)[:nbits]])).tobytes()


# -- the exact path: imagehash's own resizes ------------------------------------------


def _phash_bits(gray: Image.Image, n: int) -> np.ndarray:
    size = 4 * n
    return hb.phash_from(np.asarray(gray.resize((size, size), _LANCZOS), dtype=np.float64), n)


def _dhash_bits(gray: Image.Image, n: int) -> np.ndarray:
    return hb.dhash_from(np.asarray(gray.resize((n + 1, n), _LANCZOS)))


def _ahash_bits(gray: Image.Image, n: int) -> np.ndarray:
    return hb.ahash_from(np.asarray(gray.resize((n, n), _LANCZOS), dtype=np.float64))


_ALGORITHM_BITS = {"phash": _phash_bits, "dhash": _dhash_bits, "ahash": _ahash_bits}


def compute_hashes(
    gray: Image.Image, algorithms: Sequence[str] = ALGORITHMS, hash_size: int = 8, *,
    config: HashConfig | None = None,
) -> np.ndarray:
    """Packed-bit hashes of a grayscale (mode ``L``) image: the rows of an embedding.

    With ``config`` (which then overrides ``algorithms`` and ``hash_size``), the rows of
    every geometric variant and crop it asks for, in :attr:`HashConfig.row_labels` order.
    """
    if gray.mode != "L":
        gray = gray.convert("L")
    if config is None:
        config = HashConfig.plain(algorithms, hash_size)
    if config.is_plain:
        return np.stack([np.packbits(_ALGORITHM_BITS[name](gray, config.hash_size).ravel()) for name in config.algorithms])
    return hbb.variant_hashes([gray], _variant_plan(config))[0]


# -- the variant path: flips, rotations and crops from one small grid -----------------


@functools.lru_cache(maxsize=32)
def _variant_plan(config: HashConfig) -> hbb.VariantPlan:
    return hbb.VariantPlan.build(
        config.hash_size, config.algorithms, config.rotations,
        [(v.scale, v.transform, v.degrees, v.shift) for v in config.variants],
    )


class HashDimension(DimensionPlugin):
    """Perceptual-hash similarity: fraction of equal bits, averaged over algorithms.

    An embedding is a packed-bit ``uint8`` array of shape ``(V * K, nbytes)`` with
    ``K = len(algorithms)`` and ``V = config.n_variants``: row ``v * K + k`` holds
    algorithm ``k`` of variant ``v`` (see :attr:`HashConfig.row_labels`); variant 0 is
    the whole image, unflipped. With ``s(x, y)`` the fraction of equal bits of two
    rows and ``m(v, w) = mean over k of s(a[v*K+k], b[w*K+k])``, the score is::

        score(a, b) = max over v of max(m(v, 0), m(0, v))

    the best alignment of either image's variants against the other's whole image.
    It is symmetric, and equals the plain mean over algorithms when ``V == 1``.

    For an index: ``score >= T`` implies that, for some algorithm ``k`` and variant
    ``v``, row ``v*K+k`` of one embedding and row ``k`` (variant 0) of the other agree
    on a fraction ``>= T`` of their bits. So indexing every row and searching with
    every row, keeping pairs of the same algorithm where at least one side is a
    variant-0 row, finds every candidate; verify them with :meth:`score`.
    """

    name: ClassVar[str] = "hash"
    config_type: ClassVar[type[HashConfig]] = HashConfig
    default_threshold: ClassVar[float | None] = 0.9
    config: HashConfig

    @property
    def image_request(self) -> ImageRequest:
        if self.config.reduced_decode:
            return ImageRequest(mode="L", min_side=8 * self.config.hash_size)
        return ImageRequest(mode="L")

    @property
    def layout(self) -> Layout:
        """Packed bits: ``K`` rows per variant, ``config.n_variants`` variants (best alignment)."""
        return Layout("bits", bits_per_row=self.config.nbits, variants=self.config.n_variants)

    def embed_batch(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        if self.config.is_plain or not images:
            return [compute_hashes(image, config=self.config) for image in images]
        grays = [image if image.mode == "L" else image.convert("L") for image in images]
        return [embedding.copy() for embedding in hbb.variant_hashes(grays, _variant_plan(self.config))]  # not views of one batch

    def score(self, a: np.ndarray | None, b: np.ndarray | None) -> float | None:
        if a is None or b is None:
            return None
        cfg = self.config
        return float(best_alignment(cfg._check(a)[None], cfg._check(b)[None], cfg.n_variants, cfg.nbits)[0])

    def to_json(self, embedding: np.ndarray | None) -> object:
        return None if embedding is None else self.config.to_hex(embedding)

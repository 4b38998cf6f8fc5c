"""Shared vector math: the one home for normalisation, cosine and Hamming scores."""

from __future__ import annotations

import numpy as np

__all__ = ["cosine", "hamming_similarity", "l2_normalize"]

_EPS = 1e-12


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Scale vectors to unit L2 norm along ``axis`` (float32; zero vectors stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, _EPS)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two 1-D vectors, in [-1, 1]."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    if denom < _EPS:
        return 0.0
    return float(np.clip(np.dot(a, b) / denom, -1.0, 1.0))


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming_similarity(a: np.ndarray, b: np.ndarray, nbits: int | None = None) -> np.ndarray:
    """Fraction of equal bits per row of two packed-bit ``uint8`` arrays of shape (..., nbytes).

    ``nbits`` is the number of meaningful bits per row (default: all ``8 * nbytes``);
    padding bits are zero in both arrays, so they never count as differences.
    """
    a = np.asarray(a, dtype=np.uint8)
    b = np.asarray(b, dtype=np.uint8)
    if a.shape != b.shape:
        raise ValueError(f"hash shapes differ: {a.shape} vs {b.shape}")
    diff = _POPCOUNT[np.bitwise_xor(a, b)].sum(axis=-1, dtype=np.int64)
    return 1.0 - diff / (nbits or a.shape[-1] * 8)

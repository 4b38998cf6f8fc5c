"""Shared vector math: the one home for normalisation, cosine and Hamming scores."""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np

__all__ = [
    "ONE_BLAS_THREAD",
    "best_alignment",
    "cosine",
    "hamming_similarity",
    "l2_normalize",
    "near_unit",
    "popcount",
    "row_norms",
    "unit_rows",
]

_EPS = 1e-12


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Scale vectors to unit L2 norm along ``axis`` (float32; zero vectors stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, _EPS)


def near_unit(rows: np.ndarray, tolerance: float) -> np.ndarray:
    """Contiguous float32 rows, :func:`l2_normalize`-d where their norm is further than ``tolerance`` from 1."""
    rows = np.asarray(rows, np.float32)
    off = np.abs(row_norms(rows) - 1.0) > tolerance
    if off.any():
        rows = rows.copy()
        rows[off] = l2_normalize(rows[off])
    return np.ascontiguousarray(rows)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two 1-D vectors, in [-1, 1]."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    if denom < _EPS:
        return 0.0
    return float(np.clip(np.dot(a, b) / denom, -1.0, 1.0))


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
#: rows per chunk when a float64 copy of a large array is avoided
_CHUNK = 65536


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each element of an unsigned integer array (same shape; small ints)."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(x)
    return _POPCOUNT[x[..., None].view(np.uint8)].sum(axis=-1, dtype=np.int32)  # pragma: no cover


def row_norms(x: np.ndarray) -> np.ndarray:
    """Float64 L2 norm of each row (in chunks: no float64 copy of a large array)."""
    out = np.empty(len(x))
    for s in range(0, len(x), _CHUNK):
        rows = x[s : s + _CHUNK].astype(np.float64)
        out[s : s + _CHUNK] = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    return out


def unit_rows(x: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Rows divided by their float64 ``norms`` (float32; zero rows stay zero)."""
    safe = np.where(norms > _EPS, norms, np.inf)
    out = np.empty(x.shape, np.float32)
    for s in range(0, len(x), _CHUNK):
        out[s : s + _CHUNK] = x[s : s + _CHUNK].astype(np.float64) / safe[s : s + _CHUNK, None]
    return out


def hamming_similarity(a: np.ndarray, b: np.ndarray, nbits: int | None = None) -> np.ndarray:
    """Fraction of equal bits per row of two packed-bit ``uint8`` arrays of shape (..., nbytes).

    ``nbits`` is the number of meaningful bits per row (default: all ``8 * nbytes``);
    padding bits are zero in both arrays, so they never count as differences.
    """
    a = np.asarray(a, dtype=np.uint8)
    b = np.asarray(b, dtype=np.uint8)
    if a.shape != b.shape:
        raise ValueError(f"hash shapes differ: {a.shape} vs {b.shape}")
    diff = popcount(np.bitwise_xor(a, b)).sum(axis=-1, dtype=np.int64)
    return 1.0 - diff / (nbits or a.shape[-1] * 8)


def best_alignment(a: np.ndarray, b: np.ndarray, variants: int, nbits: int | None = None) -> np.ndarray:
    """Best-alignment scores of pairs of packed-bit codes made of ``variants`` groups.

    ``a`` and ``b`` are ``uint8`` arrays ``(n, variants * K, nbytes)``: pair ``i`` is
    ``(a[i], b[i])``. With ``m(v, w)`` the mean over the ``K`` rows of a group of
    :func:`hamming_similarity` between group ``v`` of one code and group ``w`` of the
    other, the score is ``max over v of max(m(v, 0), m(0, v))``: either side's variants
    (flips, crops...) against the other's whole image (group 0). With one group it is
    the plain mean over rows. The one home of this rule (the hash score, dedup and the
    index all call it).
    """
    n, rows, nbytes = a.shape
    x = a.reshape(n, variants, rows // variants, nbytes)
    y = b.reshape(n, variants, rows // variants, nbytes)
    if variants == 1:
        return hamming_similarity(x[:, 0], y[:, 0], nbits).mean(axis=-1)
    x_vs_whole_y = hamming_similarity(x, np.broadcast_to(y[:, :1], x.shape), nbits).mean(axis=2)
    whole_x_vs_y = hamming_similarity(np.broadcast_to(x[:, :1], y.shape), y, nbits).mean(axis=2)
    return np.maximum(x_vs_whole_y.max(axis=1), whole_x_vs_y.max(axis=1))


class _OneBlasThread:
    """numpy's BLAS held to one thread inside the block (then its setting is restored).

    For small products (a batch of hashes, a query's candidates), too small to share between
    threads: OpenBLAS's helper threads spend the time spinning between calls, which doubled
    the CPU time (and the wall time, on a busy machine) of ``embed_batch``, took the second
    core from the second worker process, and made a 1000 x 512 product of an approximate
    index query take milliseconds instead of microseconds while another process ran.
    Parallelism comes from workers instead (``embed_batch(workers=)``). Nested and concurrent
    uses share one limit: the first in sets it, the last out restores it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._limiter: Any = None

    def __enter__(self) -> None:
        with self._lock:
            if self._inside == 0:
                self._limiter = _blas_controller().limit(limits=1, user_api="blas")
            self._inside += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0:
                self._limiter.restore_original_limits()
                self._limiter = None


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController  # after numpy, so that it finds numpy's BLAS

    return ThreadpoolController()


#: ``with ONE_BLAS_THREAD:`` around small matrix products (see :class:`_OneBlasThread`)
ONE_BLAS_THREAD = _OneBlasThread()

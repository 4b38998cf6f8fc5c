"""The batched variant hashes equal the per-image reference computation bit for bit.

``tests/hash_reference.py`` is the per-image code the batched path replaced; users' stored
hashes and the robustness tuning come from it. Flat areas matter most: there the
thresholds read rounding noise, so any change in the order of the arithmetic shows up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hash_reference import reference_hashes
from PIL import Image

from imageprism import EmbeddingCache, HashConfig, ImagePrism
from imageprism.dimensions.hash import HashDimension, compute_hashes


def _random_images(count: int, seed: int) -> list[Image.Image]:
    """Grayscale images of many sizes and aspect ratios: noise, blocks, gradients, and flat
    backgrounds (white, black, grey) with an object, where ties are everywhere."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        height = int(rng.integers(64, 400))
        width = int(height * rng.choice([rng.uniform(0.25, 4.0), 1.0, 4 / 3, 3 / 4, 16 / 9]))
        width = max(width, 64)
        kind = i % 5
        if kind == 0:
            pixels = rng.integers(0, 256, (height, width))
        elif kind == 1:
            blocks = rng.integers(0, 256, (int(rng.integers(2, 9)), int(rng.integers(2, 9))))
            pixels = np.asarray(Image.fromarray(blocks.astype(np.uint8)).resize((width, height), Image.Resampling.NEAREST))
        elif kind == 2:
            pixels = np.add.outer(np.linspace(0, rng.uniform(0, 255), height), np.linspace(0, rng.uniform(0, 255), width))
        else:
            pixels = np.full((height, width), [255, 0, int(rng.integers(1, 255))][kind - 3])
            top, left = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
            pixels[top : top + height // 3, left : left + width // 4] = rng.integers(0, 256, (1, 1))
        images.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L"))
    return images


CONFIGS = [
    HashConfig(),  # the default: 26 variants
    HashConfig(hash_size=16),
    HashConfig(algorithms=("dhash",), rotations=(10.0, -3.0, 45.0), crop_geometry=None),  # transposed crops
    HashConfig(algorithms=("ahash", "phash"), geometry="mirror", crop_scales=(0.3,), rotations=(), shifted_crops=((0.5, 0.25),)),
    HashConfig(geometry="none", crop_scales=(), shifted_crops=(), rotations=(2.5,)),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"n{c.hash_size}-{'+'.join(c.algorithms)}-v{c.n_variants}")
def test_batched_hashes_equal_the_per_image_reference_on_random_images(config: HashConfig) -> None:
    images = _random_images(60, seed=config.n_variants)
    expected = [reference_hashes(image, config) for image in images]
    plugin = HashDimension(config, None)
    batched = plugin.embed_batch(images)  # one call: chunks of several images
    assert len(batched) == len(images)
    for i, (got, want) in enumerate(zip(batched, expected)):
        assert got.dtype == np.uint8 and np.array_equal(got, want), f"image {i} {images[i].size}"
    for image, want in zip(images[:5], expected):  # one image at a time: the same bits
        assert np.array_equal(compute_hashes(image, config=config), want)


def test_extreme_aspect_ratios_and_constant_images() -> None:
    config = HashConfig()
    images = [Image.new("L", size, value) for size in [(64, 64), (6400, 64), (64, 6400), (65, 4000)] for value in (0, 128, 255)]
    images += [Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 5000), dtype=np.uint8), mode="L")]
    expected = [reference_hashes(image, config) for image in images]
    assert all(np.array_equal(got, want) for got, want in zip(HashDimension(config, None).embed_batch(images), expected))


def test_batched_hashes_equal_the_reference_on_the_dev_photos(dev_images: list[Path]) -> None:
    """Through the public API (reduced decode, batches of 16 and of 1) against the reference on
    the same decoded pixels; the photos, mirrored and cropped to odd shapes."""
    request = HashDimension(HashConfig(), None).image_request
    prism = ImagePrism(cache=EmbeddingCache(max_entries=0))
    grays = [prism._open(path).pixels(request).image for path in dev_images]
    grays += [gray.transpose(Image.Transpose.FLIP_LEFT_RIGHT).crop((0, 0, gray.width * 2 // 3, gray.height)) for gray in grays]
    expected = [reference_hashes(gray, HashConfig()) for gray in grays]
    batch = prism.embed_batch(grays)
    assert not batch.failures
    for i, (embedding, want) in enumerate(zip(batch.embeddings, expected)):
        assert embedding is not None and np.array_equal(embedding["hash"], want), f"photo {i}"
    paths = prism.embed_batch(dev_images)
    assert all(np.array_equal(e["hash"], w) for e, w in zip(paths.embeddings, expected) if e is not None)
    single = ImagePrism(cache=EmbeddingCache(max_entries=0), batch_size=1)
    assert np.array_equal(single.embed(dev_images[0])["hash"], expected[0])


def test_blas_runs_on_one_thread_while_hashing_and_is_restored_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """The products are too small to share between BLAS threads (their helpers spin between calls):
    numpy's BLAS on one thread while a batch is hashed, the caller's setting back afterwards.
    (Other BLAS libraries in the process, e.g. faiss's own OpenBLAS, are not numpy's and not limited.)"""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from imageprism import _math
    from imageprism.dimensions import _hash_batch

    limited = {lib.filepath for lib in _math._blas_controller().lib_controllers if lib.user_api == "blas"}
    assert limited, "numpy's BLAS not found by threadpoolctl"

    def blas_threads() -> list[int]:
        return [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["filepath"] in limited]

    seen: list[list[int]] = []
    real = _hash_batch.variant_bits

    def spy(*args: object) -> np.ndarray:
        seen.append(blas_threads())
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_hash_batch, "variant_bits", spy)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        HashDimension(HashConfig(), None).embed_batch(_random_images(3, seed=0))
        assert blas_threads() == before == [2] * len(limited)
    assert seen and all(counts == [1] * len(limited) for counts in seen)

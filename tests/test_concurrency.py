"""One ImagePrism shared by 8 threads gives exactly the serial results, and its cache stays consistent.

The prism uses the hash dimension and a model-backed one (``semantic`` with a
tiny local ONNX stand-in, so the shared onnxruntime session is exercised). Every
thread runs the whole workload (embed, compare, embed_batch with bad inputs
skipped, dedup) in its own shuffled order, all starting together at a barrier;
each call's result must equal the same call made serially on a fresh prism.
"""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakehub import onnx_bytes
from PIL import Image

from imageprism import ImagePrism
from imageprism._cache import EmbeddingCache
from imageprism.dimensions.semantic import SemanticConfig

THREADS = 8
#: the last inputs of the ``inputs`` fixture are bad: truncated, missing, not an image, not an input
N_BAD = 4


def _photo(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 4 + seed * 20, y * 5 + seed * 7, (x + y) * 2 + seed * 3], axis=2) % 256
    noise = rng.normal(0, 10, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def _encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[object]:
    """Distinct images, exact duplicates in other containers, near-duplicates, and bad inputs."""
    folder = tmp_path_factory.mktemp("concurrency")
    items: list[object] = []
    for seed in range(6):
        photo = _photo(seed)
        path = folder / f"photo{seed}.png"
        path.write_bytes(_encode(photo, "PNG"))
        items += [path, _encode(photo, "PNG"), np.asarray(photo), _encode(photo, "JPEG", quality=85)]
    items.append(_photo(1).resize((96, 72)))  # a PIL image (loaded), a resized near-duplicate
    (folder / "truncated.png").write_bytes(_encode(_photo(2), "PNG")[:100])
    items += [folder / "truncated.png", folder / "missing.jpg", b"not an image", 42]
    return items


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    path.write_bytes(onnx_bytes())
    return path


def _prism(model: Path, cache: EmbeddingCache | None = None) -> ImagePrism:
    return ImagePrism(
        dimensions=["hash", "semantic"],
        config={"semantic": SemanticConfig(model_path=model)},
        cache=cache,
        batch_size=3,
    )


Task = tuple[str, tuple[int, ...]]


def _workload(inputs: list[object]) -> list[Task]:
    good = list(range(len(inputs) - N_BAD))
    bad = list(range(len(inputs) - N_BAD, len(inputs)))
    rng = random.Random(0)
    tasks: list[Task] = [("embed", (i,)) for i in good]
    tasks += [("compare", (rng.choice(good), rng.choice(good))) for _ in range(30)]
    tasks += [("embed_batch", tuple(rng.sample(range(len(inputs)), 9))) for _ in range(6)]
    tasks += [("embed_batch", tuple(good + bad))]
    tasks += [("dedup", tuple(good)), ("dedup", tuple(rng.sample(range(len(inputs)), 12)))]
    return tasks


def _run(prism: ImagePrism, inputs: list[object], task: Task) -> Any:
    """One call, reduced to plain comparable values (arrays as bytes, errors as type and text)."""
    kind, idx = task
    if kind == "embed":
        return _plain(prism.embed(inputs[idx[0]]))
    if kind == "compare":
        result = prism.compare(inputs[idx[0]], inputs[idx[1]])
        return dict(result.scores), result.weighted_score
    if kind == "embed_batch":
        batch = prism.embed_batch([inputs[i] for i in idx], on_error="skip")
        failures = [(f.index, f.input, type(f.error).__name__, str(f.error)) for f in batch.failures]
        # nothing lost: each input has an embedding or a failure, never both, never neither
        assert sorted([i for i, e in enumerate(batch.embeddings) if e is not None] + [f[0] for f in failures]) == list(range(len(idx)))
        return [None if e is None else _plain(e) for e in batch.embeddings], failures
    if kind == "dedup":
        result = prism.dedup([inputs[i] for i in idx], threshold=0.9, on_error="skip")
        failures = [(f.index, type(f.error).__name__, str(f.error)) for f in result.failures]
        return result.unique.tolist(), result.labels.tolist(), failures
    raise AssertionError(kind)


def _plain(embeddings: dict[str, np.ndarray | None]) -> dict[str, Any]:
    return {k: None if v is None else (v.dtype.str, v.shape, v.tobytes()) for k, v in embeddings.items()}


def _lookups(inputs: list[object], tasks: list[Task], serial: dict[Task, Any], dimensions: int) -> int:
    """Cache lookups the workload makes: one per successfully opened image and dimension."""
    total = 0
    for task in tasks:
        kind, idx = task
        if kind == "embed":
            total += 1
        elif kind == "compare":
            total += 2
        elif kind == "embed_batch":
            total += sum(e is not None for e in serial[task][0])
        elif kind == "dedup":
            total += len(idx) - len(serial[task][2])
    return total * dimensions


def _in_threads(work: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def run(worker: int) -> None:
        try:
            barrier.wait()
            work(worker)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,), name=f"worker-{w}") for w in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a worker did not finish within 120 s"
    return errors


def test_shared_prism_matches_a_serial_run(inputs: list[object], tiny_model: Path) -> None:
    tasks = _workload(inputs)
    serial_prism = _prism(tiny_model)
    serial = {task: _run(serial_prism, inputs, task) for task in tasks}

    shared = _prism(tiny_model)
    results: list[list[tuple[Task, Any]]] = [[] for _ in range(THREADS)]

    def work(worker: int) -> None:
        order = list(tasks)
        random.Random(worker).shuffle(order)
        for task in order:
            results[worker].append((task, _run(shared, inputs, task)))

    assert _in_threads(work) == []
    for worker, done in enumerate(results):
        assert len(done) == len(tasks)
        for task, value in done:
            assert value == serial[task], f"worker {worker}, {task}: differs from the serial run"

    # the cache: every lookup counted once, one entry per distinct (pixels, dimension)
    stats = shared.cache.stats
    assert stats.hits + stats.misses == THREADS * _lookups(inputs, tasks, serial, len(shared.dimensions))
    assert stats.entries == serial_prism.cache.stats.entries == len(shared.cache)
    assert stats.misses >= serial_prism.cache.stats.misses  # racing threads may both compute a missing entry
    # ... and each entry holds the serial value: embedding everything again is all hits, same arrays
    before = shared.cache.stats
    good = sorted({t[1][0] for t in tasks if t[0] == "embed"})
    for i in good:
        assert _plain(shared.embed(inputs[i])) == serial[("embed", (i,))]
    after = shared.cache.stats
    assert after.misses == before.misses and after.hits == before.hits + len(good) * len(shared.dimensions)


def test_bounded_cache_stays_within_bounds_and_correct_under_contention(inputs: list[object], tiny_model: Path) -> None:
    tasks = [t for t in _workload(inputs) if t[0] in ("embed", "compare")]
    serial_prism = _prism(tiny_model)
    serial = {task: _run(serial_prism, inputs, task) for task in tasks}
    cache = EmbeddingCache(max_entries=5, max_bytes=4096)
    shared = _prism(tiny_model, cache=cache)
    mismatches: list[Task] = []
    peak = {"entries": 0, "bytes": 0}

    def work(worker: int) -> None:
        order = list(tasks) * 2
        random.Random(100 + worker).shuffle(order)
        for task in order:
            if _run(shared, inputs, task) != serial[task]:
                mismatches.append(task)
            stats = cache.stats
            peak["entries"] = max(peak["entries"], stats.entries)
            peak["bytes"] = max(peak["bytes"], stats.bytes)

    assert _in_threads(work) == []
    assert mismatches == []
    stats = cache.stats
    assert peak["entries"] <= 5 and peak["bytes"] <= 4096 and stats.entries <= 5
    assert stats.hits + stats.misses == THREADS * 2 * _lookups(inputs, tasks, serial, len(shared.dimensions))
    assert stats.bytes == sum(0 if v is None else v.nbytes for v in cache._data.values())  # bookkeeping agrees


def test_first_use_from_many_threads_opens_the_model_once(inputs: list[object], tiny_model: Path) -> None:
    shared = _prism(tiny_model)
    plugin = shared.plugins["semantic"]
    models: list[object] = []

    def work(worker: int) -> None:
        shared.embed(inputs[4 * (worker % 6)])
        models.append(plugin.open_model())  # type: ignore[attr-defined]

    assert _in_threads(work) == []
    assert len({id(m) for m in models}) == 1

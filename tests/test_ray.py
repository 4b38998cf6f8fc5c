"""imageprism.ray on a real local Ray cluster (2 CPUs, started once for the module).

Few and small on purpose: a cluster start and each Ray Data job cost seconds.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")

import imageprism.ray as ipr
from imageprism import ArrowEmbedder, HashConfig, ImagePrism
from imageprism._dedup import DedupColumn, greedy_labels
from imageprism.columnar.schema import DimensionField, embedding_schema, numpy_to_column

PLAIN = {"hash": HashConfig.plain()}


@pytest.fixture(scope="module")
def cluster() -> object:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the killing embedder below travels by value
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, dev_images: list[Path]) -> list[str]:
    """Generated scenes with near copies, the dev photos with a mirrored copy of three, and a bad file."""
    folder = tmp_path_factory.mktemp("ray-images")
    paths = []
    for i in range(4):
        img = Image.fromarray(np.random.default_rng(i).integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((96, 96))
        for name, edit in (("a.png", img), ("b.jpg", img.resize((64, 64))), ("c.png", ImageOps.mirror(img))):
            edit.save(folder / f"g{i}{name}")
            paths.append(str(folder / f"g{i}{name}"))
    paths += [str(p) for p in dev_images]
    for p in dev_images[:3]:
        ImageOps.mirror(Image.open(p)).save(folder / f"mirror_{p.name}")
        paths.append(str(folder / f"mirror_{p.name}"))
    (folder / "bad.jpg").write_bytes(b"no image here")
    paths.insert(7, str(folder / "bad.jpg"))
    return paths


def _rows(ds: object) -> pa.Table:
    return pa.concat_tables(ray.get(ds.to_arrow_refs())).sort_by("order")  # type: ignore[attr-defined]


def _labels(table: pa.Table) -> list[int]:
    return [-1 if v is None else v for v in table.column("representative").to_pylist()]


def test_embed_and_dedup_dataset_equal_the_single_machine_path(cluster: object, images: list[str]) -> None:
    ds = ray.data.from_items([{"path": p, "order": i} for i, p in enumerate(images)], override_num_blocks=4)
    embedded = ipr.embed_dataset(ds, batch_size=8, concurrency=2).materialize()
    table = _rows(embedded)
    prism = ImagePrism()
    ref = prism.embed_batch(images, on_error="skip")
    assert table.column("order").to_pylist() == list(range(len(images)))  # complete: nothing dropped
    errors = table.column("error").to_pylist()
    assert [i for i, e in enumerate(errors) if e] == [7] and "bad.jpg" in errors[7]
    codes = table.column("hash").to_pylist()
    for i, emb in enumerate(ref.embeddings):
        if emb is not None:
            assert codes[i] == emb["hash"].tobytes()
    request = prism.plugins["hash"].image_request
    from imageprism._image import open_image

    assert table.column("pixel_key")[0].as_py() == open_image(images[0]).pixels(request).key
    # robust hashes: label for label, the bad file included (-1 / null)
    out = _rows(ipr.dedup_dataset(embedded, threshold=0.85, order_by="order"))
    assert _labels(out) == prism.dedup(images, threshold=0.85, on_error="skip").labels.tolist()
    assert len(set(_labels(out))) < len(images) - 1  # the mirrored copies were grouped


def test_dedup_dataset_plain_hashes_in_shuffled_blocks(cluster: object, images: list[str]) -> None:
    table = ArrowEmbedder(config=PLAIN)(pa.table({"path": images, "order": np.arange(len(images)) * 3}))
    shuffled = table.take(np.random.default_rng(0).permutation(table.num_rows))
    out = _rows(ipr.dedup_dataset(ray.data.from_arrow(shuffled).repartition(3), threshold=0.85, order_by="order"))
    ref = ImagePrism(config=PLAIN).dedup(images, threshold=0.85, on_error="skip").labels
    assert _labels(out) == [-1 if r < 0 else 3 * r for r in ref.tolist()]


def test_dedup_dataset_synthetic_codes_with_clusters(cluster: object) -> None:
    rng = np.random.default_rng(5)
    n = 3000
    codes = rng.integers(0, 256, (n, 3, 8), dtype=np.uint8)
    src = rng.integers(0, np.arange(1, n))[rng.random(n - 1) < 0.3]
    dst = np.flatnonzero(rng.random(n - 1) < 0.3)[: len(src)] + 1
    for d, s in zip(dst.tolist(), src.tolist()):
        if s < d:
            bits = np.unpackbits(codes[s], axis=-1)
            bits.reshape(-1)[rng.choice(192, int(rng.integers(0, 12)), replace=False)] ^= 1
            codes[d] = np.packbits(bits, axis=-1)
    field = DimensionField("hash", "bits", (3, 8), 64, 1)
    schema = embedding_schema([field])
    table = pa.table({"order": np.arange(n), "hash": numpy_to_column(list(codes), field)},
                     schema=pa.schema([pa.field("order", pa.int64()), schema.field("hash")]))
    ref = greedy_labels([DedupColumn("hash", "bits", codes, bits_per_row=64)], 0.9)
    out = _rows(ipr.dedup_dataset(ray.data.from_arrow(table).repartition(4), threshold=0.9, order_by="order"))
    assert _labels(out) == ref.tolist()
    assert len(np.unique(ref)) < n


class KillOnce(ArrowEmbedder):
    """Kills its own worker process (SIGKILL) on its second batch, once (a marker file says it happened)."""

    def __init__(self, marker: str, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.marker = marker
        self.calls = 0

    @property
    def constructor_kwargs(self) -> dict[str, object]:
        return dict(super().constructor_kwargs, marker=self.marker)

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.calls += 1
        if self.calls == 2:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(batch)


def test_worker_killed_mid_job_is_retried(cluster: object, images: list[str], tmp_path: Path) -> None:
    marker = tmp_path / "killed"
    items = images[:24]
    ds = ray.data.from_items([{"path": p, "order": i} for i, p in enumerate(items)], override_num_blocks=6)
    out = ipr.embed_dataset(ds, embedder=KillOnce(str(marker), config=PLAIN), batch_size=4, concurrency=1)
    table = _rows(out)
    assert marker.exists()  # the worker really died
    ref = ImagePrism(config=PLAIN).embed_batch(items, on_error="skip")
    assert table.column("order").to_pylist() == list(range(len(items)))
    codes = table.column("hash").to_pylist()
    assert [i for i, c in enumerate(codes) if c is None] == [f.index for f in ref.failures]
    assert all(codes[i] == e["hash"].tobytes() for i, e in enumerate(ref.embeddings) if e is not None)

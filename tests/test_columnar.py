"""The engine-free columnar core: ArrowEmbedder tables, read-back, and the band-plan dedup kernels."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

pa = pytest.importorskip("pyarrow")

from imageprism import (
    ArrowEmbedder,
    DedupBudgetError,
    EmbeddedImage,
    Failure,
    HashConfig,
    ImagePrism,
    embeddings_from_table,
)
from imageprism._dedup import DedupColumn, greedy_labels
from imageprism._image import open_image
from imageprism.columnar.dedup import (
    CodeLayout,
    band_keys,
    collapse_identical,
    dedup_codes,
    greedy_from_edges,
    labels_from_edges,
    plan_bands,
)
from imageprism.columnar.schema import SCHEMA_VERSION, DimensionField, embedding_schema, numpy_to_column
from imageprism.columnar.tables import edge_rows, key_rows
from imageprism.errors import InputError

PLAIN = {"hash": HashConfig.plain()}


def scene(seed: int, size: int = 96) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def variety(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Scenes with near copies (brighter, smaller JPEG, mirrored, cropped) and a broken file."""
    folder = tmp_path_factory.mktemp("variety")
    paths = []
    for i in range(6):
        img = scene(i)
        for name, edit in (("orig.png", img), ("small.jpg", img.resize((60, 60))), ("mirror.png", ImageOps.mirror(img)),
                           ("crop.png", img.crop((8, 8, 88, 88)))):
            path = folder / f"s{i}_{name}"
            edit.save(path)
            paths.append(str(path))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    paths.insert(5, str(folder / "broken.jpg"))
    return paths


@pytest.mark.parametrize("config", [None, PLAIN], ids=["robust", "plain"])
def test_embedder_matches_embed_batch(variety: list[str], config: dict | None) -> None:
    table = ArrowEmbedder(config=config)(pa.table({"path": variety, "id": np.arange(len(variety)) * 10}))
    prism = ImagePrism(config=config)
    ref = prism.embed_batch(variety, on_error="skip")
    assert table.num_rows == len(variety)
    assert table.column("id").to_pylist() == [i * 10 for i in range(len(variety))]  # passed through, in order
    assert table.schema.metadata[b"imageprism.schema_version"] == SCHEMA_VERSION.encode()
    errors = table.column("error").to_pylist()
    assert [i for i, e in enumerate(errors) if e] == [f.index for f in ref.failures] == [5]
    assert errors[5].startswith("ImageLoadError") and "broken.jpg" in errors[5]
    back = embeddings_from_table(table)
    assert back.rows.tolist() == [i for i in range(len(variety)) if i != 5]
    for k, row in enumerate(back.rows.tolist()):
        assert np.array_equal(back.embeddings["hash"][k], ref.embeddings[row]["hash"])
        src = open_image(variety[row])
        assert table.column("pixel_key")[row].as_py() == src.pixels(prism.plugins["hash"].image_request).key
        assert (table.column("width")[row].as_py(), table.column("height")[row].as_py()) == Image.open(variety[row]).size
        assert table.column("file_size")[row].as_py() == Path(variety[row]).stat().st_size
    assert table.column("pixel_key")[5].as_py() is None and table.column("hash")[5].as_py() is None
    # the table is where dedup can start: same labels as from the images
    from_table = prism.dedup_embeddings(back.embeddings, threshold=0.85)
    direct = prism.dedup([variety[i] for i in back.rows.tolist()], threshold=0.85)
    assert from_table == direct


def test_embed_chunk_is_embed_batch_one_chunk_at_a_time(variety: list[str]) -> None:
    prism = ImagePrism(config=PLAIN)
    ref = prism.embed_batch(variety, on_error="skip")
    entries = prism.embed_chunk(variety[3:9], start=3)
    assert [e.index for e in entries] == list(range(3, 9))  # in order, indexed from start, nothing dropped
    failed = [e for e in entries if isinstance(e, Failure)]
    assert [f.index for f in failed] == [5] and "broken.jpg" in f"{failed[0].input}"
    for e in entries:
        if isinstance(e, EmbeddedImage):
            assert np.array_equal(e.embeddings["hash"], ref.embeddings[e.index]["hash"])
            assert (e.width, e.height) == Image.open(variety[e.index]).size
            assert e.pixel_keys["hash"] == open_image(variety[e.index]).pixels(prism.plugins["hash"].image_request).key


def test_embedder_bytes_column_uses_path_column_and_drops_bytes(variety: list[str]) -> None:
    data = [Path(p).read_bytes() for p in variety[:3]] + [b"", None]
    table = ArrowEmbedder(config=PLAIN, column="bytes")(
        pa.record_batch({"bytes": pa.array(data, pa.binary()), "path": ["a", "b", "c", "d", "e"]}))
    assert "bytes" not in table.column_names
    assert table.column("path").to_pylist() == ["a", "b", "c", "d", "e"]
    assert table.column("file_size").to_pylist()[:4] == [len(d) for d in data[:4]]
    assert table.column("mtime").null_count == 5
    errors = table.column("error").to_pylist()
    assert errors[:3] == [None] * 3 and "empty" in errors[3] and errors[4].startswith("ImageLoadError")
    ref = ImagePrism(config=PLAIN).embed_batch(data[:3])
    assert all(np.array_equal(embeddings_from_table(table).embeddings["hash"][i], ref.embeddings[i]["hash"]) for i in range(3))


def test_exif_orientation_swaps_width_and_height(tmp_path: Path) -> None:
    img = scene(1).resize((80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: displayed 40 x 80
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", exif=exif)
    table = ArrowEmbedder(config=PLAIN, column="bytes")(pa.table({"bytes": [buffer.getvalue()]}))
    assert (table.column("width")[0].as_py(), table.column("height")[0].as_py()) == (40, 80)


def test_embedder_pickles_before_and_after_use(variety: list[str]) -> None:
    embedder = ArrowEmbedder(config=PLAIN)
    before = pickle.loads(pickle.dumps(embedder))
    first = embedder(pa.table({"path": variety[:4]}))
    after = pickle.loads(pickle.dumps(embedder))
    assert after._prism is None  # the prism (caches, sessions) never travels
    assert before(pa.table({"path": variety[:4]})).equals(first)
    assert after(pa.table({"path": variety[:4]})).equals(first)


def test_embedder_rejects_bad_columns() -> None:
    with pytest.raises(InputError, match="no column 'path'"):
        ArrowEmbedder()(pa.table({"file": ["x.jpg"]}))
    with pytest.raises(InputError, match="file paths .string. or image bytes"):
        ArrowEmbedder()(pa.table({"path": [1, 2]}))


def test_reader_refuses_unknown_major_version(variety: list[str]) -> None:
    table = ArrowEmbedder(config=PLAIN)(pa.table({"path": variety[:2]}))
    newer = table.replace_schema_metadata({**table.schema.metadata, b"imageprism.schema_version": b"2"})
    with pytest.raises(InputError, match="schema version 2"):
        embeddings_from_table(newer)


# -- kernels ------------------------------------------------------------------------------


def clustered_codes(n: int, rows: int = 3, seed: int = 0) -> np.ndarray:
    """Random 64-bit rows; a third of the items are near copies (0-8 bits flipped) or exact copies."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, rows, 8), dtype=np.uint8)
    for i in range(1, n):
        if rng.random() < 0.33:
            src = int(rng.integers(0, i))
            bits = np.unpackbits(codes[src], axis=-1)
            flips = rng.integers(0, 9)
            bits.reshape(-1)[rng.choice(bits.size, flips, replace=False)] ^= 1
            codes[i] = np.packbits(bits, axis=-1)
    return codes


@pytest.mark.parametrize("threshold", [0.88, 0.9, 0.95, 1.0])
def test_dedup_codes_equals_greedy_in_a_shuffled_order(threshold: float) -> None:
    codes = clustered_codes(1500)
    ref = greedy_labels([DedupColumn("hash", "bits", codes, bits_per_row=64)], threshold)
    perm = np.random.default_rng(1).permutation(len(codes))  # rows arrive shuffled; the order column restores order
    got = dedup_codes(codes[perm], perm * 7 + 3, CodeLayout(3, 8, 64), threshold, budget=1e6)
    labels = np.empty(len(codes), np.int64)
    labels[perm] = (got - 3) // 7
    assert np.array_equal(labels, ref)
    assert len(np.unique(ref)) < len(ref)  # the case has duplicates to find


def test_dedup_codes_equals_prism_dedup_with_robust_hashes(variety: list[str], dev_images: list[Path]) -> None:
    paths = [v for v in variety if not v.endswith("broken.jpg")] + [str(p) for p in dev_images]
    prism = ImagePrism()
    batch = prism.embed_batch(paths)
    codes = np.stack([e["hash"] for e in batch.embeddings])
    cfg = prism.plugins["hash"].config
    layout = CodeLayout(codes.shape[1], codes.shape[2], cfg.nbits, cfg.n_variants)
    for threshold in (0.8, 0.85, 0.9):
        ref = prism.dedup_embeddings(batch.embeddings, threshold=threshold).labels
        assert np.array_equal(dedup_codes(codes, np.arange(len(codes)), layout, threshold, budget=1e6), ref)
    assert len(np.unique(prism.dedup_embeddings(batch.embeddings, threshold=0.85).labels)) < len(paths)


def test_band_plan_is_a_valid_pigeonhole_split_and_refuses_past_budget() -> None:
    layout = CodeLayout(3, 8, 64)
    plan = plan_bands(layout, 0.9, 10_000)
    assert plan.radius == 19 and sum(plan.widths) == 192 and plan.bands * (plan.flips + 1) > plan.radius
    assert plan.candidates_per_item(10_000) <= 200
    # candidates per item grow linearly with n at a fixed plan
    assert plan.candidates_per_item(20_000) == pytest.approx(2 * plan.candidates_per_item(10_000), rel=1e-3)
    with pytest.raises(DedupBudgetError, match="past the budget of 200"):
        plan_bands(layout, 0.9, 1_000_000)
    assert plan_bands(layout, 0.9, 1_000_000, budget=1e3).candidates_per_item(1_000_000) <= 1e3
    wide = plan_bands(layout, 0.95, 1_000_000)  # a smaller radius: wider bands, few candidates
    assert wide.flips == 0 and wide.candidates_per_item(1_000_000) < 20


def test_band_keys_meet_for_every_pair_within_the_radius() -> None:
    """Pigeonhole: two codes within the radius share a (base, probe-or-base) key in some band."""
    rng = np.random.default_rng(3)
    layout = CodeLayout(3, 8, 64)
    plan = plan_bands(layout, 0.9, 100)
    a = rng.integers(0, 256, (200, 3, 8), dtype=np.uint8)
    bits = np.unpackbits(a, axis=-1).reshape(200, -1)
    for i in range(200):  # flip exactly `radius` bits, spread to make bands differ
        bits[i, rng.choice(192, plan.radius, replace=False)] ^= 1
    b = np.packbits(bits.reshape(200, 3, 64), axis=-1)
    keys, item, base = band_keys(np.concatenate([a, b]), plan)
    for i in range(200):
        mine = set(keys[(item == i) & base].tolist()) | set(keys[item == i].tolist())
        theirs_base = set(keys[(item == 200 + i) & base].tolist())
        mine_base = set(keys[(item == i) & base].tolist())
        theirs = set(keys[item == 200 + i].tolist())
        assert (mine & theirs_base) or (theirs & mine_base)


def test_identical_codes_collapse_to_the_first_order() -> None:
    codes = np.array([[[1]], [[2]], [[1]], [[3]], [[2]]], np.uint8)
    assert collapse_identical(codes, np.array([40, 10, 30, 20, 5])).tolist() == [30, 5, 30, 20, 5]


def test_dedup_codes_collapses_many_identical_codes() -> None:
    """Hundreds of copies of a few codes (flat images): the crowded keys collapse, labels stay exact."""
    rng = np.random.default_rng(4)
    codes = clustered_codes(600)
    codes = np.concatenate([codes, np.repeat(codes[:3], 150, axis=0), np.zeros((200, 3, 8), np.uint8)])
    perm = rng.permutation(len(codes))
    codes = codes[perm]
    for threshold in (0.9, 0.95):
        ref = greedy_labels([DedupColumn("hash", "bits", codes, bits_per_row=64)], threshold)
        assert np.array_equal(dedup_codes(codes, np.arange(len(codes)), CodeLayout(3, 8, 64), threshold, budget=1e6), ref)


def test_labels_from_edges_give_twins_their_first_copy_label() -> None:
    # 10-20 and 20-40 are edges; 30 is an identical copy of 20, 50 of 40, 60 of 10
    items, reps = labels_from_edges(np.array([10, 20, 20, 40, 10]), np.array([20, 40, 30, 50, 60]),
                                    np.array([False, False, True, True, True]))
    assert dict(zip(items.tolist(), reps.tolist())) == {20: 10, 30: 10, 50: 40, 60: 10}  # 40 stays: 20 is not one
    with pytest.raises(InputError, match="a < b"):
        labels_from_edges(np.array([2]), np.array([1]), np.array([False]))


def test_repeated_order_values_are_refused() -> None:
    codes = clustered_codes(50)
    orders = np.arange(50)
    orders[7] = 3
    with pytest.raises(InputError, match="repeats the value 3"):
        dedup_codes(codes, orders, CodeLayout(3, 8, 64), 0.9)
    field = DimensionField("hash", "bits", (3, 8), 64, 1)
    table = pa.table({"order": orders, "hash": numpy_to_column(list(codes), field)},
                     schema=pa.schema([pa.field("order", pa.int64()), embedding_schema([field]).field("hash")]))
    plan = plan_bands(CodeLayout(3, 8, 64), 0.9, 50)
    keys = key_rows(table, plan=plan, order_by="order", column="hash", parts=1)  # one part: the repeats meet there
    with pytest.raises(InputError, match="repeats the value 3"):
        edge_rows(keys, layout=plan.layout, threshold=0.9)


def test_greedy_from_edges_takes_the_first_representative() -> None:
    # 0-1, 1-2, 0-3, 2-3: 1 joins 0; 2 is a representative (1 is not one); 3 joins 0, the first
    i, j = np.array([1, 0, 0, 2, 0]), np.array([2, 1, 3, 3, 1])
    assert greedy_from_edges(4, i, j).tolist() == [0, 0, 2, 0]
    with pytest.raises(InputError):
        greedy_from_edges(3, np.array([2]), np.array([1]))

"""The hash dimension: imagehash parity, hex round trip, score semantics, config validation."""

from __future__ import annotations

from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from imageprism import ConfigError, HashConfig, ImagePrism, InputError
from imageprism.dimensions.hash import ALGORITHMS, GEOMETRIES, HashDimension, HashVariant

IMAGEHASH = {"phash": imagehash.phash, "dhash": imagehash.dhash, "ahash": imagehash.average_hash}


def _expected(image: Image.Image, hash_size: int) -> dict[str, str]:
    return {name: str(fn(image, hash_size=hash_size)) for name, fn in IMAGEHASH.items()}


@pytest.mark.parametrize("hash_size", [8, 16])
def test_imagehash_parity_on_every_dev_image(dev_images: list[Path], hash_size: int) -> None:
    """The compatible configuration gives imagehash's hex strings, from a path and from a PIL image."""
    config = HashConfig.imagehash_compatible(hash_size=hash_size)
    prism = ImagePrism(config={"hash": config})
    assert len(dev_images) >= 30
    for path in dev_images:
        with Image.open(path) as image:
            image.load()
            expected = _expected(image, hash_size)
            from_image = config.to_hex(prism.embed(image)["hash"])
        from_path = config.to_hex(prism.embed(path)["hash"])
        assert from_path == expected, path.name
        assert from_image == expected, path.name


def test_parity_holds_for_each_algorithm_alone(dev_images: list[Path]) -> None:
    path = dev_images[0]
    with Image.open(path) as image:
        expected = _expected(image, 8)
    for name in ALGORITHMS:
        config = HashConfig.imagehash_compatible(algorithms=(name,))
        assert config.to_hex(ImagePrism(config={"hash": config}).embed(path)["hash"]) == {name: expected[name]}


def test_golden_hex_strings_round_trip() -> None:
    """imagehash's own golden values for its test image (notes: hashing.md) survive from_hex/to_hex."""
    config = HashConfig.imagehash_compatible()
    golden = {"phash": "ba8c84536bd3c366", "dhash": "0026273b2b19550e", "ahash": "ffd7918181c9ffff"}
    embedding = config.from_hex(golden)
    assert embedding.shape == (3, 8) and embedding.dtype == np.uint8
    assert config.to_hex(embedding) == golden
    assert np.array_equal(config.from_hex(list(golden.values())), embedding)
    # most significant bit first: the top-left bit of dhash 0x00... is 0, of ahash 0xff... is 1
    assert embedding[1, 0] == 0x00 and embedding[2, 0] == 0xFF


@pytest.mark.parametrize(
    "config",
    [
        HashConfig.imagehash_compatible(),
        HashConfig.plain(hash_size=5),  # 25 bits: the last byte is padded
        HashConfig(hash_size=16, geometry="dihedral", crop_scales=(0.75, 0.5)),
        HashConfig(algorithms=("dhash",), hash_size=3, geometry="mirror"),
        HashConfig(algorithms=("phash",), geometry="none", crop_scales=(), rotations=(3,), shifted_crops=((0.5, 0.25),)),
    ],
    ids=["compat", "size5", "dihedral+crops", "dhash3-mirror", "rotation+shifted"],
)
def test_hex_round_trip_of_real_embeddings(config: HashConfig, dev_images: list[Path]) -> None:
    embedding = ImagePrism(config={"hash": config}).embed(dev_images[3])["hash"]
    hexes = config.to_hex(embedding)
    assert list(hexes) == list(config.row_labels)
    assert all(len(h) == -(-config.nbits // 4) for h in hexes.values())
    assert np.array_equal(config.from_hex(hexes), embedding)
    assert np.array_equal(config.from_hex(list(hexes.values())), embedding)


def test_from_hex_rejects_bad_strings() -> None:
    config = HashConfig.plain()
    with pytest.raises(InputError, match="'zz' is not a hexadecimal"):
        config.from_hex(["zz", "00", "00"])
    with pytest.raises(InputError, match="more than 64 bits"):
        config.from_hex(["1" + "0" * 16, "00", "00"])
    with pytest.raises(InputError, match="expected 3 hex strings"):
        config.from_hex(["00", "00"])
    with pytest.raises(InputError, match="missing for ahash"):
        config.from_hex({"phash": "00", "dhash": "00"})


def _plugin(config: HashConfig) -> HashDimension:
    return HashDimension(config, runtime=None)  # the hash dimension never uses the model runtime


@pytest.mark.parametrize(
    "config",
    [HashConfig.plain(), HashConfig.imagehash_compatible(hash_size=16), HashConfig(), HashConfig(geometry="mirror", crop_scales=(0.6,))],
    ids=["plain", "compat16", "default", "mirror+crop"],
)
def test_score_semantics(config: HashConfig, dev_images: list[Path]) -> None:
    """Identical images score 1.0; every score is in [0, 1] and symmetric."""
    prism = ImagePrism(config={"hash": config})
    plugin = prism.plugins["hash"]
    embeddings = [prism.embed(p)["hash"] for p in dev_images[:6]]
    for a in embeddings:
        assert plugin.score(a, a.copy()) == 1.0
        for b in embeddings:
            ab, ba = plugin.score(a, b), plugin.score(b, a)
            assert 0.0 <= ab <= 1.0
            assert ab == ba
    assert plugin.score(embeddings[0], None) is None


def test_score_is_fraction_of_equal_bits_averaged_over_algorithms() -> None:
    config = HashConfig.plain()
    plugin = _plugin(config)
    a = config.from_hex(["0000000000000000", "0000000000000000", "0000000000000000"])
    b = config.from_hex(["ffffffffffffffff", "000000000000000f", "0000000000000000"])  # 64, 4 and 0 bits differ
    assert plugin.score(a, b) == pytest.approx(np.mean([0.0, 60 / 64, 1.0]))


def test_score_rejects_embeddings_of_another_configuration() -> None:
    plugin = _plugin(HashConfig.plain())
    other = np.zeros((3, 32), np.uint8)  # hash_size=16
    with pytest.raises(InputError, match=r"shape \(3, 8\)"):
        plugin.score(other, other)


@pytest.mark.parametrize(
    ("kwargs", "bad", "valid"),
    [
        ({"algorithms": ("md5",)}, "md5", "phash, dhash, ahash"),
        ({"algorithms": ()}, "()", "phash, dhash, ahash"),
        ({"algorithms": ("phash", "phash")}, "'phash', 'phash'", "duplicate-free"),
        ({"hash_size": 1}, "hash_size=1", "from 2 to 64"),
        ({"hash_size": 8.0}, "hash_size=8.0", "from 2 to 64"),
        ({"hash_size": True}, "hash_size=True", "from 2 to 64"),
        ({"reduced_decode": "yes"}, "'yes'", "True or False"),
        ({"geometry": "spin"}, "'spin'", "'none', 'mirror', 'dihedral'"),
        ({"geometry": None}, "None", "'dihedral'"),
        ({"crop_scales": (1.5,)}, "1.5", "below 1"),
        ({"crop_scales": (0.1,)}, "0.1", "at least 0.25"),
        ({"crop_scales": (0.5, 0.5)}, "(0.5, 0.5)", "distinct"),
        ({"crop_scales": "0.5"}, "'0.5'", "side fractions"),
        ({"crop_geometry": "spin"}, "crop_geometry='spin'", "'none', 'mirror', 'dihedral'"),
        ({"crop_geometry": 3}, "crop_geometry=3", "None (the same as geometry)"),
        ({"rotations": (0,)}, "rotations=(0,)", "non-zero"),
        ({"rotations": (50,)}, "50", "within +-45"),
        ({"rotations": (4, 4.0)}, "(4, 4.0)", "distinct"),
        ({"rotations": (True,)}, "(True,)", "angles in degrees"),
        ({"rotations": "4"}, "'4'", "angles in degrees"),
        ({"rotations": (float("nan"),)}, "nan", "angles in degrees"),
        ({"shifted_crops": ((0.7, 0.2),)}, "0.2", "at most (1 - fraction) / 2"),
        ({"shifted_crops": ((0.7, 0.0),)}, "0.0", "the shift above 0"),
        ({"shifted_crops": ((0.1, 0.1),)}, "0.1", "at least 0.25"),
        ({"shifted_crops": ((0.7,),)}, "(0.7,)", "(side fraction, shift) pairs"),
        ({"shifted_crops": 0.7}, "0.7", "(side fraction, shift) pairs"),
        ({"shifted_crops": ((0.7, 0.1), (0.7, 0.1))}, "((0.7, 0.1), (0.7, 0.1))", "distinct"),
    ],
)
def test_config_validation_names_bad_value_and_valid_ones(kwargs: dict, bad: str, valid: str) -> None:
    with pytest.raises(ConfigError) as info:
        HashConfig(**kwargs)
    assert bad in str(info.value) and valid in str(info.value)
    assert isinstance(info.value, ValueError)


def test_config_normalises_spelling() -> None:
    config = HashConfig(algorithms=["PHash", "dhash"], geometry="Mirror", crop_scales=[0.5])
    assert config.algorithms == ("phash", "dhash") and config.geometry == "mirror" and config.crop_scales == (0.5,)
    assert set(GEOMETRIES) == {"none", "mirror", "dihedral"}


def test_variants_and_row_labels() -> None:
    config = HashConfig(
        algorithms=("phash", "dhash"), geometry="mirror", crop_scales=(0.5,), crop_geometry="none", rotations=(), shifted_crops=(),
    )
    assert config.variants == (HashVariant(1.0, "identity"), HashVariant(1.0, "mirror"), HashVariant(0.5, "identity"))
    assert config.row_labels == ("phash", "dhash", "phash/mirror", "dhash/mirror", "phash/crop0.5", "dhash/crop0.5")
    assert HashConfig(geometry="dihedral", crop_scales=(0.5,), crop_geometry=None).crop_geometry == "dihedral"  # None: same
    extra = HashConfig(algorithms=("phash",), geometry="none", crop_scales=(), rotations=(3,), shifted_crops=((0.5, 0.25),))
    assert not extra.is_plain and extra.n_variants == 1 + 1 + 8
    assert extra.variants[1] == HashVariant(1.0, "identity", degrees=3.0)
    assert extra.variants[2] == HashVariant(0.5, "identity", shift=(-0.25, -0.25))
    assert extra.row_labels[:4] == ("phash", "phash/rotate+3", "phash/crop0.5/shift-0.25,-0.25", "phash/crop0.5/shift+0,-0.25")
    assert {v.shift for v in extra.variants[2:]} == {(dx * 0.25, dy * 0.25) for dx in (-1, 0, 1) for dy in (-1, 0, 1)} - {(0.0, 0.0)}
    # capped at the whole image's geometry
    assert HashConfig(geometry="mirror", crop_geometry="dihedral").crop_geometry == "mirror"
    assert HashConfig(geometry="none", crop_scales=(), crop_geometry="mirror", rotations=(), shifted_crops=()) == HashConfig.plain()


def test_named_configurations() -> None:
    compat = HashConfig.imagehash_compatible()
    assert compat.is_plain and not compat.reduced_decode and compat.hash_size == 8
    plain = HashConfig.plain()
    assert plain.is_plain and plain.reduced_decode and plain.algorithms == ALGORITHMS
    assert HashConfig.plain(("dhash",), 16) == HashConfig(
        algorithms=("dhash",), hash_size=16, geometry="none", crop_scales=(), rotations=(), shifted_crops=(),
    )


@pytest.mark.parametrize("aspect", [1e-4, 0.75, 1.0, 1.5, 1e4])
def test_rotated_grid_stays_in_range_for_any_shape(aspect: float) -> None:
    """The small-rotation rows resample the grid bilinearly: values stay within the grid's range
    (black corners are 0), even for extreme aspect ratios."""
    from imageprism.dimensions._hash_batch import rotate_grids

    grid = np.random.default_rng(0).uniform(10, 245, (64, 64))
    rotated = rotate_grids(grid[:, None, :], 4.0, [aspect])[:, 0, :]
    assert np.isfinite(rotated).all() and rotated.min() >= 0.0 and rotated.max() <= grid.max() + 1e-9
    if 0.5 <= aspect <= 2:  # the centre stays inside the canvas (a 1:10000 strip turned 4 degrees leaves it: black)
        assert np.allclose(rotated[24:40, 24:40].mean(), grid[24:40, 24:40].mean(), rtol=0.1)

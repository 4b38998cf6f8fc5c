"""The hash dimension's flip, rotation and crop options pinned on a handful of dev photos.

Thresholds are the ones the README documents under "reading the scores": with
``HashConfig.robust()`` a flipped or rotated copy is a near-duplicate (>= 0.9), a 50%
centre crop scores at least ``CROP_THRESHOLD`` and unrelated photos stay below it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from imageprism import HashConfig, ImagePrism
from imageprism._math import hamming_similarity
from imageprism.dimensions.hash import SHIFT_DIRECTIONS, HashVariant

NEAR_DUPLICATE = 0.9
CROP_THRESHOLD = 0.8
PHOTOS = ("kodim05.png", "kodim19.png", "kodim23.png", "skimage_astronaut.png", "skimage_coffee.png", "skimage_rocket.jpg")


@pytest.fixture(scope="module")
def photos(dev_images_dir: Path) -> dict[str, Image.Image]:
    return {name: Image.open(dev_images_dir / name).convert("RGB") for name in PHOTOS}


@pytest.fixture(scope="module")
def prism() -> ImagePrism:
    return ImagePrism(config={"hash": HashConfig.robust()})


def _centre_crop(image: Image.Image, fraction: float) -> Image.Image:
    w, h = round(image.width * fraction), round(image.height * fraction)
    left, top = (image.width - w) // 2, (image.height - h) // 2
    return image.crop((left, top, left + w, top + h))


GEOMETRIC = {
    "mirror": ImageOps.mirror,
    "flip": ImageOps.flip,
    "rotate 90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "rotate 180": lambda im: im.transpose(Image.Transpose.ROTATE_180),
    "rotate 270": lambda im: im.transpose(Image.Transpose.ROTATE_270),
    "transpose": lambda im: im.transpose(Image.Transpose.TRANSPOSE),
    "mirror + half size": lambda im: ImageOps.mirror(im).resize((im.width // 2, im.height // 2)),
}


def test_robust_configuration() -> None:
    config = HashConfig.robust()
    assert config.geometry == "dihedral" and min(config.crop_scales) <= 0.5 and not config.is_plain
    assert config.crop_geometry == "mirror"
    # whole image: 8 ways; centre crops: as is and mirrored; small rotations; shifted crops in 8 directions
    assert config.n_variants == 8 + 2 * len(config.crop_scales) + len(config.rotations) + 8 * len(config.shifted_crops)
    assert config.variants[0] == HashVariant(1.0, "identity") and HashVariant(0.5, "mirror") in config.variants
    assert HashConfig.plain().is_plain and HashConfig.plain().n_variants == 1


@pytest.mark.parametrize("transform", list(GEOMETRIC))
def test_flipped_and_rotated_copies_are_near_duplicates(prism: ImagePrism, photos: dict, transform: str) -> None:
    for name, image in photos.items():
        score = prism.compare(image, GEOMETRIC[transform](image)).scores["hash"]
        assert score >= NEAR_DUPLICATE, (name, transform, score)


def _shifted_crop(image: Image.Image, fraction: float, shift: tuple[float, float]) -> Image.Image:
    w, h = round(image.width * fraction), round(image.height * fraction)
    left, top = round((image.width - w) / 2 + shift[0] * image.width), round((image.height - h) / 2 + shift[1] * image.height)
    return image.crop((left, top, left + w, top + h))


def _rotated(image: Image.Image, degrees: float) -> Image.Image:
    return image.rotate(degrees, resample=Image.Resampling.BICUBIC)


@pytest.mark.parametrize("degrees", [2, -3, 3, 5, -5])
def test_slightly_rotated_copies_are_near_duplicates(prism: ImagePrism, photos: dict, degrees: float) -> None:
    for name, image in photos.items():
        score = prism.compare(image, _rotated(image, degrees)).scores["hash"]
        assert score >= NEAR_DUPLICATE, (name, degrees, score)


def test_small_rotations_need_the_rotation_rows(photos: dict) -> None:
    """The control: without ``rotations`` a 5-degree copy falls below the near-duplicate line on average."""
    without = ImagePrism(config={"hash": HashConfig(rotations=())})
    scores = [without.compare(im, _rotated(im, d)).scores["hash"] for im in photos.values() for d in (5, -5)]
    assert np.mean(scores) < NEAR_DUPLICATE, scores


def test_rotation_rows_equal_the_hash_of_the_rotated_image(photos: dict) -> None:
    """Up to resampling: the rows rotate the 64 x 64 grid bilinearly, Image.rotate the photo bicubically."""
    config = HashConfig.robust()
    prism = ImagePrism(config={"hash": config})
    labels, k = config.row_labels, len(config.algorithms)
    agreement = []
    for degrees in config.rotations:
        for image in photos.values():
            moved = prism.embed(_rotated(image, degrees))["hash"][:k]  # the rotated image's own whole-image rows
            derived = prism.embed(image)["hash"][[labels.index(f"{a}/rotate{degrees:+g}") for a in config.algorithms]]
            agreement.extend(hamming_similarity(moved, derived, config.nbits))
    assert min(agreement) >= 0.9 and np.mean(agreement) >= 0.98, agreement


@pytest.mark.parametrize("direction", list(SHIFT_DIRECTIONS))
def test_crops_shifted_off_centre_match_their_photo(prism: ImagePrism, photos: dict, direction: tuple[int, int]) -> None:
    """A 70% crop moved by 10% of each side, in each of the 8 directions."""
    without = ImagePrism(config={"hash": HashConfig(shifted_crops=())})
    before = []
    for name, image in photos.items():
        crop = _shifted_crop(image, 0.7, (0.1 * direction[0], 0.1 * direction[1]))
        score = prism.compare(image, crop).scores["hash"]
        assert score >= NEAR_DUPLICATE, (name, direction, score)
        before.append(without.compare(image, crop).scores["hash"])
    assert np.mean(before) < CROP_THRESHOLD, before  # the control: centre crops alone do not reach it


def test_plain_hashes_do_not_survive_a_mirror(photos: dict) -> None:
    """The control: without the option, a mirrored copy looks unrelated (about half the bits)."""
    plain = ImagePrism(config={"hash": HashConfig.plain()})
    scores = [plain.compare(im, ImageOps.mirror(im)).scores["hash"] for im in photos.values()]
    assert max(scores) < CROP_THRESHOLD, scores


def test_half_centre_crop_scores_above_threshold_and_unrelated_below(prism: ImagePrism, photos: dict) -> None:
    crops = {name: _centre_crop(im, 0.5) for name, im in photos.items()}
    embedded = {name: prism.embed(im)["hash"] for name, im in photos.items()}
    cropped = {name: prism.embed(im)["hash"] for name, im in crops.items()}
    score = prism.plugins["hash"].score
    for name in photos:
        assert score(embedded[name], cropped[name]) >= CROP_THRESHOLD, name
        # cropped and mirrored at once still matches
        assert prism.compare(photos[name], ImageOps.mirror(crops[name])).scores["hash"] >= CROP_THRESHOLD, name
        for other in photos:
            if other != name:
                assert score(embedded[name], embedded[other]) < CROP_THRESHOLD, (name, other)
                assert score(embedded[name], cropped[other]) < CROP_THRESHOLD, (name, other)


def test_scores_are_symmetric_across_crops_and_flips(prism: ImagePrism, photos: dict) -> None:
    plugin = prism.plugins["hash"]
    image = photos["kodim23.png"]
    variants = [image, _centre_crop(image, 0.6), ImageOps.mirror(_centre_crop(image, 0.8)), photos["kodim05.png"]]
    embs = [prism.embed(v)["hash"] for v in variants]
    for a in embs:
        for b in embs:
            assert plugin.score(a, b) == plugin.score(b, a)


def test_mirror_rows_equal_the_hash_of_the_mirrored_image(photos: dict) -> None:
    """The derived rows are (up to resampling rounding) the hashes of the transformed image."""
    config = HashConfig(geometry="dihedral")
    prism = ImagePrism(config={"hash": config})
    labels = config.row_labels
    k = len(config.algorithms)
    for image in photos.values():
        original = prism.embed(image)["hash"]
        for name, op in [("mirror", ImageOps.mirror), ("rot90", lambda im: im.transpose(Image.Transpose.ROTATE_90))]:
            moved = prism.embed(op(image))["hash"][:k]  # the transformed image's own whole-image rows
            derived = original[[labels.index(f"{a}/{name}") for a in config.algorithms]]
            assert hamming_similarity(moved, derived, config.nbits).min() >= 0.95, name


def test_a_candidate_row_pair_reaches_every_score(prism: ImagePrism, photos: dict) -> None:
    """The documented index property: score >= T implies a same-algorithm row pair, one of
    them a whole-image row, with a fraction of equal bits >= T."""
    plugin = prism.plugins["hash"]
    config = plugin.config
    k = len(config.algorithms)
    images = [*photos.values(), _centre_crop(photos["kodim19.png"], 0.5)]
    embs = [prism.embed(im)["hash"] for im in images]
    for a in embs:
        for b in embs:
            best = 0.0
            for whole, other in ((a, b), (b, a)):
                for j in range(k):
                    rows = other[j::k]  # algorithm j in every variant
                    best = max(best, hamming_similarity(np.broadcast_to(whole[j], rows.shape), rows, config.nbits).max())
            assert best >= plugin.score(a, b) - 1e-12

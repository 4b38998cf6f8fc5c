"""Every input bounded before it is read: only regular files, a byte limit, a JPEG scan limit.

Each hostile case runs in a fresh process (a hang is killed, not waited for): it must raise an
ImagePrismError subclass quickly, without reading the file whole, and without a traceback."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from bounded import python_code, run_bounded
from PIL import Image

from imageprism import ImagePrism
from imageprism._image import DEFAULT_MAX_BYTES, MAX_JPEG_SCANS
from imageprism.errors import ConfigError, ImageLoadError, InputTooLargeError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"


def many_scans_jpeg(scans: int, side: int = 2048) -> bytes:
    """A valid progressive JPEG whose last (tiny) scan is repeated: each copy is a pass over the image."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (120, 130, 140)).save(out, "JPEG", progressive=True, quality=90)
    data = out.getvalue()
    base = data.count(b"\xff\xda")
    last = data[data.rfind(b"\xff\xda"):-2]
    return data[:-2] + last * (scans - base) + b"\xff\xd9"


_CASES = """
import json, os, resource, sys, time
from imageprism import ImagePrism, ImagePrismError
from test_input_limits import many_scans_jpeg
folder = sys.argv[1]
prism = ImagePrism()
prism.embed({photo!r})  # warm up: the first decode's allocations are not the case's
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {{}}
for name in sys.argv[2:]:
    path = os.path.join(folder, name)
    start = time.perf_counter()
    try:
        prism.embed(path)
        outcome = "accepted"
    except ImagePrismError as exc:
        outcome = type(exc).__name__ + ": " + str(exc)
    out[name] = [outcome, time.perf_counter() - start]
out["rss_growth_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(out))
"""


def test_hostile_files_are_refused_at_once_without_being_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.jpg")  # opening it for reading would wait for a writer forever
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "socket.png"))
    with open(tmp_path / "sparse.jpg", "wb") as sparse:  # 2 GiB, almost nothing on disk
        sparse.write(b"\xff\xd8\xff\xe0")
        sparse.truncate(2 * 2**30)
    (tmp_path / "scans.jpg").write_bytes(many_scans_jpeg(2000))
    os.symlink(tmp_path / "fifo.jpg", tmp_path / "link-to-fifo.jpg")
    names = ["fifo.jpg", "socket.png", "sparse.jpg", "scans.jpg", "link-to-fifo.jpg"]
    try:
        outcome = run_bounded(python_code(_CASES.format(photo=str(EXAMPLES / "coffee.jpg"))) + [str(tmp_path), *names],
                              timeout=120)
    finally:
        server.close()
    outcome.assert_clean()
    assert outcome.returncode == 0, outcome.stderr
    out = json.loads(outcome.stdout)
    expected = {
        "fifo.jpg": "ImageLoadError: '.*fifo.jpg' is a FIFO \\(named pipe\\), not an image file",
        "socket.png": "ImageLoadError: '.*socket.png' is a socket, not an image file",
        "sparse.jpg": "InputTooLargeError: '.*sparse.jpg' is 2,147,483,648 bytes, above the limit of 268,435,456 bytes.*--max-bytes",
        "scans.jpg": f"InputTooLargeError: '.*scans.jpg' is a JPEG with 2,000 scans, above the limit of {MAX_JPEG_SCANS}",
        "link-to-fifo.jpg": "ImageLoadError: '.*link-to-fifo.jpg' is a FIFO",
    }
    for name, pattern in expected.items():
        message, seconds = out[name]
        assert re.match(pattern, message), (name, message)
        assert seconds < 1.0, f"{name} took {seconds:.2f} s to refuse"
    assert out["rss_growth_mib"] < 50, f"peak memory grew by {out['rss_growth_mib']:.0f} MiB (the 2 GiB file was read?)"


def test_the_byte_limit_applies_to_paths_file_objects_and_bytes(tmp_path: Path) -> None:
    photo = (EXAMPLES / "coffee.jpg").read_bytes()
    prism = ImagePrism(max_bytes=len(photo) - 1)
    for source in (EXAMPLES / "coffee.jpg", io.BytesIO(photo), photo):
        with pytest.raises(InputTooLargeError, match=f"above the limit of {len(photo) - 1:,} bytes.*max_bytes"):
            prism.embed(source)
    exact = ImagePrism(max_bytes=len(photo))  # the limit itself is allowed
    expected = ImagePrism().embed(photo)["hash"]
    for source in (EXAMPLES / "coffee.jpg", io.BytesIO(photo), photo):
        assert np.array_equal(exact.embed(source)["hash"], expected)
    assert ImagePrism().max_bytes == DEFAULT_MAX_BYTES == 256 * 2**20
    assert issubclass(InputTooLargeError, ImageLoadError)


class _EndlessStream(io.RawIOBase):
    """A file object that never ends (like a pipe from /dev/zero)."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        buffer[:] = b"\0" * len(buffer)
        return len(buffer)


def test_an_endless_file_object_is_read_only_up_to_the_limit() -> None:
    with pytest.raises(InputTooLargeError, match="more than 1,000,000 bytes"):
        ImagePrism(max_bytes=1_000_000).embed(io.BufferedReader(_EndlessStream()))


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "1"])
def test_bad_max_bytes(value: object) -> None:
    with pytest.raises(ConfigError, match="max_bytes"):
        ImagePrism(max_bytes=value)  # type: ignore[arg-type]


def test_progressive_jpegs_at_the_scan_limit_pass_and_one_more_is_refused(tmp_path: Path) -> None:
    prism = ImagePrism()
    ok = many_scans_jpeg(MAX_JPEG_SCANS, side=64)
    prism.embed(ok)
    with pytest.raises(InputTooLargeError, match=f"{MAX_JPEG_SCANS + 1} scans"):
        prism.embed(many_scans_jpeg(MAX_JPEG_SCANS + 1, side=64))
    progressive = io.BytesIO()
    Image.open(EXAMPLES / "coffee.jpg").save(progressive, "JPEG", progressive=True, optimize=True)
    assert prism.compare(progressive.getvalue(), EXAMPLES / "coffee.jpg").weighted_score > 0.9


def many_scans_baseline_jpeg(scans: int) -> bytes:
    """A baseline JPEG whose scan is repeated: libjpeg stops at the end of the first one."""
    out = io.BytesIO()
    Image.new("RGB", (512, 512), (120, 130, 140)).save(out, "JPEG", quality=90)
    data = out.getvalue()
    scan = data[data.rfind(b"\xff\xda"):-2]
    return data[:-2] + scan * scans + b"\xff\xd9"


def test_a_sequential_jpeg_with_repeated_scans_fails_at_the_second() -> None:
    """A sequential JPEG whose first scan holds every component is not counted (libjpeg refuses
    a second scan of it): repeated scans make it a broken file, not a slow one."""
    with pytest.raises(ImageLoadError, match="could not be decoded") as caught:
        ImagePrism().embed(many_scans_baseline_jpeg(2 * MAX_JPEG_SCANS))
    assert not isinstance(caught.value, InputTooLargeError)


def test_the_scan_count_runs_unless_the_first_scan_holds_every_component() -> None:
    from imageprism._image import _first_scan_components, _may_have_many_scans

    baseline = many_scans_baseline_jpeg(0)
    thumbnail = io.BytesIO()
    Image.new("L", (16, 16), 9).save(thumbnail, "JPEG")  # its own SOS holds 1 component
    app1 = b"Exif\x00\x00" + thumbnail.getvalue()
    with_thumbnail = baseline[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + baseline[2:]
    assert _first_scan_components(baseline) == _first_scan_components(with_thumbnail) == 3
    assert not _may_have_many_scans(Image.open(io.BytesIO(with_thumbnail)), with_thumbnail)
    # the same frame with a first scan of one component (a non-interleaved file): counted
    sos = baseline.find(b"\xff\xda")
    one_component = baseline[:sos] + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + baseline[sos + 14 :]
    assert _first_scan_components(one_component) == 1
    assert _may_have_many_scans(Image.open(io.BytesIO(one_component)), one_component)
    assert _may_have_many_scans(Image.open(io.BytesIO(many_scans_jpeg(2, side=64))), many_scans_jpeg(2, side=64))
    assert _first_scan_components(b"\xff\xd8junk") is None
    assert _first_scan_components(b"\xff\xd8\xff\xd9" + baseline[2:]) is None  # an end before any scan


def test_every_dev_photo_passes_the_limits(dev_images: list[Path]) -> None:
    photos = dev_images + sorted(EXAMPLES.glob("*.jp*g"))
    batch = ImagePrism().embed_batch(photos, on_error="skip")
    assert not batch.failures


def test_cli_limits_are_flags_with_one_line_errors(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.jpg")
    photo = str(EXAMPLES / "coffee.jpg")
    size = os.path.getsize(photo)
    cases = [
        (["embed", str(tmp_path / "fifo.jpg")], "is a FIFO (named pipe), not an image file"),
        (["embed", "--max-bytes", str(size - 1), photo], f"above the limit of {size - 1:,} bytes"),
        (["compare", "--max-pixels", "1000", photo, photo], "above the limit of 1,000 pixels"),
        (["dedup", "--max-bytes", "10", photo, photo], "above the limit of 10 bytes"),
        (["embed", "--max-bytes", "0", photo], "--max-bytes: '0' is not positive"),
    ]
    for argv, message in cases:
        outcome = run_bounded([sys.executable, "-m", "imageprism", *argv], timeout=60)
        outcome.assert_clean()
        assert outcome.returncode != 0 and message in outcome.stderr, (argv, outcome.stderr)
    accepted = run_bounded([sys.executable, "-m", "imageprism", "embed", "--max-bytes", str(size), photo], timeout=60)
    assert accepted.returncode == 0, accepted.stderr


def test_index_add_and_search_take_the_limit_flags(tmp_path: Path) -> None:
    photo = str(EXAMPLES / "coffee.jpg")
    index = tmp_path / "idx"
    built = run_bounded([sys.executable, "-m", "imageprism", "index", "build", "--out", str(index), photo], timeout=60)
    assert built.returncode == 0, built.stderr
    other = str(EXAMPLES / "rocket.jpg")
    added = run_bounded([sys.executable, "-m", "imageprism", "index", "add", "--max-bytes", "100", str(index), other], timeout=60)
    added.assert_clean()
    assert added.returncode == 1 and "above the limit of 100 bytes" in added.stderr
    found = run_bounded([sys.executable, "-m", "imageprism", "search", "--max-bytes", "100", str(index), other], timeout=60)
    found.assert_clean()
    assert found.returncode != 0 and "above the limit of 100 bytes" in found.stderr


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc (files that state a size of 0)")
def test_a_file_longer_than_its_stated_size_is_read_whole_up_to_the_limit() -> None:
    """Files are read to their stated size and one byte more; one that turns out longer (it grew,
    or is a /proc file stating 0 bytes) is read on, up to ``max_bytes`` and no further."""
    from imageprism._image import _read_path

    proc = Path("/proc/self/stat")
    assert proc.stat().st_size == 0
    data = _read_path(proc, "stat", 1 << 20)
    assert data.endswith(b"\n") and data.startswith(str(os.getpid()).encode() + b" ")
    with pytest.raises(InputTooLargeError, match="more than 5 bytes"):
        _read_path(proc, "stat", 5)

"""Model faults the runtime tests do not cover: damaged cached files, HTTP errors on the file itself,
and downloads cut off mid-body or by a killed process. All against the loopback fake Hub.

Already covered in ``test_runtime_hub.py``: a non-ONNX file served by the Hub, checksum and size
mismatch on download, a cached file that no longer matches its sha256, 5xx on the metadata
request (bounded retries), a server that is down.
"""

from __future__ import annotations

import hashlib
import http.server
import shlex
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import fakehub
import numpy as np
import pytest
from fakehub import FakeHub, onnx_bytes

from imageprism._runtime import ModelRuntime, ModelSpec
from imageprism.cli import main as cli_main
from imageprism.errors import ModelDownloadError, ModelLoadError, ModelNotCachedError

REPO = "acme/tiny-model"
FILE = "onnx/model.onnx"
DATA = onnx_bytes()
SHA = hashlib.sha256(DATA).hexdigest()
FEED = {"pixel_values": np.full((1, 3, 4, 4), 0.5, np.float32)}


def _spec(commit: str, *, pinned: bool = False) -> ModelSpec:
    """A user's own model (no checksum), or one pinned like the defaults (sha256 + size + dimension)."""
    extra: dict[str, object] = dict(sha256=SHA, size=len(DATA), dimension="semantic") if pinned else {}
    return ModelSpec(repo=REPO, filename=FILE, revision=commit, inputs=("pixel_values",), outputs=("image_embeds",),
                     **extra)  # type: ignore[arg-type]


def _runtime(hub: FakeHub, cache: Path, **kw: object) -> ModelRuntime:
    kw.setdefault("retries", 0)
    return ModelRuntime(endpoint=hub.endpoint, cache_dir=cache, **kw)  # type: ignore[arg-type]


def _cached_files(cache: Path) -> list[Path]:
    """Everything a later run could pick up: snapshot entries and blobs (locks and tags aside)."""
    return sorted(p for p in cache.rglob("*") if (p.is_file() or p.is_symlink()) and ".locks" not in p.parts
                  and p.name != "CACHEDIR.TAG")


def _damage(path: Path, data: bytes) -> None:
    blob = path.resolve()
    blob.chmod(0o644)
    blob.write_bytes(data)


@pytest.fixture
def no_hf_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub sleeps 1 s before each resume of a cut-off body; skip the wait in tests."""
    import huggingface_hub.file_download as file_download

    proxy = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
    proxy.sleep = lambda seconds: None
    monkeypatch.setattr(file_download, "time", proxy)


class _Cut:
    """Makes the fake Hub send the full Content-Length of a blob but only ``keep`` bytes of it."""

    def __init__(self, keep: int, times: int | None, stall: bool = False) -> None:
        self.keep, self.times, self.stall = keep, times, stall
        self.sent = threading.Event()  # set once a cut body has gone out
        self.release = threading.Event()  # a stalled connection closes when this is set
        self.count = 0


@pytest.fixture
def cut_bodies(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[_Cut]]:
    """Patch the fake Hub's handler: while a ``_Cut`` is in the list, blob GETs are cut short."""
    active: list[_Cut] = []
    original = fakehub._Handler._serve

    def serve(self: http.server.BaseHTTPRequestHandler, with_body: bool) -> None:
        cut = active[0] if active and with_body and self.path.startswith("/_blobs/") else None
        if cut is None or (cut.times is not None and cut.count >= cut.times):
            original(self, with_body)  # type: ignore[arg-type]
            return
        cut.count += 1
        original(self, with_body, keep=cut.keep)  # type: ignore[arg-type]
        cut.sent.set()
        if cut.stall:
            cut.release.wait(30)  # the handler holds the connection open until released

    monkeypatch.setattr(fakehub._Handler, "_serve", serve)
    yield active
    for cut in active:
        cut.release.set()


# -- a damaged file in the cache --------------------------------------------------------------------


def test_truncated_cached_model_names_the_file_and_a_fix_that_replaces_it(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    spec = _spec(commit)
    path = _runtime(fake_hub, tmp_path).fetch(spec)
    _damage(path, DATA[: len(DATA) // 2])

    with pytest.raises(ModelLoadError) as info:
        _runtime(fake_hub, tmp_path).model(spec)
    message = str(info.value)
    assert str(path) in message and "--force" in message
    command = message.split("`")[1]
    assert command.startswith("imageprism models download --repo") and f"--cache-dir {tmp_path}" in command

    # the command in the message, run as given, replaces the damaged copy
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    assert cli_main(shlex.split(command)[1:]) == 0
    assert path.read_bytes() == DATA
    model = _runtime(fake_hub, tmp_path).model(spec)
    assert model.run(FEED)[0].shape == (1, 8)


def test_pinned_model_damaged_in_the_cache_is_refetched_or_named_with_the_fix(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    spec = _spec(commit, pinned=True)
    path = _runtime(fake_hub, tmp_path).fetch(spec)

    # truncated: the size check catches it, removes it, and the next use downloads it again
    _damage(path, DATA[:100])
    with pytest.raises(ModelDownloadError, match="removed from the cache"):
        _runtime(fake_hub, tmp_path).model(spec)
    fake_hub.clear_requests()
    assert _runtime(fake_hub, tmp_path).model(spec).run(FEED)[0].shape == (1, 8)
    assert fake_hub.count("GET") == 1 and path.read_bytes() == DATA

    # same size, broken header: a blob named by its sha256 is trusted without re-hashing, so
    # onnxruntime is what notices; the error names the file and the command for this dimension
    _damage(path, b"\xff" * 16 + DATA[16:])
    with pytest.raises(ModelLoadError) as info:
        _runtime(fake_hub, tmp_path).model(spec)
    assert str(path) in str(info.value) and "`imageprism models download semantic" in str(info.value)
    assert f"--cache-dir {tmp_path} --force`" in str(info.value)
    _runtime(fake_hub, tmp_path).fetch(spec, force=True)  # what that command does
    assert path.read_bytes() == DATA
    assert _runtime(fake_hub, tmp_path).model(spec).run(FEED)[0].shape == (1, 8)


# -- HTTP errors on the file itself ------------------------------------------------------------------


def _blob_fails(hub: FakeHub, monkeypatch: pytest.MonkeyPatch, status: int, times: int | None) -> list[int]:
    """Blob GETs answer ``status`` (``times`` times, or always); HEAD requests work."""
    answered: list[int] = []
    original = hub._answer

    def answer(method: str, raw_path: str) -> tuple[int, dict[str, str], bytes]:
        if method == "GET" and raw_path.startswith("/_blobs/") and (times is None or len(answered) < times):
            answered.append(status)
            return status, {}, b"injected blob failure"
        return original(method, raw_path)

    monkeypatch.setattr(hub, "_answer", answer)
    return answered


def test_a_file_request_answering_500_is_retried_a_bounded_number_of_times(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    answered = _blob_fails(fake_hub, monkeypatch, 500, times=None)
    start = time.monotonic()
    with pytest.raises(ModelDownloadError, match=r"after 3 attempts: .*500") as info:
        _runtime(fake_hub, tmp_path, retries=2).fetch(_spec(commit))
    assert time.monotonic() - start < 10
    assert len(answered) == 3 and fake_hub.endpoint in str(info.value)
    assert _cached_files(tmp_path) == []


def test_a_transient_500_on_the_file_request_recovers(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    answered = _blob_fails(fake_hub, monkeypatch, 503, times=1)
    path = _runtime(fake_hub, tmp_path, retries=2).fetch(_spec(commit))
    assert answered == [503] and path.read_bytes() == DATA


# -- interrupted downloads ----------------------------------------------------------------------------


def test_a_body_cut_off_once_is_resumed_and_exact(
    fake_hub: FakeHub, tmp_path: Path, cut_bodies: list[_Cut], no_hf_sleep: None
) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    cut_bodies.append(_Cut(keep=len(DATA) // 3, times=1))
    path = _runtime(fake_hub, tmp_path).fetch(_spec(commit))
    assert cut_bodies[0].count == 1 and fake_hub.count("GET", contains="/_blobs/") >= 2
    assert path.read_bytes() == DATA


def test_a_download_that_never_completes_leaves_nothing_usable(
    fake_hub: FakeHub, tmp_path: Path, cut_bodies: list[_Cut], no_hf_sleep: None
) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    spec = _spec(commit)  # no checksum: only the transfer itself can tell a partial file
    cut_bodies.append(_Cut(keep=len(DATA) // 2, times=None))
    with pytest.raises(ModelDownloadError, match="downloading") as info:
        _runtime(fake_hub, tmp_path).fetch(spec)
    assert FILE in str(info.value)
    assert _cached_files(tmp_path) == []  # no snapshot entry, no blob, no partial file
    assert not _runtime(fake_hub, tmp_path).is_cached(spec)
    with pytest.raises(ModelNotCachedError):
        _runtime(fake_hub, tmp_path, offline=True).fetch(spec)

    cut_bodies.clear()  # the network is back
    assert _runtime(fake_hub, tmp_path).model(spec).run(FEED)[0].shape == (1, 8)
    assert _runtime(fake_hub, tmp_path).fetch(spec).read_bytes() == DATA


_DOWNLOAD_SCRIPT = """
import sys
from imageprism._runtime import ModelRuntime, ModelSpec
spec = ModelSpec(repo={repo!r}, filename={file!r}, revision={commit!r})
ModelRuntime(endpoint={endpoint!r}, cache_dir={cache!r}, retries=0).fetch(spec)
"""


def test_a_killed_download_leaves_nothing_that_passes_for_the_model(
    fake_hub: FakeHub, tmp_path: Path, cut_bodies: list[_Cut], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("no SIGKILL on this platform")
    commit = fake_hub.add_file(REPO, FILE, DATA)
    spec = _spec(commit)
    cut = _Cut(keep=len(DATA) // 2, times=1, stall=True)
    cut_bodies.append(cut)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    script = _DOWNLOAD_SCRIPT.format(repo=REPO, file=FILE, commit=commit, endpoint=fake_hub.endpoint, cache=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert cut.sent.wait(60), "the child never started downloading"
        time.sleep(0.3)  # let the first half reach its temporary file
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        cut.release.set()
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL

    # whatever the dead process left (a partial ``.incomplete`` blob) is never taken for the file
    leftovers = _cached_files(tmp_path)
    assert all(p.name.endswith(".incomplete") for p in leftovers), leftovers
    assert not _runtime(fake_hub, tmp_path).is_cached(spec)
    with pytest.raises(ModelNotCachedError):
        _runtime(fake_hub, tmp_path, offline=True).fetch(spec)
    path = _runtime(fake_hub, tmp_path).fetch(spec)
    assert path.read_bytes() == DATA
    assert _runtime(fake_hub, tmp_path).model(spec).run(FEED)[0].shape == (1, 8)

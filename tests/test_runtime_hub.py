"""The real download path (huggingface_hub.hf_hub_download) against the loopback fake Hub."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import huggingface_hub.errors as hf_errors
import numpy as np
import pytest
from fakehub import FakeHub, onnx_bytes

from imageprism._runtime import ModelRuntime, ModelSpec
from imageprism.errors import ModelDownloadError, ModelLoadError, ModelNotCachedError

REPO = "acme/tiny-clip"
FILE = "onnx/vision_model.onnx"
DATA = onnx_bytes()
SHA = hashlib.sha256(DATA).hexdigest()


def _spec(commit: str | None, **changes: object) -> ModelSpec:
    fields: dict[str, object] = {
        "repo": REPO,
        "filename": FILE,
        "revision": commit,
        "sha256": SHA,
        "size": len(DATA),
        "inputs": ("pixel_values",),
        "outputs": ("image_embeds",),
        "dimension": "semantic",
    }
    fields.update(changes)
    return ModelSpec(**fields)  # type: ignore[arg-type]


def _runtime(hub: FakeHub, cache: Path, **kw: object) -> ModelRuntime:
    kw.setdefault("retries", 0)
    return ModelRuntime(endpoint=hub.endpoint, cache_dir=cache, **kw)  # type: ignore[arg-type]


def _files_in(cache: Path) -> list[Path]:
    """Regular files and symlinks left in a cache, except lock files and the cache tag."""
    return [p for p in cache.rglob("*") if (p.is_file() or p.is_symlink()) and ".locks" not in p.parts
            and p.name != "CACHEDIR.TAG"]


@pytest.mark.parametrize("lfs", [True, False], ids=["lfs-redirect", "plain-file"])
def test_first_download_then_cached_reuse_makes_no_request(fake_hub: FakeHub, tmp_path: Path, lfs: bool) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA, lfs=lfs)
    path = _runtime(fake_hub, tmp_path).fetch(_spec(commit))
    assert path.read_bytes() == DATA
    assert f"models--acme--tiny-clip/snapshots/{commit}/{FILE}" in path.as_posix()
    assert fake_hub.count("GET") == 1  # the file body, once
    assert fake_hub.count("HEAD", contains="/resolve/") == 2  # our bounded probe, then hf_hub_download's own
    if lfs:
        assert fake_hub.count("GET", contains=f"/_blobs/{SHA}") == 1

    fake_hub.clear_requests()
    fresh = _runtime(fake_hub, tmp_path)  # a new process would start like this
    assert fresh.fetch(_spec(commit)) == path
    model = fresh.model(_spec(commit))
    assert model.input_names == ("pixel_values",)
    assert fake_hub.requests == []


def test_cached_pinned_model_loads_while_the_server_is_down(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    _runtime(fake_hub, tmp_path).fetch(_spec(commit))
    with fake_hub.down():
        model = _runtime(fake_hub, tmp_path).model(_spec(commit))
    (out,) = model.run({"pixel_values": np.ones((2, 3, 4, 4), np.float32)}, ["image_embeds"])
    assert out.shape == (2, 8)


def test_offline_flag_uses_the_cache_only(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    _runtime(fake_hub, tmp_path).fetch(_spec(commit))
    fake_hub.clear_requests()
    assert _runtime(fake_hub, tmp_path, offline=True).model(_spec(commit)).output_names == ("image_embeds",)
    assert fake_hub.requests == []


def test_hf_hub_offline_env_uses_the_cache_only(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    _runtime(fake_hub, tmp_path).fetch(_spec(commit))
    fake_hub.clear_requests()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runtime = _runtime(fake_hub, tmp_path)
    assert runtime.is_offline
    assert runtime.fetch(_spec(commit)).read_bytes() == DATA
    with pytest.raises(ModelNotCachedError):
        runtime.fetch(_spec(commit, filename="onnx/other.onnx"))
    assert fake_hub.requests == []
    # an explicit offline=False wins over the environment
    assert _runtime(fake_hub, tmp_path, offline=False).is_offline is False


def test_offline_without_cache_names_the_file_and_the_command(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    runtime = _runtime(fake_hub, tmp_path, offline=True)
    with pytest.raises(ModelNotCachedError) as info:
        runtime.model(_spec(commit))
    message = str(info.value)
    assert FILE in message and REPO in message and commit in message
    assert f"imageprism models download semantic --cache-dir {tmp_path}" in message
    assert fake_hub.requests == []

    own = _spec(commit, dimension="", sha256=None, size=None)  # a user's own model: the command names it
    with pytest.raises(ModelNotCachedError, match=f"--repo {REPO} --file {FILE} --revision {commit}"):
        runtime.fetch(own)
    # default cache dir (not given explicitly): no --cache-dir in the command
    with pytest.raises(ModelNotCachedError) as info:
        ModelRuntime(endpoint=fake_hub.endpoint, offline=True).fetch(_spec(commit))
    assert str(info.value).endswith("Fetch it while online with: imageprism models download semantic")


@pytest.mark.parametrize("lfs", [True, False], ids=["lfs-redirect", "plain-file"])
def test_checksum_mismatch_removes_the_file_and_names_both_hashes(
    fake_hub: FakeHub, tmp_path: Path, lfs: bool
) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA, lfs=lfs)
    wrong = "0" * 64
    with pytest.raises(ModelDownloadError) as info:
        _runtime(fake_hub, tmp_path).fetch(_spec(commit, sha256=wrong))
    message = str(info.value)
    assert f"{REPO}@{commit}" in message and FILE in message
    assert wrong in message and SHA in message
    assert _files_in(tmp_path) == []  # nothing corrupt left behind
    assert not _runtime(fake_hub, tmp_path).is_cached(_spec(commit))
    # the right checksum then downloads and verifies normally
    assert _runtime(fake_hub, tmp_path).fetch(_spec(commit)).read_bytes() == DATA


def test_size_mismatch_is_a_checksum_error_too(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    with pytest.raises(ModelDownloadError, match=f"expected {len(DATA) + 1} bytes, got {len(DATA)}"):
        _runtime(fake_hub, tmp_path).fetch(_spec(commit, size=len(DATA) + 1))
    assert _files_in(tmp_path) == []


def test_cached_file_that_no_longer_matches_is_removed(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA, lfs=False)  # blob named by git-sha1: verified by hashing
    path = _runtime(fake_hub, tmp_path).fetch(_spec(commit))
    blob = path.resolve()
    blob.chmod(0o644)
    blob.write_bytes(DATA[:-1] + bytes([DATA[-1] ^ 1]))  # same size, one bit flipped
    with pytest.raises(ModelDownloadError, match="cached file was removed"):
        _runtime(fake_hub, tmp_path).fetch(_spec(commit))
    assert _files_in(tmp_path) == []


def test_corrupt_cached_file_is_a_model_load_error_naming_the_file_and_fix(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_file(REPO, FILE, b"this is not an onnx model")
    spec = _spec(commit, sha256=None, size=None)
    with pytest.raises(ModelLoadError) as info:
        _runtime(fake_hub, tmp_path).model(spec)
    message = str(info.value)
    assert "snapshots" in message and FILE in message
    assert "delete it" in message and "imageprism models download" in message


def test_unknown_repo_revision_and_file_are_typed_and_clear(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    runtime = _runtime(fake_hub, tmp_path)
    cases = [
        (_spec(commit, repo="acme/nothing-here"), hf_errors.RepositoryNotFoundError, "repository 'acme/nothing-here' not found"),
        (_spec("f" * 40), hf_errors.RevisionNotFoundError, f"revision '{'f' * 40}' not found in {REPO}"),
        (_spec(commit, filename="onnx/missing.onnx"), hf_errors.EntryNotFoundError, "file 'onnx/missing.onnx' not found"),
    ]
    for spec, cause, text in cases:
        with pytest.raises(ModelDownloadError, match=text) as info:
            runtime.fetch(spec)
        assert isinstance(info.value.__cause__, cause)
        assert fake_hub.endpoint in str(info.value)
    assert _files_in(tmp_path) == []


def test_server_down_fails_fast_without_the_23_second_retry_loop(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    runtime = _runtime(fake_hub, tmp_path, retries=0)
    with fake_hub.down():
        start = time.monotonic()
        with pytest.raises(ModelDownloadError) as info:
            runtime.fetch(_spec(commit))
        elapsed = time.monotonic() - start
    assert elapsed < 5, f"took {elapsed:.1f} s"  # huggingface_hub alone backs off 1+2+4+8+8 s here
    assert fake_hub.endpoint in str(info.value) and "offline" in str(info.value)
    # back up: the same runtime downloads normally
    assert runtime.fetch(_spec(commit)).read_bytes() == DATA


def test_server_errors_are_retried_a_bounded_number_of_times(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    runtime = _runtime(fake_hub, tmp_path, retries=2)
    fake_hub.fail(500)
    start = time.monotonic()
    with pytest.raises(ModelDownloadError, match=r"after 3 attempts \(HTTP 500\)"):
        runtime.fetch(_spec(commit))
    assert time.monotonic() - start < 5
    assert fake_hub.count("HEAD") == 3 and fake_hub.count("GET") == 0
    assert _files_in(tmp_path) == []


def test_a_transient_server_error_is_retried_then_succeeds(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    fake_hub.fail(503)
    timer = threading.Timer(0.2, fake_hub.fail, args=(None,))  # the Hub recovers during the first back-off
    timer.start()
    try:
        assert _runtime(fake_hub, tmp_path, retries=2).fetch(_spec(commit)).read_bytes() == DATA
    finally:
        timer.cancel()
    assert fake_hub.count("HEAD") >= 3  # 503, then probe + hf_hub_download


def test_unpinned_revision_resolves_main_once_then_stays_cached(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    spec = _spec(None)
    assert spec.location == f"{REPO}@main/{FILE}"
    path = _runtime(fake_hub, tmp_path).fetch(spec)
    assert commit in path.as_posix()
    fake_hub.clear_requests()
    assert _runtime(fake_hub, tmp_path).fetch(spec) == path
    assert _runtime(fake_hub, tmp_path, offline=True).fetch(spec) == path
    assert fake_hub.requests == []


def test_force_downloads_again(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    runtime = _runtime(fake_hub, tmp_path)
    runtime.fetch(_spec(commit))
    fake_hub.clear_requests()
    assert runtime.fetch(_spec(commit), force=True).read_bytes() == DATA
    assert fake_hub.count("GET") == 1
    with pytest.raises(ModelNotCachedError, match="cannot be re-downloaded"):
        _runtime(fake_hub, tmp_path, offline=True).fetch(_spec(commit), force=True)


def test_hf_endpoint_and_cache_dir_environment_variables(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint + "/")
    monkeypatch.setenv("IMAGEPRISM_CACHE_DIR", str(tmp_path / "from-env"))
    runtime = ModelRuntime(retries=0)
    assert runtime.hub.endpoint == fake_hub.endpoint
    assert runtime.cache_path == tmp_path / "from-env"
    path = runtime.fetch(_spec(commit))
    assert path.is_relative_to(tmp_path / "from-env")
    assert fake_hub.count("GET") == 1
    # an explicit argument wins over the environment
    assert ModelRuntime(cache_dir=tmp_path / "arg").cache_path == tmp_path / "arg"


def test_concurrent_first_use_downloads_once_and_shares_one_session(fake_hub: FakeHub, tmp_path: Path) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA)
    runtime = _runtime(fake_hub, tmp_path)
    results: list[object] = []
    errors: list[BaseException] = []

    def use() -> None:
        try:
            model = runtime.model(_spec(commit))
            out = model.run({"pixel_values": np.full((1, 3, 2, 2), 0.5, np.float32)}, ["image_embeds"])[0]
            results.append((model, out.tobytes()))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({id(m) for m, _ in results}) == 1 and len({o for _, o in results}) == 1
    assert fake_hub.count("GET") == 1
    # a second runtime on the same cache shares the already open session
    assert _runtime(fake_hub, tmp_path).model(_spec(commit)) is results[0][0]  # type: ignore[index]


@pytest.mark.parametrize("lfs", [True, False], ids=["lfs-redirect", "plain-file"])
def test_failed_body_download_is_a_download_error_and_leaves_no_file(
    fake_hub: FakeHub, tmp_path: Path, lfs: bool
) -> None:
    commit = fake_hub.add_file(REPO, FILE, DATA, lfs=lfs)
    fake_hub.fail(500, method="GET")  # metadata answers, the body does not
    start = time.monotonic()
    with pytest.raises(ModelDownloadError, match=f"downloading '{FILE}' from {REPO}@{commit}.*failed"):
        _runtime(fake_hub, tmp_path).fetch(_spec(commit))
    assert time.monotonic() - start < 5
    assert [p for p in _files_in(tmp_path) if not p.name.endswith(".incomplete")] == []
    fake_hub.fail(None)
    assert _runtime(fake_hub, tmp_path).fetch(_spec(commit)).read_bytes() == DATA


def test_an_endpoint_that_is_not_a_hub_is_named(fake_hub: FakeHub, tmp_path: Path) -> None:
    """A plain web server holding the file at the right URL still lacks the Hub's headers."""
    import functools
    import http.server

    commit = "c" * 40
    site = tmp_path / "site"
    target = site / REPO / "resolve" / commit / FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(DATA)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        runtime = ModelRuntime(endpoint=f"http://127.0.0.1:{server.server_address[1]}", cache_dir=tmp_path / "c")
        with pytest.raises(ModelDownloadError, match="without the X-Repo-Commit header.*HF_ENDPOINT"):
            runtime.fetch(_spec(commit))
    finally:
        server.shutdown()
        server.server_close()
    assert _files_in(tmp_path / "c") == []


def test_cached_loads_make_no_request_even_with_huggingface_hub_telemetry_on(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huggingface_hub 2.x fetches an 'agent harness' list from its endpoint inside hf_hub_download,
    even with local_files_only=True; cache lookups must not go through it."""
    import sys

    import huggingface_hub.constants as hf_constants

    commit = fake_hub.add_file(REPO, FILE, DATA)
    _runtime(fake_hub, tmp_path).fetch(_spec(commit))
    # telemetry back on, and aimed at the fake Hub so that any such request is seen
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", fake_hub.endpoint)
    monkeypatch.setattr(hf_constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agents.json"), raising=False)
    agent = sys.modules.get("huggingface_hub.utils._detect_agent")
    if agent is not None:
        monkeypatch.setattr(agent, "_registry", None, raising=False)
    fake_hub.clear_requests()
    for offline in (True, False):
        runtime = _runtime(fake_hub, tmp_path, offline=offline)
        assert runtime.is_cached(_spec(commit))
        runtime.model(_spec(commit))
    assert fake_hub.requests == []

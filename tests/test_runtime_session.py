"""ModelSpec/resolve_spec, shared ONNX sessions, batching and prefetching."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fakehub import onnx_bytes

from imageprism._runtime import (
    ModelRuntime,
    ModelSpec,
    prefetch,
    progress_bar,
    resolve_spec,
    run_batched,
)
from imageprism.errors import ConfigError, ModelLoadError

COMMIT = "d15189d7028b43f1d3e65039190477f6af591c2a"
DEFAULT = ModelSpec(
    repo="Xenova/clip-vit-base-patch32",
    filename="onnx/vision_model_quantized.onnx",
    revision=COMMIT,
    sha256="583fd1110a514667812fee7d684952aaf82a99b959760c8d7dca7e0ab9839299",
    size=89_117_001,
    license="MIT",
    inputs=("pixel_values",),
    outputs=("image_embeds",),
    io_verified=True,
    dimension="semantic",
)


def _local(tmp_path: Path, name: str = "m.onnx", **kw: object) -> ModelSpec:
    path = tmp_path / name
    path.write_bytes(onnx_bytes(**kw))  # type: ignore[arg-type]
    return resolve_spec(DEFAULT, path=path)


# -- spec and overrides ------------------------------------------------------------------------


def test_no_override_returns_the_default() -> None:
    assert resolve_spec(DEFAULT) is DEFAULT
    assert resolve_spec(DEFAULT, repo=DEFAULT.repo, revision=COMMIT) is DEFAULT
    assert DEFAULT.is_pinned and DEFAULT.location == f"{DEFAULT.repo}@{COMMIT}/{DEFAULT.filename}"


def test_hub_override_keeps_tensor_names_and_drops_what_no_longer_applies() -> None:
    spec = resolve_spec(DEFAULT, repo="me/my-clip", filename="model.onnx", revision="a" * 40)
    assert (spec.repo, spec.filename, spec.revision) == ("me/my-clip", "model.onnx", "a" * 40)
    assert spec.inputs == DEFAULT.inputs and spec.outputs == DEFAULT.outputs
    assert spec.sha256 is None and spec.size is None and not spec.io_verified and spec.dimension == ""
    assert resolve_spec(DEFAULT, repo="me/my-clip").revision is None  # another repo, no pin: main
    assert resolve_spec(DEFAULT, repo="me/my-clip").filename == DEFAULT.filename
    repinned = resolve_spec(DEFAULT, revision="v2.0")
    assert repinned.repo == DEFAULT.repo and repinned.revision == "v2.0" and repinned.sha256 is None
    assert not repinned.is_pinned


def test_local_path_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _local(tmp_path)
    assert spec.is_local and spec.path == tmp_path / "m.onnx" and spec.sha256 is None
    assert spec.identity.startswith(f"file:{tmp_path / 'm.onnx'}:")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_spec(DEFAULT, path="~/m.onnx").path == tmp_path / "m.onnx"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"revision": "bad rev"}, "invalid model revision 'bad rev'"),
        ({"revision": "../../etc"}, "invalid model revision"),
        ({"repo": "no-slash"}, "invalid Hub repository 'no-slash'"),
        ({"repo": "a/b/c"}, "invalid Hub repository"),
        ({"filename": "../x.onnx"}, "invalid model filename"),
        ({"path": "/nonexistent/model.onnx"}, "model path '/nonexistent/model.onnx' does not exist"),
    ],
)
def test_invalid_overrides_are_config_errors(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_spec(DEFAULT, **kwargs)  # type: ignore[arg-type]


def test_path_and_hub_override_together_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        resolve_spec(DEFAULT, path=tmp_path, repo="me/x")
    with pytest.raises(ConfigError, match="is a directory"):
        resolve_spec(DEFAULT, path=tmp_path)


def test_spec_validation() -> None:
    with pytest.raises(ConfigError, match="sha256"):
        ModelSpec(repo="a/b", filename="m.onnx", sha256="ABC")
    with pytest.raises(ConfigError, match="path= or both repo= and filename="):
        ModelSpec(repo="a/b")


def test_identity_changes_with_the_model() -> None:
    ids = {resolve_spec(DEFAULT, **kw).identity for kw in ({}, {"revision": "b" * 40}, {"filename": "x.onnx"})}
    assert len(ids) == 3


# -- runtime construction ----------------------------------------------------------------------


def test_construction_is_cheap_and_imports_no_heavy_module() -> None:
    code = (
        "import sys; from imageprism._runtime import ModelRuntime, ModelSpec;"
        "r = ModelRuntime(); r.hub; r.cache_path;"
        "print(sorted(m for m in ('onnxruntime', 'huggingface_hub', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("kwargs", [{"threads": 0}, {"threads": True}, {"retries": -1}, {"timeout": 0}])
def test_bad_runtime_settings(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        ModelRuntime(**kwargs)  # type: ignore[arg-type]


# -- sessions ----------------------------------------------------------------------------------


def test_local_model_opens_without_network_and_reports_its_interface(tmp_path: Path) -> None:
    model = ModelRuntime(endpoint="http://127.0.0.1:9", offline=False).model(_local(tmp_path))
    assert model.input_names == ("pixel_values",) and model.output_names == ("image_embeds",)
    assert model.input_shapes["pixel_values"] == ("batch", 3, "height", "width")
    assert model.batch_is_dynamic and model.fixed_batch() is None
    assert model.providers == ("CPUExecutionProvider",)
    fixed = ModelRuntime().model(_local(tmp_path, "fixed.onnx", batch=1, size=4))
    assert not fixed.batch_is_dynamic and fixed.fixed_batch() == 1


def test_missing_tensor_names_name_expected_actual_and_fix(tmp_path: Path) -> None:
    spec = dataclasses.replace(_local(tmp_path, output_name="last_hidden_state"))
    with pytest.raises(ModelLoadError) as info:
        ModelRuntime().model(spec)
    message = str(info.value)
    assert "['image_embeds'] missing" in message and "['last_hidden_state']" in message
    assert str(tmp_path / "m.onnx") in message and "tensor names" in message


def test_a_file_that_is_not_onnx_is_a_model_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a protobuf at all" * 10)
    with pytest.raises(ModelLoadError, match=r"bad\.onnx .*could not be opened as an ONNX model"):
        ModelRuntime().model(resolve_spec(DEFAULT, path=bad))


def test_sessions_are_shared_per_file_and_settings(tmp_path: Path) -> None:
    spec = _local(tmp_path)
    a, b = ModelRuntime(), ModelRuntime()
    assert a.model(spec) is b.model(spec)
    assert ModelRuntime(threads=1).model(spec) is not a.model(spec)
    assert ModelRuntime(threads=1).model(spec).session.get_session_options().intra_op_num_threads == 1


def test_unavailable_provider_warns_and_falls_back_to_cpu(tmp_path: Path) -> None:
    with pytest.warns(RuntimeWarning, match="NoSuchExecutionProvider.*not available"):
        model = ModelRuntime(providers=["NoSuchExecutionProvider"]).model(_local(tmp_path))
    assert model.providers == ("CPUExecutionProvider",)
    with pytest.raises(ConfigError, match="providers must be a list"):
        ModelRuntime(providers="CPUExecutionProvider")


def test_onnxruntime_log_noise_is_suppressed(shared_models_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """UltraFace makes onnxruntime print one warning per unused initializer; ours prints nothing."""
    import onnxruntime

    path = shared_models_dir / "version-RFB-320.onnx"
    onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # the default logger
    noisy = capfd.readouterr().err
    assert "initializer" in noisy  # the noise this test is about really exists
    spec = ModelSpec(path=path, inputs=("input",), outputs=("scores", "boxes"))
    ModelRuntime(threads=2).model(spec)  # a fresh session (different settings key)
    assert capfd.readouterr().err == ""


# -- batching ----------------------------------------------------------------------------------


class _CountingModel:
    """Wraps an OnnxModel and records the batch size of every session call."""

    def __init__(self, model: object) -> None:
        self._model = model
        self.calls: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._model, name)

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> list[np.ndarray]:
        self.calls.append(next(iter(feeds.values())).shape[0])
        return self._model.run(feeds, output_names)  # type: ignore[attr-defined, no-any-return]


def _images(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((n, 3, 4, 4), dtype=np.float32)


def test_dynamic_batch_runs_in_batches_with_the_same_results(tmp_path: Path) -> None:
    model = _CountingModel(ModelRuntime().model(_local(tmp_path)))
    data = _images(37)
    (batched,) = run_batched(model, data, output_names=["image_embeds"], batch_size=16)  # type: ignore[arg-type]
    assert model.calls == [16, 16, 5]
    singles = np.concatenate([model.run({"pixel_values": x[None]}, ["image_embeds"])[0] for x in data])
    np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-6)
    (from_list,) = run_batched(model, list(data), output_names=["image_embeds"])  # type: ignore[arg-type]
    np.testing.assert_array_equal(from_list, batched)


def test_fixed_batch_runs_one_at_a_time_and_pads_larger_fixed_batches(tmp_path: Path) -> None:
    dynamic = ModelRuntime().model(_local(tmp_path))
    data = _images(5)
    (expected,) = run_batched(dynamic, data, output_names=["image_embeds"])
    one = _CountingModel(ModelRuntime().model(_local(tmp_path, "b1.onnx", batch=1, size=4)))
    (out,) = run_batched(one, data, output_names=["image_embeds"], batch_size=16)  # type: ignore[arg-type]
    assert one.calls == [1, 1, 1, 1, 1]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    two = _CountingModel(ModelRuntime().model(_local(tmp_path, "b2.onnx", batch=2, size=4)))
    (out2,) = run_batched(two, data, output_names=["image_embeds"])  # type: ignore[arg-type]
    assert two.calls == [2, 2, 2] and out2.shape == (5, 8)
    np.testing.assert_allclose(out2, expected, rtol=1e-5, atol=1e-6)


def test_run_batched_rejects_mixed_shapes_and_bad_batch_size(tmp_path: Path) -> None:
    model = ModelRuntime().model(_local(tmp_path))
    with pytest.raises(ConfigError, match="one shape"):
        run_batched(model, [np.zeros((3, 4, 4), np.float32), np.zeros((3, 5, 5), np.float32)],
                    output_names=["image_embeds"])
    with pytest.raises(ConfigError, match="batch_size"):
        run_batched(model, _images(2), output_names=["image_embeds"], batch_size=0)
    with pytest.raises(ModelLoadError, match="inputs \\['nope'\\] missing"):
        run_batched(model, _images(2), output_names=["image_embeds"], input_name="nope")


def test_progress_bar_for_long_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = ModelRuntime().model(_local(tmp_path))
    run_batched(model, _images(70), output_names=["image_embeds"], progress=True, description="testing")
    assert "testing" in capsys.readouterr().err
    run_batched(model, _images(70), output_names=["image_embeds"], progress=False)
    assert capsys.readouterr().err == ""


# -- prefetch ----------------------------------------------------------------------------------


def test_prefetch_keeps_order_and_overlaps_production_with_consumption() -> None:
    produced_while_consuming = threading.Event()
    consuming = threading.Event()

    def produce():  # type: ignore[no-untyped-def]
        for i in range(4):
            if i == 1 and consuming.wait(timeout=5):
                produced_while_consuming.set()  # item 1 is being made while item 0 is in use
            yield i

    seen = []
    for item in prefetch(produce()):
        if item == 0:
            consuming.set()
            assert produced_while_consuming.wait(timeout=5)
        seen.append(item)
    assert seen == [0, 1, 2, 3]


def test_prefetch_reraises_producer_errors_and_stops_on_break() -> None:
    def failing():  # type: ignore[no-untyped-def]
        yield 1
        raise KeyError("boom")

    got = []
    with pytest.raises(KeyError, match="boom"):
        for item in prefetch(failing()):
            got.append(item)
    assert got == [1]

    made: list[int] = []

    def endless():  # type: ignore[no-untyped-def]
        i = 0
        while True:
            made.append(i)
            yield i
            i += 1

    start = time.monotonic()
    for item in prefetch(endless(), depth=2):
        if item == 3:
            break
    assert time.monotonic() - start < 5
    assert len(made) <= 3 + 2 + 2  # at most `depth` (+ the one in flight) beyond what was consumed


def test_progress_bar_helper_modes(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(500, progress=True, description="many") as bar:
        bar.update(500)
    err = capsys.readouterr().err
    assert "many" in err and "500/500" in err
    with progress_bar(10, progress=None) as bar:  # short run: no bar
        bar.update(10)
    with progress_bar(500, progress=None) as bar:  # long run, but stderr is not a terminal here
        bar.update(500)
    assert capsys.readouterr().err == ""

"""A loopback fake of the Hugging Face Hub's file-download protocol, for tests.

It speaks what ``huggingface_hub.hf_hub_download`` needs (see
``../shared/notes/models.md`` section 6b) and nothing else:

- ``HEAD``/``GET /{org}/{name}/resolve/{revision}/{path}``:

  * LFS-style files (the default, like ``.onnx`` files on the real Hub): ``302``
    with ``Location`` on another host name (``localhost`` instead of
    ``127.0.0.1``, like the Hub's CDN), ``X-Linked-Etag`` (the sha256),
    ``X-Linked-Size`` and ``X-Repo-Commit``; the client then ``GET`` s the blob.
  * plain files (``lfs=False``): ``200`` with ``ETag``, ``Content-Length`` and
    ``X-Repo-Commit``; the body on ``GET``.
  * ``404`` with ``X-Error-Code: RepoNotFound`` / ``RevisionNotFound`` /
    ``EntryNotFound`` (the latter with ``X-Repo-Commit``).

- Anything else (e.g. ``/api/agent-harnesses``): ``404``.

Every response carries ``Connection: close`` so that :meth:`FakeHub.down`
really makes the server unreachable. Every request is recorded.

Typical use, through the ``fake_hub`` fixture (defined below, made available to
every test module by ``tests/conftest.py``), which
also points ``HF_HOME`` at a temporary directory, clears proxies for loopback
and turns off huggingface_hub telemetry (which would otherwise contact the real
Hub)::

    def test_download(fake_hub, tmp_path):
        commit = fake_hub.add_file("org/model", "onnx/model.onnx", onnx_bytes())
        runtime = ModelRuntime(endpoint=fake_hub.endpoint, cache_dir=tmp_path, retries=0)
        spec = ModelSpec(repo="org/model", filename="onnx/model.onnx", revision=commit)
        runtime.fetch(spec)
        assert fake_hub.count("GET") == 1
        with fake_hub.down():
            ...                                  # connection refused
        fake_hub.fail(500)                       # every /resolve/ answer is a 500
        fake_hub.fail(500, method="GET")         # metadata fine, body download fails
        fake_hub.fail(None)                      # back to normal

Build small ONNX files with :func:`onnx_bytes`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["FakeHub", "Request", "fake_hub", "onnx_bytes"]


@dataclasses.dataclass(frozen=True)
class Request:
    """One request the fake Hub received."""

    method: str
    path: str
    headers: dict[str, str]


@dataclasses.dataclass
class _Repo:
    commits: dict[str, dict[str, tuple[bytes, bool]]] = dataclasses.field(default_factory=dict)
    branches: dict[str, str] = dataclasses.field(default_factory=dict)


class FakeHub:
    """A Hub ``/resolve/`` server on ``127.0.0.1`` (random free port), in a background thread.

    Use as a context manager (or call :meth:`start`/:meth:`stop`).

    - :meth:`add_file` registers a file and returns the commit it lives in.
    - :attr:`endpoint` is the base URL to give ``ModelRuntime(endpoint=...)`` or
      ``HF_ENDPOINT``.
    - :attr:`requests` lists every request; :meth:`count` filters them;
      :meth:`clear_requests` forgets them.
    - :meth:`fail` makes every ``/resolve/`` and blob request answer with an
      HTTP status (e.g. 500) until ``fail(None)``.
    - :meth:`down` is a context manager during which the port refuses
      connections (the server is stopped and restarted on the same port).
    """

    def __init__(self) -> None:
        self._repos: dict[str, _Repo] = {}
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._fail_status: int | None = None
        self._fail_method: str | None = None
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int = 0
        self.requests: list[Request] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeHub:
        """Start serving (on the previous port when restarting)."""
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakehub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (connections are then refused)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Within the block the server is unreachable (connection refused); then it is back."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    @property
    def endpoint(self) -> str:
        """Base URL of the fake Hub, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    # -- content -----------------------------------------------------------------------------

    def add_file(
        self,
        repo: str,
        filename: str,
        content: bytes,
        *,
        revision: str | None = None,
        branch: str | None = "main",
        lfs: bool = True,
    ) -> str:
        """Serve ``content`` as ``repo``/``filename`` and return the 40-hex commit holding it.

        ``revision``: the commit to add it to (default: a new commit derived from
        the branch head plus this file, so each call makes a new commit holding all
        earlier files of the branch). ``branch``: the branch that then points at the
        commit (``None``: leave branches alone). ``lfs``: serve it LFS-style (302 to
        a blob on another host name) rather than as a plain file.
        """
        with self._lock:
            entry = self._repos.setdefault(repo, _Repo())
            if revision is None:
                parent = entry.branches.get(branch or "", "")
                files = dict(entry.commits.get(parent, {}))
                seed = f"{repo}\0{parent}\0{filename}\0{hashlib.sha256(content).hexdigest()}"
                revision = hashlib.sha1(seed.encode()).hexdigest()
            else:
                files = entry.commits.get(revision, {})
            files[filename] = (content, lfs)
            entry.commits[revision] = files
            if branch is not None:
                entry.branches[branch] = revision
            self._blobs[hashlib.sha256(content).hexdigest()] = content
        return revision

    def fail(self, status: int | None, *, method: str | None = None) -> None:
        """Answer every file request with ``status`` (``None``: serve normally again).

        ``method`` limits the failure to ``"HEAD"`` or ``"GET"`` requests (e.g. metadata
        fine, body download broken).
        """
        self._fail_status = status
        self._fail_method = method

    # -- request log -------------------------------------------------------------------------

    def count(self, method: str | None = None, *, contains: str = "") -> int:
        """How many requests matched ``method`` (any if ``None``) with ``contains`` in the path."""
        with self._lock:
            return sum(
                1 for r in self.requests if (method is None or r.method == method) and contains in r.path
            )

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.requests.clear()

    # -- protocol ----------------------------------------------------------------------------

    def _record(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(Request(method, path, headers))

    def _answer(self, method: str, raw_path: str) -> tuple[int, dict[str, str], bytes]:
        path = urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path)
        failing = self._fail_status is not None and self._fail_method in (None, method)
        if failing and ("/resolve/" in path or path.startswith("/_blobs/")):
            return self._fail_status or 500, {}, b"injected failure"
        if path.startswith("/_blobs/"):
            blob = self._blobs.get(path.removeprefix("/_blobs/"))
            if blob is None:
                return 404, {}, b"no such blob"
            return 200, {"ETag": f'"{hashlib.sha256(blob).hexdigest()}"'}, blob
        parts = path.lstrip("/").split("/", 4)
        if len(parts) < 5 or parts[2] != "resolve":
            return 404, {}, b"not found"
        repo_id, revision, filename = f"{parts[0]}/{parts[1]}", parts[3], parts[4]
        with self._lock:
            entry = self._repos.get(repo_id)
            if entry is None:
                return 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b""
            commit = entry.branches.get(revision, revision)
            files = entry.commits.get(commit)
            if files is None:
                return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b""
            found = files.get(filename)
        if found is None:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                         "X-Repo-Commit": commit}, b""
        content, lfs = found
        if lfs:
            sha = hashlib.sha256(content).hexdigest()
            headers = {
                "Location": f"http://localhost:{self.port}/_blobs/{sha}",
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(content)),
                "X-Repo-Commit": commit,
                "ETag": '"lfs-pointer-etag"',
            }
            return 302, headers, b""
        git_sha1 = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
        return 200, {"ETag": f'"{git_sha1}"', "X-Repo-Commit": commit}, content


class _Handler(http.server.BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def _serve(self, with_body: bool, keep: int | None = None) -> None:
        """Answer one request; ``keep`` sends only that many body bytes under the full Content-Length."""
        self.hub._record(self.command, self.path, dict(self.headers.items()))
        status, headers, body = self.hub._answer(self.command, self.path)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if with_body:
            self.wfile.write(body if keep is None else body[:keep])
            self.wfile.flush()
        self.close_connection = True

    def do_HEAD(self) -> None:
        self._serve(with_body=False)

    def do_GET(self) -> None:
        self._serve(with_body=True)

    def log_message(self, format: str, *args: object) -> None:
        pass


def onnx_bytes(
    *,
    input_name: str = "pixel_values",
    output_name: str = "image_embeds",
    channels: int = 3,
    dim: int = 8,
    batch: int | None = None,
    size: int | None = None,
) -> bytes:
    """A tiny float32 ONNX model: ``input [N, C, H, W] -> output [N, dim]``.

    The output is the per-channel mean of the input times a fixed ``C x dim``
    matrix, so different images give different embeddings. ``batch=None`` makes
    the batch axis dynamic, an int fixes it. ``size=None`` leaves H and W
    dynamic. Needs the ``onnx`` package (test extra).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n: int | str = "batch" if batch is None else batch
    hw: int | str = "height" if size is None else size
    ww: int | str = "width" if size is None else size
    weights = np.arange(1, channels * dim + 1, dtype=np.float32).reshape(channels, dim)
    weights = np.cos(weights)  # fixed, varied, signed
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", [input_name], ["pooled"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["pooled", "W"], [output_name]),
        ],
        "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [n, channels, hw, ww])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [n, dim])],
        initializer=[numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture
def fake_hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running :class:`FakeHub`, with huggingface_hub isolated from the real Hub.

    Sets ``HF_HOME`` to a temporary directory, ``NO_PROXY`` for loopback, removes
    ``HF_HUB_OFFLINE``/``HF_ENDPOINT``/``IMAGEPRISM_CACHE_DIR`` from the environment
    and turns huggingface_hub's telemetry and offline constants off for the test
    (its user-agent code otherwise fetches ``https://huggingface.co/api/agent-harnesses``).
    """
    import huggingface_hub.constants as hf_constants

    home: Path = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    for var in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "IMAGEPRISM_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        yield hub

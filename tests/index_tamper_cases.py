"""Tampered index directories, and a runner measuring what loading one does (outcome, time, peak memory).

Used by tests/test_index_tamper.py and benchmarks/index_faults.py (the before/after
table). Each case edits a saved index (a copy) the way an attacker or a damaged
disk could; :func:`run_case` loads and searches it in a forked process with a time
and address-space limit, so a hang or a memory blow-up is measured, not suffered.
Works on both manifest versions (1: one file per array named in ``dimensions``;
2: segments).
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from imageprism import ImageIndex, ImagePrism
from imageprism.errors import ImagePrismError

MANIFEST = "manifest.json"
#: a 400-byte YAML profile whose weight is a list of 9**9 strings (aliases nested 9 deep)
_LOL = '["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'
BILLION_LAUGHS = "weights: {hash: [&a " + _LOL + "".join(
    f", &{n} [{','.join(['*' + p] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi")
) + "]}\n"


def _items(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    shape = ImagePrism().embed(np.zeros((32, 32), np.uint8))["hash"].shape  # the default hash's codes
    out = []
    for _ in range(n):
        v = rng.standard_normal(16).astype(np.float32)
        out.append({"hash": rng.integers(0, 256, shape, dtype=np.uint8), "semantic": v / np.linalg.norm(v)})
    return out


def make_index(folder: Path, n: int = 20) -> None:
    """A hash + semantic index of ``n`` random items saved in ``folder``."""
    index = ImageIndex(ImagePrism(weights={"hash": 0.5, "semantic": 0.5}))
    index.add_embeddings(_items(n, seed=0), ids=[f"item{i}" for i in range(n)])
    index.save(folder)


def query() -> dict[str, np.ndarray]:
    return _items(1, seed=1)[0]


# -- editing a saved index ---------------------------------------------------------------


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def _write(folder: Path, manifest: object) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest))


def _files(manifest: dict, dimension: str = "hash") -> dict:
    """The {key: file name} of a dimension's (first) arrays, in either format version."""
    if "segments" in manifest:
        return manifest["segments"][0]["files"][dimension]
    return manifest["dimensions"][dimension]["files"]


def _point(folder: Path, name: str, dimension: str = "hash") -> None:
    manifest = _manifest(folder)
    files = _files(manifest, dimension)
    files[next(iter(files))] = name
    _write(folder, manifest)


def _replace_array(folder: Path, array: np.ndarray | bytes, dimension: str = "hash") -> None:
    files = _files(_manifest(folder), dimension)
    target = folder / files[next(iter(files))]
    if isinstance(array, bytes):
        target.write_bytes(array)
    else:
        np.save(target, array, allow_pickle=True)


def _outside(folder: Path) -> Path:
    """A valid array file outside the index (what a traversal would read)."""
    outside = folder.parent / "outside.npy"
    files = _files(_manifest(folder))
    outside.write_bytes((folder / files[next(iter(files))]).read_bytes())
    return outside


def _edit(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def run(folder: Path) -> None:
        manifest = _manifest(folder)
        _write(folder, change(manifest) or manifest)

    return run


def _profile(folder: Path, text: str | None) -> None:
    path = folder.parent / "evil.yaml"
    if text is None:
        os.mkfifo(path)
    else:
        path.write_text(text)
    manifest = _manifest(folder)
    manifest["profile"] = str(path)
    _write(folder, manifest)


def _fifo(folder: Path) -> None:
    os.mkfifo(folder / "fifo.npy")
    _point(folder, "fifo.npy")


def _symlink(folder: Path) -> None:
    (folder / "link.npy").symlink_to(_outside(folder))
    _point(folder, "link.npy")


def _huge_shape(folder: Path) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": (10**9, 3, 8)})
    _replace_array(folder, buf.getvalue() + b"\0" * 64)


def _deep(folder: Path) -> None:
    (folder / MANIFEST).write_text('{"format": "imageprism-index", "format_version": 2, "dimensions": ' + "[" * 100_000 + "]" * 100_000 + "}")


def _dims_list(m: dict) -> None:
    m["dimensions"]["hash"] = ["bits"]


def _drop_key(m: dict) -> None:
    files = _files(m)
    files["other"] = files.pop(next(iter(files)))


def _ids_not_strings(folder: Path) -> None:
    manifest = _manifest(folder)
    if "segments" in manifest:
        (folder / manifest["segments"][0]["ids"]).write_text(json.dumps(list(range(manifest["count"]))))
    else:
        manifest["ids"] = list(range(manifest["count"]))
        _write(folder, manifest)


def _nan_vectors(folder: Path) -> None:
    files = _files(_manifest(folder), "semantic")
    path = folder / files[next(iter(files))]
    array = np.load(path)
    array[0] = np.nan
    np.save(path, array)


#: case name -> edit of a saved index directory
CASES: dict[str, Callable[[Path], None]] = {
    "manifest cut in half": lambda f: (f / MANIFEST).write_bytes((f / MANIFEST).read_bytes()[:200]),
    "manifest nested 100k deep (RecursionError)": _deep,
    "dimension entry a list (AttributeError)": _edit(_dims_list),
    "array key renamed (KeyError)": _edit(_drop_key),
    "array file empty (EOFError)": lambda f: _replace_array(f, b""),
    "array of pickled objects": lambda f: _replace_array(f, np.array([{"a": 1}], dtype=object)),
    "array header says 10^9 rows": _huge_shape,
    "vectors hold NaN": _nan_vectors,
    "count a string": _edit(lambda m: {**m, "count": "20"}),
    "count 10^15": _edit(lambda m: {**m, "count": 10**15}),
    "weights strings": _edit(lambda m: {**m, "weights": {"hash": "x", "semantic": 0.5}}),
    "ids not strings": _ids_not_strings,
    "file ../outside.npy": lambda f: (_outside(f), _point(f, "../outside.npy")) and None,
    "file absolute path": lambda f: _point(f, str(_outside(f))),
    "file a symlink out": _symlink,
    "file a FIFO": _fifo,
    "manifest a FIFO": lambda f: ((f / MANIFEST).unlink(), os.mkfifo(f / MANIFEST)) and None,
    "profile path: billion laughs YAML": lambda f: _profile(f, BILLION_LAUGHS),
    "profile path: a FIFO": lambda f: _profile(f, None),
    "search state of an unknown dimension": _edit(lambda m: {**m, "ann": {"face": {"centroids": "x.npy"}}}),
    "search state file ../outside.npy": lambda f: (
        _outside(f), _edit(lambda m: {**m, "ann": {"semantic": {"centroids": "../outside.npy"}}})(f)
    ) and None,
}
#: cases where loading successfully means reading a file the index did not write
MUST_FAIL = {
    "file ../outside.npy", "file absolute path", "file a symlink out", "vectors hold NaN",
    "search state of an unknown dimension", "search state file ../outside.npy",
}


# -- running one case ------------------------------------------------------------------------


def run_case(folder: Path, *, timeout: float = 10.0, memory: int = 2 << 30) -> tuple[str, float, float]:
    """Load and search ``folder`` in a forked process: (outcome, seconds, peak MB above the parent's).

    Outcomes: ``loaded``, ``error <Class>: message`` (an ImagePrismError),
    ``traceback <Class>: message`` (anything else), ``hang`` (killed at ``timeout``).
    """
    read, write = os.pipe()
    with open("/proc/self/statm") as f:  # the resident size now: the child starts with it
        base_rss = int(f.read().split()[1]) * resource.getpagesize() // 1024
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + memory, hard))
        try:
            index = ImageIndex.load(folder)
            index.search_embedding(query(), k=3)
            message = "loaded"
        except ImagePrismError as exc:
            message = f"error {type(exc).__name__}: {exc}"
        except BaseException as exc:  # noqa: BLE001 - the outcome reported
            message = f"traceback {type(exc).__name__}: {str(exc)[:300]}"
        os.write(write, message.encode()[:4000])
        os._exit(0)
    os.close(write)
    deadline = start + timeout
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.perf_counter() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    with os.fdopen(read, "rb") as f:
        message = f.read().decode(errors="replace")
    if not message:
        message = "hang" if elapsed > timeout else f"died (status {status})"
    peak = max(0.0, (usage.ru_maxrss - base_rss) / 1024)  # ru_maxrss: KiB
    return message, elapsed, peak


def write_version_1(folder: Path) -> None:
    """An index of items ``a``, ``b``, ``c`` as imageprism wrote it before format version 2."""
    prism = ImagePrism()
    codes = np.stack([e["hash"] for e in _items(3, seed=2)])
    np.save(folder / "hash.codes.npy", codes)
    manifest = {
        "format": "imageprism-index", "format_version": 1, "imageprism_version": "0.1.0", "count": 3,
        "dimensions": {"hash": {"kind": prism.plugins["hash"].layout.kind, "cache_token": prism.plugins["hash"].cache_token,
                                "files": {"codes": "hash.codes.npy"}}},
        "weights": {"hash": 1.0}, "missing": "zero", "profile": None, "ids": ["a", "b", "c"],
    }
    _write(folder, manifest)

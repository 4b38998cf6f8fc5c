"""A real ``imageprism serve`` process on a free loopback port, for the service tests and the
load benchmark: started with the command line a user types, stopped gently or killed."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

__all__ = ["ServeProcess", "distinct_png"]


def distinct_png(seed: int, size: int = 64) -> bytes:
    """A small PNG of blocky noise: its hash differs from every other seed's."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(np.kron(blocks, np.ones((size // 8, size // 8, 1), np.uint8))).save(out, "PNG")
    return out.getvalue()


class ServeProcess:
    """``python -m imageprism serve INDEX_DIR --port 0 ARGS...``, its URL read from its stderr.

    Use as a context manager; :meth:`stop` (SIGTERM, a clean shutdown) and :meth:`kill`
    (SIGKILL) end it, :meth:`start` starts it again on the same folder.
    """

    def __init__(self, index_dir: Path, args: Sequence[str] = (), *, env: Mapping[str, str] | None = None,
                 log: Path | None = None) -> None:
        self.index_dir = Path(index_dir)
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), self.env.get("PYTHONPATH")]))
        self.log = log or self.index_dir.with_name(self.index_dir.name + ".log")
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 120.0) -> ServeProcess:
        """Start the server; returns once it has printed the address it listens on."""
        self.log.write_text("")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "imageprism", "serve", str(self.index_dir), "--port", "0", *self.args],
                stdout=subprocess.DEVNULL, stderr=log, env=self.env, cwd=REPO,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"listening on (http://\S+)", self.log.read_text())
            if found:
                self.url = found.group(1)
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"imageprism serve exited with {self.process.returncode}:\n{self.log.read_text()}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"imageprism serve did not start within {timeout} s:\n{self.log.read_text()}")

    def client(self, token: str | None = None, timeout: float = 60.0) -> httpx.Client:
        """An HTTP client for this server (with the bearer token, if given)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (uvicorn shuts down cleanly); returns the exit code."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> int:
        """SIGKILL: no shutdown code runs."""
        return self._end(signal.SIGKILL, 30.0)

    def _end(self, sig: int, timeout: float) -> int:
        process, self.process = self.process, None
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def __enter__(self) -> ServeProcess:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Run a command in a fresh process and measure it: exit status, output, wall time, peak memory.

The peak resident memory is the command's own: a small wrapper process starts it and reads its
``os.wait4`` usage. (Linux carries a process's peak over ``fork`` and ``exec``, so a command
started straight from a large test process would report at least that process's size.)
A command that outlives ``timeout`` is killed with its wrapper and reported as a hang.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

__all__ = ["Outcome", "python_code", "run_bounded"]

_WRAPPER = """
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as report:
    json.dump([os.waitstatus_to_exitcode(status), usage.ru_maxrss], report)
"""


@dataclasses.dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_mib: float
    timed_out: bool

    def assert_clean(self) -> None:
        """No hang and no traceback (an ``ImagePrismError`` reported as one line is clean)."""
        assert not self.timed_out, f"hung (killed after {self.seconds:.1f} s)\n{self.stderr[-2000:]}"
        assert "Traceback" not in self.stderr, self.stderr[-3000:]


def python_code(code: str) -> list[str]:
    """The argv that runs ``code`` with this interpreter and the worktree on ``sys.path``."""
    return [sys.executable, "-c", f"import sys; sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'tests')!r}]\n{code}"]


def run_bounded(
    argv: Sequence[str],
    *,
    timeout: float = 120.0,
    cwd: Path = REPO,
    preexec_fn: Callable[[], None] | None = None,
) -> Outcome:
    """Run ``argv``; wait at most ``timeout`` seconds; return what happened and what it cost."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "usage.json"
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, str(report), *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                preexec_fn=preexec_fn, start_new_session=True)  # noqa: PLW1509 (a setrlimit only)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            stdout, stderr = proc.communicate()
        finally:
            timer.cancel()
        seconds = time.monotonic() - start
        returncode, peak_kib = json.loads(report.read_text()) if report.exists() else (proc.returncode, 0)
    return Outcome(returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"),
                   seconds, peak_kib / 1024, timed_out.is_set())

"""Run a command in a fresh process and measure it: exit status, output, wall time, peak memory.

The peak resident memory is the child's own (``os.wait4``), so earlier children of the
test process do not count. A child that outlives ``timeout`` is killed and reported as a hang.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

__all__ = ["Outcome", "python_code", "run_bounded"]


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
    start = time.monotonic()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            cwd=cwd, env=env, preexec_fn=preexec_fn)
    captured: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda name=name, pipe=pipe: captured.__setitem__(name, pipe.read()))
        for name, pipe in (("out", proc.stdout), ("err", proc.stderr))
    ]
    for reader in readers:
        reader.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        os.kill(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - start
    for reader in readers:
        reader.join()
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    return Outcome(proc.returncode, captured["out"].decode(errors="replace"), captured["err"].decode(errors="replace"),
                   seconds, usage.ru_maxrss / 1024, timed_out.is_set())

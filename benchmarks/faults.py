"""Hostile inputs of issue 14, before and after: outcome, wall time and peak memory of each case.

    git archive <old commit> | tar -x -C /tmp/before      # the code to compare against
    python benchmarks/faults.py --before /tmp/before [--folder /tmp/faults] [CASE-SUBSTRING...]

Each case runs in a fresh process started by a small wrapper (so the peak resident memory is the
case's own, from ``os.wait4``), once with the old tree and once with this one, and prints one JSON
line: case, tree, outcome (``[call N s]`` is the time of the call itself), wall seconds including
interpreter start-up, peak MiB. A case still running after its timeout is killed ("HANG").
The files (a FIFO, a 2 GiB sparse file, a 2,000-scan JPEG, a 10000x10000 H.264 video, YAML
bombs) are built by the test helpers in ``tests/``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
FOLDER = "/tmp/faults"
WRAP = """
import json, os, subprocess, sys, resource
lim = int(sys.argv[2])
def pre():
    if lim: resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
child = subprocess.Popen(sys.argv[4:], preexec_fn=pre)
import threading, signal
t = threading.Timer(float(sys.argv[3]), lambda: os.kill(child.pid, signal.SIGKILL)); t.start()
_, status, usage = os.wait4(child.pid, 0); t.cancel()
open(sys.argv[1], "w").write(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss]))
"""


def build(folder: Path) -> None:
    """The hostile files (skipped when already there)."""
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    from test_input_limits import many_scans_jpeg
    from test_profile_bombs import bombs
    from test_video_limits import write_video

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "fifo.jpg").exists():
        os.mkfifo(folder / "fifo.jpg")
    with open(folder / "sparse.jpg", "wb") as sparse:
        sparse.write(b"\xff\xd8\xff\xe0")
        sparse.truncate(2 * 2**30)
    (folder / "scans.jpg").write_bytes(many_scans_jpeg(2000))
    if not (folder / "huge.mp4").exists():
        write_video(folder / "huge.mp4", 10_000, 1)
    if not (folder / "long.mp4").exists():
        write_video(folder / "long.mp4", 2000, 64)
    bombs(folder)
    (folder / "deep_pure.yaml").write_text("weights: {hash: 1}\nsettings: " + "[" * 5000 + "]" * 5000 + "\n")


def run(root: str, code: str, timeout: float = 60, as_limit: int = 0) -> tuple[str, float, float]:
    """Run ``code`` with ``root`` on the path: (outcome, wall seconds, peak MiB)."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "usage.json"
        env = dict(os.environ, PYTHONPATH=root)
        start = time.monotonic()
        argv = [PY, "-c", WRAP, str(report), str(as_limit), str(timeout), PY, "-c", textwrap.dedent(code)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
                                cwd=FOLDER)
        try:
            out, err = proc.communicate(timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        seconds = time.monotonic() - start
        status, peak_kib = json.loads(report.read_text()) if report.exists() else (-9, 0)
    text = err.decode(errors="replace").strip()
    if status == -9:
        outcome = f"HANG (killed at {timeout}s)"
    elif "Traceback" in text:
        outcome = "traceback: " + text.splitlines()[-1][:110]
    else:
        outcome = (out.decode().strip().splitlines() or [""])[-1][:150]
    return outcome, seconds, peak_kib / 1024


IMG = '''
import time
from imageprism import ImagePrism
p = ImagePrism()
t = time.perf_counter()
try:
    p.embed({path!r}); r = "accepted"
except Exception as e: r = type(e).__name__ + ": " + str(e)[:90]
print(f"[call {{time.perf_counter() - t:.3f}} s] " + r)
'''
VID = '''
import time
from imageprism import ImagePrism
from imageprism._video import embed_inputs
t = time.perf_counter()
try:
    out = embed_inputs(ImagePrism(), [{path!r}], [{path!r}], fps={fps})
    r = f"accepted {{len(out.labels)}} frames"
except Exception as e: r = type(e).__name__ + ": " + str(e)[:90]
print(f"[call {{time.perf_counter() - t:.3f}} s] " + r)
'''
YML = '''
import time
from imageprism import ImagePrism
t = time.perf_counter()
try:
    ImagePrism(profile={path!r}); r = "accepted"
except Exception as e: r = type(e).__name__ + ": " + str(e)[:90]
print(f"[call {{time.perf_counter() - t:.3f}} s] " + r)
'''
CACHE_PRE = '''
import os, sqlite3, tempfile, numpy as np
from imageprism import ImagePrism
from imageprism._cache import PersistentCache
d = tempfile.mkdtemp(); path = d + "/c.sqlite3"
rng = np.random.default_rng(0); imgs = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
'''
CACHE = {
 "cache: 4 processes x 15 opens of a new file": '''
import subprocess, sys
code = """
import sys, numpy as np
from imageprism._cache import PersistentCache
for r in range(15):
    c = PersistentCache(f"{d}/n{r}.sqlite3"); c.put((f"p{sys.argv[1]}", "t"), np.ones(2)); c.close()
""".replace("{d}", d)
procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], stderr=subprocess.PIPE, text=True) for i in range(4)]
errs = [p.communicate()[1] for p in procs]
print(f"{sum(p.returncode != 0 for p in procs)} of 4 processes failed", (errs[0] or errs[1] or errs[2] or errs[3]).strip().splitlines()[-1:] )
''',
 "cache: another app's SQLite file (table embeddings, user_version 7)": '''
c = sqlite3.connect(path); c.execute("CREATE TABLE embeddings (id INTEGER, body TEXT)"); c.execute("INSERT INTO embeddings VALUES (1, 'precious')")
c.execute("PRAGMA user_version = 7"); c.commit(); c.close()
before = open(path, "rb").read()
try:
    PersistentCache(path).close(); res = "opened"
except Exception as e: res = type(e).__name__
c = sqlite3.connect(path)
rows = c.execute("SELECT count(*) FROM embeddings WHERE body = 'precious'").fetchone()[0] if c.execute("SELECT count(*) FROM pragma_table_info('embeddings') WHERE name='body'").fetchone()[0] else 0
print(res, "| precious row kept:", bool(rows), "| user_version", c.execute("PRAGMA user_version").fetchone()[0], "| journal", c.execute("PRAGMA journal_mode").fetchone()[0], "| bytes unchanged:", open(path, "rb").read() == before)
''',
 "cache: row with NULL dtype, compare(x, x)": '''
with PersistentCache(path) as c: ImagePrism(cache=c).embed(imgs[0])
s = sqlite3.connect(path); s.execute("UPDATE embeddings SET dtype = NULL"); s.commit(); s.close()
with PersistentCache(path) as c:
    try: print("score", ImagePrism(cache=c).compare(imgs[0], imgs[0]).weighted_score)
    except Exception as e: print(type(e).__name__, str(e)[:80])
''',
 "cache: one byte of a stored vector changed": '''
with PersistentCache(path) as c: good = ImagePrism(cache=c).embed(imgs[0])["hash"]
s = sqlite3.connect(path); b = bytearray(s.execute("SELECT data FROM embeddings").fetchone()[0]); b[3] ^= 0x5a
s.execute("UPDATE embeddings SET data = ?", (bytes(b),)); s.commit(); s.close()
with PersistentCache(path) as c:
    try: print("embedding", "correct" if np.array_equal(ImagePrism(cache=c).embed(imgs[0])["hash"], good) else "WRONG (silently)")
    except Exception as e: print(type(e).__name__, str(e)[:80])
''',
 "cache: full disk (RLIMIT_FSIZE) during embed_batch of 300": '''
import resource, signal, warnings
with PersistentCache(path) as c: old = ImagePrism(cache=c).embed(imgs[0])["hash"]
s = sqlite3.connect(path); s.execute("PRAGMA wal_checkpoint(TRUNCATE)"); s.close()
lim = os.path.getsize(path) + 2048
signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, (lim, resource.RLIM_INFINITY))
many = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(300)]
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    try:
        with PersistentCache(path) as c: ImagePrism(cache=c).embed_batch(many); res = "completed"
    except Exception as e: res = type(e).__name__ + " " + str(e)[:60]
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
with PersistentCache(path) as c: ok = np.array_equal(ImagePrism(cache=c).embed(imgs[0])["hash"], old) and c.stats.disk_hits == 1
print(res, f"| {len(w)} warning(s) | old row intact: {ok}")
''',
 "cache: file refuses writes (query_only)": '''
c = PersistentCache(path); c._connect().execute("PRAGMA query_only = ON")
import warnings
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    try: ImagePrism(cache=c).embed_batch(imgs); print(f"completed, {len(w)} warning(s)")
    except Exception as e: print(type(e).__name__, str(e)[:80])
''',
}


def cases() -> list[tuple[str, str, int, int]]:
    """(name, code, timeout in seconds, address-space limit or 0), built for the current FOLDER."""
    return [
     ("image: FIFO as input", IMG.format(path=FOLDER + "/fifo.jpg"), 15, 0),
     ("image: 2 GiB sparse .jpg", IMG.format(path=FOLDER + "/sparse.jpg"), 120, 0),
     ("image: 57 KB JPEG with 2,000 scans", IMG.format(path=FOLDER + "/scans.jpg"), 120, 0),
     ("video: 295 KB, one 10000x10000 frame", VID.format(path=FOLDER + "/huge.mp4", fps=1), 120, 0),
     ("video: 64 frames of 2000x2000, all sampled", VID.format(path=FOLDER + "/long.mp4", fps=25), 180, 0),
     ("yaml: billion laughs (377 B)", YML.format(path=FOLDER + "/billion_laughs.yaml"), 30, 3 * 2**30),
     ("yaml: 5,000-deep flow nesting", YML.format(path=FOLDER + "/deep_pure.yaml"), 30, 0),
     ("yaml: 40 MB scalar", YML.format(path=FOLDER + "/huge_scalar.yaml"), 30, 0),
    ] + [(name, CACHE_PRE + code, 120, 0) for name, code in CACHE.items()]


def main() -> None:
    global FOLDER
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="a checkout of the code to compare against")
    parser.add_argument("--folder", default=FOLDER, help="where the hostile files are built")
    parser.add_argument("only", nargs="*", help="run only the cases whose name contains one of these")
    args = parser.parse_args()
    FOLDER = args.folder
    build(Path(FOLDER))
    print(json.dumps(["loadavg", os.getloadavg()]), flush=True)
    for name, code, timeout, as_limit in cases():
        if args.only and not any(w in name for w in args.only):
            continue
        for label, root in (("before", args.before), ("after", str(REPO))):
            outcome, secs, peak = run(root, code, timeout, as_limit)
            print(json.dumps([name, label, outcome, round(secs, 2), round(peak)]), flush=True)


if __name__ == "__main__":
    main()

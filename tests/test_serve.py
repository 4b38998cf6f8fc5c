"""``imageprism serve`` as a user runs it: a real uvicorn process on a loopback port, over HTTP."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from serve_process import REPO, ServeProcess
from serve_process import distinct_png as png

from imageprism import ImageIndex, ImagePrism

IMAGES = REPO / "examples" / "images"
CHELSEA, BRIGHT, COFFEE, ROCKET = (IMAGES / n for n in ("chelsea.jpg", "chelsea_small_bright.jpg", "coffee.jpg", "rocket.jpg"))
TOKEN = "s3cret-token"


def files(*paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["error"], body["message"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One server (hash only) over a new index, shared by the tests that do not restart it."""
    with ServeProcess(tmp_path_factory.mktemp("serve") / "index") as process:
        yield process


@pytest.fixture()
def client(server: ServeProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


# -- endpoints ---------------------------------------------------------------------------


def test_health_page_and_docs(server: ServeProcess, client: httpx.Client) -> None:
    assert server.url.startswith("http://127.0.0.1:")  # loopback unless --host says otherwise
    assert client.get("/health").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'type="file"' in page.text and "/search" in page.text
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/images", "/search", "/compare", "/images/{item_id}", "/health", "/stats"} <= set(paths)


def test_add_reports_ids_and_near_duplicates_already_indexed(client: httpx.Client) -> None:
    first = client.post("/images", files=files(CHELSEA), data={"id": "cat"})
    assert first.status_code == 201
    assert first.json() == {"added": [{"id": "cat", "duplicates": []}]}
    second = client.post("/images", files=files(BRIGHT))  # no id: the server makes one
    assert second.status_code == 201
    (added,) = second.json()["added"]
    assert added["id"] and added["id"] != "cat"
    expected = ImagePrism().compare(CHELSEA, BRIGHT).scores["hash"]
    assert [d["id"] for d in added["duplicates"]] == ["cat"]
    assert added["duplicates"][0]["scores"] == {"hash": pytest.approx(expected)}
    assert expected >= 0.9  # the default threshold for hash alone
    # an unrelated image has no near-duplicate
    coffee = client.post("/images", files=files(COFFEE), data={"id": "coffee"}).json()
    assert coffee["added"][0]["duplicates"] == []


def test_add_several_files_in_one_request_with_ids(client: httpx.Client) -> None:
    response = client.post("/images", files=[("file", ("a.png", png(1), "image/png")), ("file", ("b.png", png(2), "image/png"))],
                           data={"id": ["multi-a", "multi-b"]})
    assert response.status_code == 201
    assert [a["id"] for a in response.json()["added"]] == ["multi-a", "multi-b"]
    for item_id in ("multi-a", "multi-b"):
        assert client.get(f"/images/{item_id}").status_code == 200


def test_add_raw_bytes_with_id_in_query(client: httpx.Client) -> None:
    response = client.post("/images", params={"id": "raw/rocket.jpg"}, content=ROCKET.read_bytes(),
                           headers={"content-type": "application/octet-stream"})
    assert response.status_code == 201 and response.json()["added"][0]["id"] == "raw/rocket.jpg"
    item = client.get("/images/raw/rocket.jpg").json()  # ids may hold slashes
    assert item["id"] == "raw/rocket.jpg"
    shape = list(ImagePrism().embed(ROCKET)["hash"].shape)
    assert item["embeddings"] == {"hash": {"shape": shape, "dtype": "uint8"}}
    thumb = client.get(item["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 160


def test_search_matches_an_in_process_index(tmp_path: Path) -> None:
    catalogue = {"chelsea": CHELSEA, "coffee": COFFEE, "rocket": ROCKET, "noise": png(7)}
    local = ImageIndex()
    local.add(list(catalogue.values()), ids=list(catalogue))
    with ServeProcess(tmp_path / "index") as process, process.client() as c:
        for name, image in catalogue.items():
            content = image.read_bytes() if isinstance(image, Path) else image
            assert c.post("/images", files=[("file", (name, content))], data={"id": name}).status_code == 201
        served = c.post("/search", files=files(BRIGHT), data={"k": "3"}).json()["hits"]
        raw = c.post("/search", params={"k": "1"}, content=CHELSEA.read_bytes(), headers={"content-type": "image/jpeg"}).json()
    expected = local.search(BRIGHT, k=3)
    assert [h["id"] for h in served] == [h.id for h in expected]
    for hit, reference in zip(served, expected):
        assert hit["score"] == pytest.approx(reference.score) and hit["scores"] == pytest.approx(dict(reference.scores))
        assert hit["thumbnail"] == "/thumbnails/" + hit["id"]
    assert raw["hits"] == [{**raw["hits"][0], "id": "chelsea", "score": 1.0}]


def test_compare_gives_the_compare_result(client: httpx.Client) -> None:
    response = client.post("/compare", files=[("a", ("a.jpg", CHELSEA.read_bytes())), ("b", ("b.jpg", COFFEE.read_bytes()))])
    assert response.status_code == 200
    assert response.json() == ImagePrism().compare(CHELSEA, COFFEE).to_dict()  # floats survive JSON exactly


def test_stats(client: httpx.Client) -> None:
    client.post("/search", files=files(CHELSEA))  # embedded before: a cache hit
    stats = client.get("/stats").json()
    assert stats["items"] == client.get("/health").json()["items"] >= 1
    assert stats["dimensions"] == ["hash"] and stats["threshold"] == 0.9
    assert stats["cache"]["hits"] >= 1 and stats["cache"]["misses"] >= 1


# -- errors ----------------------------------------------------------------------------


def test_errors_are_json_with_class_and_status(client: httpx.Client) -> None:
    bad = client.post("/search", files=[("file", ("notes.txt", b"not an image", "text/plain"))])
    status, name, message = error_of(bad)
    assert (status, name) == (400, "ImageLoadError") and "notes.txt" in message
    assert error_of(client.get("/images/no-such-id"))[:2] == (404, "UnknownIdError")
    assert error_of(client.delete("/images/no-such-id"))[:2] == (404, "UnknownIdError")
    assert error_of(client.get("/thumbnails/no-such-id"))[:2] == (404, "UnknownIdError")
    assert error_of(client.get("/no/such/route"))[:2] == (404, "NotFound")
    assert error_of(client.post("/search"))[:2] == (400, "InputError")  # no image
    status, name, message = error_of(client.post("/search", files=files(CHELSEA), data={"k": "0"}))
    assert (status, name) == (400, "InputError") and "k='0'" in message
    status, name, message = error_of(client.post("/images", files=files(CHELSEA, COFFEE), data={"id": "only-one"}))
    assert (status, name) == (400, "InputError") and "2 files" in message
    assert error_of(client.post("/compare", files=files(CHELSEA)))[:2] == (400, "InputError")


def test_duplicate_id_is_refused_and_nothing_is_added(client: httpx.Client) -> None:
    assert client.post("/images", files=files(ROCKET), data={"id": "dup"}).status_code == 201
    before = client.get("/stats").json()["items"]
    both = [("file", ("x.png", png(10), "image/png")), ("file", ("y.png", png(11), "image/png"))]
    status, name, message = error_of(client.post("/images", files=both, data={"id": ["fresh", "dup"]}))
    assert (status, name) == (400, "InputError") and "'dup'" in message
    assert client.get("/stats").json()["items"] == before
    assert client.get("/images/fresh").status_code == 404  # all or none


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    args = ["--max-pixels", "10000", "--max-upload-mb", "0.25", "--timeout", "2"]
    with ServeProcess(tmp_path_factory.mktemp("strict") / "index", args) as process:
        yield process


def test_too_many_pixels_is_413_before_decoding(strict_server: ServeProcess) -> None:
    with strict_server.client() as c:
        status, name, message = error_of(c.post("/search", files=[("file", ("big.png", png(3, size=128), "image/png"))]))
    assert (status, name) == (413, "DecompressionBombError")
    assert "big.png" in message and "128x128" in message


def test_too_large_body_is_413(strict_server: ServeProcess) -> None:
    big = b"\0" * 300_000
    with strict_server.client() as c:
        assert error_of(c.post("/search", files=[("file", ("big.bin", big))]))[:2] == (413, "PayloadTooLarge")

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(30):
                yield b"\0" * 10_000

        response = c.post("/search", content=chunks(), headers={"content-type": "application/octet-stream"})
        assert error_of(response)[:2] == (413, "PayloadTooLarge")
        assert c.get("/health").json()["status"] == "ok"


def test_slow_request_times_out_with_503(strict_server: ServeProcess) -> None:
    def trickle() -> Iterator[bytes]:
        data = CHELSEA.read_bytes()[:1000]
        for i in range(0, len(data), 100):
            time.sleep(0.5)  # 5 s in all, the server's --timeout is 2 s
            yield data[i:i + 100]

    with strict_server.client() as c:
        started = time.monotonic()
        response = c.post("/search", content=trickle(), headers={"content-type": "image/jpeg"})
        assert error_of(response)[:2] == (503, "RequestTimeout")
        assert time.monotonic() - started < 10


def test_model_not_available_offline_is_503(tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1", "IMAGEPRISM_CACHE_DIR": str(tmp_path / "empty-model-cache")}
    with ServeProcess(tmp_path / "index", ["--dimensions", "semantic", "--threshold", "0.8"], env=env) as process, process.client() as c:
        status, name, message = error_of(c.post("/search", files=files(CHELSEA)))
    assert (status, name) == (503, "ModelNotCachedError")
    assert "imageprism models download semantic" in message


# -- token -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["flag", "env"])
def test_token_is_required_on_every_read_and_write(tmp_path: Path, how: str) -> None:
    args, env = (["--token", TOKEN], None) if how == "flag" else ([], {"IMAGEPRISM_TOKEN": TOKEN})
    with ServeProcess(tmp_path / "index", args, env=env) as process:
        with process.client(TOKEN) as good:
            assert good.post("/images", files=files(CHELSEA), data={"id": "cat"}).status_code == 201
        calls = [
            ("POST", "/images", {"files": files(COFFEE)}), ("POST", "/search", {"files": files(CHELSEA)}),
            ("POST", "/compare", {"files": [("a", CHELSEA.read_bytes()), ("b", COFFEE.read_bytes())]}),
            ("GET", "/images/cat", {}), ("DELETE", "/images/cat", {}), ("GET", "/thumbnails/cat", {}),
            ("GET", "/stats", {}),
        ]
        for token in (None, "wrong"):
            with process.client(token) as c:
                for method, path, kwargs in calls:
                    response = c.request(method, path, **kwargs)
                    assert error_of(response)[:2] == (401, "Unauthorized"), (method, path, token)
                    assert response.headers["www-authenticate"] == "Bearer"
                assert c.get("/health").status_code == 200  # liveness stays open
        with process.client(TOKEN) as good:
            assert good.get("/stats").json()["items"] == 1  # nothing was added without the token
            assert good.post("/search", files=files(CHELSEA)).json()["hits"][0]["id"] == "cat"


# -- persistence ---------------------------------------------------------------------------


def test_restart_keeps_the_index_and_serves_at_once(tmp_path: Path) -> None:
    process = ServeProcess(tmp_path / "index")
    with process, process.client() as c:
        for name, path in (("cat", CHELSEA), ("coffee", COFFEE)):
            assert c.post("/images", files=files(path), data={"id": name}).status_code == 201
        before = c.post("/search", files=files(BRIGHT), data={"k": "2"}).json()
    assert process.process is None  # stopped
    with process, process.client() as c:
        assert c.get("/stats").json()["items"] == 2  # the first request after the start line
        assert c.post("/search", files=files(BRIGHT), data={"k": "2"}).json() == before
        assert c.get("/thumbnails/cat").status_code == 200


def test_a_write_is_on_disk_when_it_is_answered(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    with ServeProcess(folder) as process, process.client() as c:
        for i in range(3):
            assert c.post("/images", files=[("file", ("x.png", png(50 + i)))], data={"id": f"item-{i}"}).status_code == 201
            assert ImageIndex.load(folder).ids == tuple(f"item-{j}" for j in range(i + 1))  # read while it runs
        assert c.delete("/images/item-1").status_code == 200
        assert ImageIndex.load(folder).ids == ("item-0", "item-2")
        assert len(list((folder / "thumbnails").iterdir())) == 2
        commits = c.get("/stats").json()["commits"]
        assert (commits["commits"], commits["writes"]) == (4, 4)  # one commit per write when they do not overlap


def test_delete_is_real_and_survives_a_restart(tmp_path: Path) -> None:
    process = ServeProcess(tmp_path / "index")
    with process, process.client() as c:
        for name, path in (("cat", CHELSEA), ("coffee", COFFEE)):
            assert c.post("/images", files=files(path), data={"id": name}).status_code == 201
        response = c.delete("/images/cat")
        assert response.status_code == 200 and response.json() == {"deleted": "cat", "items": 1}
        assert [h["id"] for h in c.post("/search", files=files(CHELSEA), data={"k": "5"}).json()["hits"]] == ["coffee"]
        assert c.get("/images/cat").status_code == 404
        assert c.get("/thumbnails/cat").status_code == 404
        added = c.post("/images", files=files(BRIGHT)).json()["added"][0]
        assert added["duplicates"] == []  # the deleted copy no longer matches
    with process, process.client() as c:
        assert c.get("/images/cat").status_code == 404
        assert [h["id"] for h in c.post("/search", files=files(CHELSEA), data={"k": "5"}).json()["hits"]] == [added["id"], "coffee"]
        assert c.post("/images", files=files(CHELSEA), data={"id": "cat"}).status_code == 201  # the id is free again


def test_kill_9_during_adds_loses_no_acknowledged_add(tmp_path: Path) -> None:
    """Clients add distinct images until the server is SIGKILLed mid-stream, three times; after
    each restart every add answered 201 so far is in the index (unanswered ones may or may not be).

    The index starts with 20,000 synthetic items, so a commit takes a while, and each kill comes
    a random time after an answer: it often lands inside a commit, which is what is tested.
    """
    folder = tmp_path / "index"
    seeded = ImageIndex()
    shape = seeded.prism.embed(CHELSEA)["hash"].shape
    codes = np.random.default_rng(0).integers(0, 256, (20_000, *shape), dtype=np.uint8)
    seeded.add_embeddings([{"hash": c} for c in codes], ids=[f"seed-{i}" for i in range(len(codes))])
    seeded.save(folder)
    process = ServeProcess(folder)
    acknowledged: list[str] = []
    lock = threading.Lock()

    def client_loop(worker: int, stop: threading.Event) -> None:
        with process.client(timeout=60) as c:
            while not stop.is_set():
                item_id = f"w{worker}-{uuid.uuid4().hex[:12]}"
                seed = int(item_id.split("-")[1], 16)
                try:
                    response = c.post("/images", files=[("file", (f"{item_id}.png", png(seed), "image/png"))], data={"id": item_id})
                except httpx.HTTPError:
                    return  # the server died under this request: not acknowledged
                if response.status_code == 201:
                    with lock:
                        acknowledged.append(item_id)

    def check(c: httpx.Client) -> None:
        assert c.get("/health").json()["status"] == "ok"
        missing = [i for i in acknowledged if c.get(f"/images/{i}").status_code != 200]
        assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged adds lost"
        assert c.get("/stats").json()["items"] >= len(codes) + len(acknowledged)

    for round_ in range(3):
        process.start()
        with process.client() as c:
            check(c)
        stop = threading.Event()
        threads = [threading.Thread(target=client_loop, args=(w, stop)) for w in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while len(acknowledged) < 10 * (round_ + 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.uniform(0.0, 1.5))  # not right after an answer, when no commit runs
        process.kill()
        stop.set()
        for t in threads:
            t.join(60)
        assert len(acknowledged) >= 10 * (round_ + 1)
    with process, process.client() as c:
        check(c)


# -- the README ----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl command on this machine")
def test_readme_curl_examples_run(tmp_path: Path) -> None:
    """Each curl line of the README's Service section, against a real server, succeeds in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- serve:curl -->\n```bash\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("curl ")]
    assert len(lines) >= 9
    (tmp_path / "examples").symlink_to(REPO / "examples")  # the README's relative paths
    outputs = []
    with ServeProcess(tmp_path / "index") as process:
        for line in lines:
            command = line.replace("http://127.0.0.1:8000", process.url).replace("curl ", "curl --fail-with-body ", 1)
            done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
                                  env={**os.environ, "IMAGEPRISM_TOKEN": ""})
            assert done.returncode == 0, (line, done.stdout, done.stderr)
            outputs.append(done.stdout)
    assert json.loads(outputs[2])["added"][0]["duplicates"][0]["id"] == "chelsea"
    assert json.loads(outputs[5])["hits"][0]["id"] == "coffee"
    assert (tmp_path / "chelsea-thumbnail.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert json.loads(outputs[-2]) == {"deleted": "chelsea", "items": 4}


# -- the command line's refusals (before any server starts) ----------------------------------


def test_serve_refuses_a_folder_that_is_not_an_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from imageprism.cli import main

    (tmp_path / "notes.txt").write_text("not an index")
    assert main(["serve", str(tmp_path), "--port", "0"]) == 1
    assert "manifest.json is missing" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "new"), "--dimensions", "hash,semantic", "--port", "0"]) == 1
    assert "--threshold" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # refused before anything is written

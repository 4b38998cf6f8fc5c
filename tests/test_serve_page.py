"""The page at ``/`` in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium): upload an image, see the top matches with thumbnails and scores."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_process import REPO, ServeProcess

IMAGES = REPO / "examples" / "images"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no headless browser: install the Debian packages chromium and chromium-driver "
    "(apt-get install -y chromium chromium-driver; .ci/run does it where it runs as root)",
)


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_page_uploads_an_image_and_shows_its_matches(tmp_path: Path, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    with ServeProcess(tmp_path / "index") as process, process.client() as c:
        for name in ("chelsea.jpg", "coffee.jpg", "rocket.jpg"):
            assert c.post("/images", files=[("file", (name, (IMAGES / name).read_bytes()))], data={"id": name}).status_code == 201
        driver.get(process.url + "/")  # type: ignore[attr-defined]
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: "3 items" in d.find_element(By.ID, "stats").text)
        driver.find_element(By.ID, "file").send_keys(str(IMAGES / "chelsea_small_bright.jpg"))  # type: ignore[attr-defined]
        driver.find_element(By.ID, "k").clear()  # type: ignore[attr-defined]
        driver.find_element(By.ID, "k").send_keys("2")  # type: ignore[attr-defined]
        driver.find_element(By.ID, "search").click()  # type: ignore[attr-defined]
        wait.until(lambda d: d.find_element(By.ID, "status").text == "2 matches")
        hits = driver.find_elements(By.CSS_SELECTOR, "#hits .hit")  # type: ignore[attr-defined]
        assert hits[0].find_element(By.CSS_SELECTOR, ".id").text == "chelsea.jpg"
        expected = c.post("/search", files=[("file", (IMAGES / "chelsea_small_bright.jpg").read_bytes())], data={"k": "2"}).json()
        for hit, reference in zip(hits, expected["hits"]):
            assert hit.find_element(By.CSS_SELECTOR, ".score").text == f"score {reference['score']:.4f}"
            cells = [td.text for td in hit.find_elements(By.CSS_SELECTOR, "td")]
            assert cells == ["hash", f"{reference['scores']['hash']:.4f}"]
        # every thumbnail loaded (fetched, then shown from a blob URL)
        wait.until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                                 for img in d.find_elements(By.CSS_SELECTOR, "#hits img")))
        # adding through the page reports the near-duplicate already indexed
        driver.find_element(By.ID, "add").click()  # type: ignore[attr-defined]
        wait.until(lambda d: "1 near-duplicate already indexed" in d.find_element(By.ID, "status").text)
        assert c.get("/stats").json()["items"] == 4

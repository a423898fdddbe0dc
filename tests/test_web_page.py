"""The web chat page at '/': shipped inside the package, and driven end to end in headless Chromium.

The browser test needs Chromium + chromedriver (`make browser`) and selenium (dev extra); it skips with a
message where they are missing. It uses the tiny model and synthetic catalog; set RECGEN_WEB_TEST_REAL=1 to
serve the real default models on ml-100k instead. Screenshots: eval/results/serving/web_chat.png (real models)
and web_chat_tiny.png (default tiny-model run).
"""

from __future__ import annotations

import importlib.resources
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from recgen.server.app import create_app
from recgen.server.serving import ServerSettings

REPO = Path(__file__).resolve().parents[1]
#: With the real models (RECGEN_WEB_TEST_REAL=1) the screenshot is the project's web_chat.png; the default
#: tiny-model run writes a separate file so ordinary test runs never overwrite it.
SCREENSHOTS = {True: REPO / "eval" / "results" / "serving" / "web_chat.png",
               False: REPO / "eval" / "results" / "serving" / "web_chat_tiny.png"}
CHROME_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1000,1500"]


def test_page_is_package_data_without_external_resources():
    static = importlib.resources.files("recgen.server") / "static"
    for name in ("index.html", "app.js", "style.css"):
        assert (static / name).is_file(), f"{name} must ship inside the package"
    html = (static / "index.html").read_text(encoding="utf-8")
    assert '<script src="/static/app.js">' in html
    assert not re.search(r'(src|href)="(https?:)?//', html), "the page must work offline (no CDN)"
    assert "innerHTML" not in (static / "app.js").read_text(encoding="utf-8"), "server text goes in as textContent"


def _chromium() -> tuple[str | None, str | None]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium; dev extra)")
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _chromium()
    if not binary or not driver_path:
        pytest.skip("Chromium/chromedriver not found: run `make browser` "
                    "(apt-get install chromium chromium-driver) to enable the web-page test")
    options = Options()
    options.binary_location = binary
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except WebDriverException as exc:
        pytest.skip(f"Chromium cannot start on this machine: {exc.msg}")
    yield driver
    driver.quit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Held:
    """A recommender whose reasons start only while ``release`` is set (it is, unless a test clears it)."""

    def __init__(self, inner):
        self.inner, self.release = inner, threading.Event()
        self.release.set()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def explain(self, *args, **kwargs):
        self.release.wait(60)
        return self.inner.explain(*args, **kwargs)


@pytest.fixture(scope="module")
def live_server(request):
    """uvicorn in a thread serving the tiny recommender (or the real one with RECGEN_WEB_TEST_REAL=1)."""
    import uvicorn

    if os.environ.get("RECGEN_WEB_TEST_REAL") == "1":
        from recgen.cli.common import make_config
        from recgen.recommender import open_dataset

        request.getfixturevalue("shared_data")  # skips with a message where ml-100k is absent
        dataset, recommender = open_dataset("ml-100k", make_config(), show_progress=False)
        recommender.recommend(query="warm up", k=1, reasons=False)  # load the LM before the clock starts
        real = True
    else:
        dataset, recommender = request.getfixturevalue("dataset"), request.getfixturevalue("tiny_recommender")
        real = False
    recommender = _Held(recommender)  # reasons pass straight through unless a test holds them back
    port = _free_port()
    settings = ServerSettings(timeout=900 if real else 120)  # the real LM on a shared CPU can be slow
    server = uvicorn.Server(uvicorn.Config(create_app(recommender, dataset, settings), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", dataset, real, recommender
    server.should_exit = True
    thread.join(10)


def test_chat_page_shows_ranked_items_with_reasons(browser, live_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, dataset, real, _ = live_server
    wait = WebDriverWait(browser, 900 if real else 60)
    browser.get(url + "/")
    wait.until(lambda d: "items" in d.find_element(By.ID, "status").text)
    assert f"{len(dataset.catalog)} items" in browser.find_element(By.ID, "status").text

    def ask(text: str, replies: int):
        box = browser.find_element(By.ID, "message")
        box.send_keys(text)
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: (len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant")) >= replies
                              and not d.find_elements(By.CSS_SELECTOR, ".reason.writing"))
                   or d.find_elements(By.CSS_SELECTOR, ".msg.error"))
        assert not browser.find_elements(By.CSS_SELECTOR, ".msg.error"), \
            browser.find_element(By.CSS_SELECTOR, ".msg.error").text
        return browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]

    first = ask("a funny sci-fi film, not horror", 1)
    items = first.find_elements(By.CSS_SELECTOR, "li.rec")
    assert len(items) == 5
    first_ids = []
    for li in items:
        item = dataset.catalog.get(li.get_attribute("data-item-id"))
        assert li.find_element(By.CSS_SELECTOR, ".rec-title").text.startswith(item.title)
        assert li.find_element(By.CSS_SELECTOR, ".reason").text.strip()
        assert "Horror" not in item.genres
        first_ids.append(item.item_id)
    assert [li.find_element(By.CSS_SELECTOR, ".rank").text for li in items] == ["1", "2", "3", "4", "5"]

    second = ask("more like the second one, only after 1990", 2)
    chips = [c.text for c in second.find_elements(By.CSS_SELECTOR, ".chip")]
    assert "not Horror" in chips and "1991 or later" in chips
    second_ids = [li.get_attribute("data-item-id") for li in second.find_elements(By.CSS_SELECTOR, "li.rec")]
    assert second_ids and not set(second_ids) & set(first_ids)
    assert all(dataset.catalog.get(i).year > 1990 for i in second_ids)

    screenshot = SCREENSHOTS[real]
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe


def test_chat_page_shows_items_first_and_fills_in_the_reasons(browser, live_server):
    """Issue 25: the items appear as soon as they are ranked (the reasons are held back here), each with a
    placeholder, and the reasons replace the placeholders in the same list when written."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, dataset, real, recommender = live_server
    wait = WebDriverWait(browser, 900 if real else 60)
    browser.get(url + "/")
    wait.until(lambda d: "items" in d.find_element(By.ID, "status").text)
    recommender.release.clear()
    try:
        box = browser.find_element(By.ID, "message")
        box.send_keys("a quiet film for a rainy day")
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant li.rec"))
        items = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant li.rec")
        ids = [li.get_attribute("data-item-id") for li in items]
        assert len(items) == 5
        assert [w.text for w in browser.find_elements(By.CSS_SELECTOR, ".reason.writing")] == ["writing the reason…"] * 5
    finally:
        recommender.release.set()
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, ".reason.writing"))
    items = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant li.rec")
    assert [li.get_attribute("data-item-id") for li in items] == ids  # the same list, now with its reasons
    assert all(li.find_element(By.CSS_SELECTOR, ".reason").text.strip() for li in items)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")) == 1


def test_page_keeps_the_api_key_for_the_session_only():
    """Issue 12 Low: the key was kept in localStorage (readable by any later page script, kept forever)."""
    script = (importlib.resources.files("recgen.server") / "static" / "app.js").read_text(encoding="utf-8")
    assert "localStorage" not in script and 'sessionStorage.setItem("recgen.apiKey"' in script
    assert 'fetch("/healthz", { headers: headers() })' in script  # details of /healthz need the key

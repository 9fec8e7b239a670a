"""The web page end to end in headless Chromium (Debian's chromium and chromium-driver, driven by Selenium):
the embedded stack as ``infra up`` runs it (broker, Redis, model server, the stream job, the ingest endpoint,
the API), a viewer's page loaded with the URL ``streamrec demo`` prints, a watch of a comedy published from
the page with the keyboard, and the comedy bar, the list and the measured seconds checked on the page.
Screenshots (desktop and 375 px) go to the test's output dir.
"""
from __future__ import annotations

import shutil
import time

import pandas as pd
import pytest

from features.offline import read_event_log
from infra import stack
from streamrec.config import load_settings
from streamrec.demo import ui_url, wait_until_online
from streams.replay import replay
from tests.fixtures.serving_stack import build_stack, write_stack_config
from tests.helpers import assert_eventually

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PAGE_TIMEOUT_S = 60.0
# A cold stream job's first micro-batches can outlast the page's budget (serving.web.FRESHNESS_BUDGET_S) on a
# slow machine; the page then says so and keeps watching.
FRESHNESS_S = 90.0


@pytest.fixture(scope="module")
def live_stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("web")
    config = write_stack_config(data, llm={"enabled": False})
    mp = pytest.MonkeyPatch()
    mp.setenv("STREAMREC_CONFIG", str(config))  # the services infra starts read the same settings
    settings = load_settings()
    try:
        stack.up(settings, only=["broker", "redis"], echo=lambda *_: None)
        built = build_stack(data, settings, live_features=True)
        stack.up(settings, only=["model-server", "stream", "ingest", "api"], echo=lambda *_: None)
        # The world's history through the stream job too, as in a running deployment: a watch from the page then
        # adds to the user's history rather than starting a state of its own beside the batch-written rows (whose
        # affinities, how high they are, depend on the hour the world was generated at).
        events = pd.DataFrame(read_event_log(built.world_dir / "events.jsonl"), columns=["user_id", "ts_ms"])
        replay(settings, built.world_dir / "events.jsonl", progress=False)
        now_ms = int(time.time() * 1000)  # later events are from the future: the stream job dead-letters them
        wait_until_online(settings, events[events["ts_ms"] <= now_ms].groupby("user_id")["ts_ms"].max().to_dict(),
                          timeout_s=300)
        yield settings, built
    finally:
        stack.down(settings, echo=lambda *_: None)
        mp.undo()


@pytest.fixture
def browser(tmp_path):
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing: run `bash infra/install_browser.sh` (make install does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    yield driver
    driver.quit()


def _ids(driver, list_id: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [li.get_attribute("data-item-id") for li in driver.find_elements(By.CSS_SELECTOR, f"#{list_id} > li")]


def _bar(driver, genre: str) -> float:
    from selenium.webdriver.common.by import By

    return float(driver.find_element(By.CSS_SELECTOR, f'.bar[data-genre="{genre}"]').get_attribute("data-value"))


def test_a_watch_published_from_the_page_shows_in_its_features_and_list(live_stack, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    settings, built = live_stack
    user = built.user_ids[0]
    browser.get(ui_url(settings, user))

    def loaded():
        assert len(_ids(browser, "final")) == 10 and len(_ids(browser, "before")) == 10
    assert_eventually(loaded, timeout_s=PAGE_TIMEOUT_S)
    assert browser.find_element(By.ID, "user").get_attribute("value") == user
    before_ids, comedy_before = _ids(browser, "final"), _bar(browser, "Comedy")
    assert set(before_ids) | set(_ids(browser, "before")) <= built.item_ids  # nothing outside the catalog
    _screenshot(browser, tmp_path / "desktop-before.png")

    # Find a comedy in the catalog and watch it, with the keyboard only.
    Select(browser.find_element(By.ID, "genre")).select_by_visible_text("Comedy")
    browser.find_element(By.ID, "title").send_keys(Keys.ENTER)  # submits the find form
    assert_eventually(lambda: _assert(len(_ids(browser, "catalog")) > 0), timeout_s=PAGE_TIMEOUT_S)
    comedy = browser.find_element(By.CSS_SELECTOR, "#catalog > li")
    assert "Comedy" in comedy.find_element(By.CLASS_NAME, "genres").text
    watch = comedy.find_element(By.XPATH, ".//button[text()='watch']")
    watch.send_keys(Keys.ENTER)
    published = time.monotonic()

    def visible():
        seconds = browser.find_element(By.ID, "freshness").get_attribute("data-seconds")
        assert seconds is not None, browser.find_element(By.ID, "freshness").text
        return float(seconds)
    seconds = assert_eventually(visible, timeout_s=FRESHNESS_S)
    text = browser.find_element(By.ID, "freshness").text
    assert f"visible in {seconds:.2f} s" in text and 0 < seconds <= time.monotonic() - published + 1
    assert _bar(browser, "Comedy") > comedy_before
    comedy_fill = browser.find_element(By.CSS_SELECTOR, '.bar[data-genre="Comedy"] .fill')
    assert comedy_fill.size["width"] > 0  # drawn, not only a number
    assert not browser.find_element(By.ID, "token-field").is_displayed()  # the URL brought the token
    after_ids = _ids(browser, "final")
    assert after_ids != before_ids and set(after_ids) <= built.item_ids
    last_items = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#last-items > li")]
    assert comedy.get_attribute("data-item-id") in last_items[0]
    _screenshot(browser, tmp_path / "desktop-after.png")

    # A phone's width: everything fits without scrolling sideways.
    browser.set_window_size(375, 900)
    assert_eventually(lambda: _assert(browser.execute_script(
        "return document.documentElement.scrollWidth") <= browser.execute_script("return window.innerWidth")),
        timeout_s=10)
    _screenshot(browser, tmp_path / "phone.png")


def _assert(condition: bool) -> None:
    assert condition


def _screenshot(driver, path) -> None:
    driver.execute_script("window.scrollTo(0, 0)")  # the controls, the lists' heads and the features
    driver.save_screenshot(str(path))

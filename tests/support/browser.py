"""A real browser for UI tests: Debian's headless Chromium driven through Debian's
chromedriver (WebDriver), nothing downloaded at run time. `make test` installs both
(`make browser`); without them a UI test skips, and fails under PROMPTGATE_REQUIRE_SERVICES=1."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from jobs.core.paths import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = ROOT / ".promptgate" / "test-artifacts"  # screenshots people look at after a run (git-ignored)


@contextmanager
def chromium(width: int = 1600, height: int = 1000) -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        msg = f"{CHROMIUM} and {CHROMEDRIVER} are needed (Debian's chromium and chromium-driver: make browser)"
        if os.environ.get("PROMPTGATE_REQUIRE_SERVICES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(what: str, find: Callable[[], Any], timeout_s: float = 120, page: Any = None) -> Any:
    """Poll ``find`` until it returns something truthy (the MLflow UI renders lazily). On a
    timeout, the page's text and a screenshot (``browser-failure.png`` in ARTIFACTS) say what
    it showed instead."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            found = find()
            if found:
                return found
        except Exception as e:  # noqa: BLE001 - not rendered yet
            last = e
        time.sleep(0.5)
    shown = ""
    if page is not None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.save_screenshot(str(ARTIFACTS / "browser-failure.png"))
        shown = " ".join(page.find_element("tag name", "body").text.split())[:1500]
    raise AssertionError(f"the page never showed {what} within {timeout_s} s (last error: {last}); it showed: {shown}")

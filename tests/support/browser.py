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

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


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


def wait_for(what: str, find: Callable[[], Any], timeout_s: float = 60) -> Any:
    """Poll ``find`` until it returns something truthy (the MLflow UI renders lazily)."""
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
    raise AssertionError(f"the page never showed {what} within {timeout_s} s (last error: {last})")

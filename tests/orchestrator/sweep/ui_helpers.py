"""Headless Chromium (Debian's chromium + chromium-driver, driven by selenium) for the MLflow UI tests."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def have_browser() -> bool:
    return Path(CHROMIUM).is_file() and Path(DRIVER).is_file()


def browser():
    """A headless Chromium at 1400x900 (the driver process is stopped by ``quit()``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
                "--disable-gpu"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def page_text(driver, url: str, expect: list[str], timeout: float = 90.0, shot: Path | None = None) -> str:
    """Open ``url`` and wait until the page shows every string of ``expect``; returns the page's text
    (raises AssertionError with what was shown when it never does). ``shot``: a screenshot there."""
    driver.get(url)
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = driver.find_element("tag name", "body").text
        if all(e in text for e in expect):
            break
        time.sleep(0.5)
    if shot is not None:
        driver.save_screenshot(str(shot))
    missing = [e for e in expect if e not in text]
    assert not missing, f"{url}: {missing} not shown within {timeout:.0f} s; the page shows:\n{text[:3000]}"
    return text

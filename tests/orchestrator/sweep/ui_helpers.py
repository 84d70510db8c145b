"""Headless Chromium (Debian's chromium + chromium-driver, driven by selenium) for the MLflow UI tests."""
from __future__ import annotations

import json
import shutil
import time
import urllib.parse
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


def wait_for(driver, css: str, timeout: float = 60.0) -> list:
    """The elements ``css`` finds once there is at least one (an empty list after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    found = driver.find_elements("css selector", css)
    while not found and time.monotonic() < deadline:
        time.sleep(0.5)
        found = driver.find_elements("css selector", css)
    return found


def compare_view_axes(driver, base: str, experiment_id: str, run_ids: list[str], timeout: float = 120.0) -> list[str]:
    """Open MLflow's compare view of ``run_ids`` and return the axes its parallel-coordinates plot shows by
    default, left to right (MLflow picks the first three params that differ, sorted, and the first metric
    every run has, in the order they were first logged)."""
    query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])})
    page_text(driver, f"{base}/#/compare-runs?{query}", ["Parallel Coordinates Plot"], timeout=timeout)
    return [e.text for e in wait_for(driver, ".parcoords .axis-title", timeout=60.0)]


def artifact_frame_draws(driver, run_page: str, artifact: str, css: str, timeout: float = 90.0) -> bool:
    """Open ``artifact`` in MLflow's artifact view of the run at ``run_page`` and say whether what it shows
    the file in (an iframe with a blob: URL, for HTML) draws something ``css`` finds inside that frame."""
    driver.get(f"{run_page}/artifacts/{artifact}")
    frames = wait_for(driver, "iframe", timeout)
    if not frames:
        return False
    driver.switch_to.frame(frames[0])
    try:
        return bool(wait_for(driver, css, timeout))
    finally:
        driver.switch_to.default_content()

"""Headless Chromium for the report tests (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium; nothing is downloaded: the driver is ``/usr/bin/chromedriver``)."""

import base64
import contextlib
import os
import shutil
import tempfile

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"
# Without the background-networking flags a closed network makes Chromium log errors.
ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--hide-scrollbars")


def missing():
    """What is missing to run the browser tests (empty if nothing)."""
    return [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]


@contextlib.contextmanager
def chromium(width=1280, height=900):
    """A Selenium Chrome driver on Debian's Chromium with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if missing():
        raise RuntimeError(f"{', '.join(missing())} not found: install them with `{INSTALL}`.")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*ARGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def full_page_screenshot(driver, path, max_height=30000):
    """Saves the whole page (not only the viewport) as a PNG."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height),
            "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "clip": clip})
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    return path


def open_page(path, screenshot=None):
    """Opens ``path`` (file://) and returns what the tests check: severe console entries,
    every image's ``src`` scheme and decoded size, the tables and section ids."""
    with chromium() as driver:
        driver.get("file://" + os.path.abspath(path))
        driver.execute_script("return document.readyState")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => ({src: i.src.slice(0, 30), "
            "complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}));")
        tables = driver.execute_script(
            "return Array.from(document.querySelectorAll('table')).map(t => "
            "({cls: t.className, section: t.closest('section') ? t.closest('section').id : '',"
            " rows: t.rows.length, text: t.innerText}));")
        sections = driver.execute_script(
            "return Array.from(document.querySelectorAll('section')).map(s => s.id);")
        badges = driver.execute_script(
            "return Array.from(document.querySelectorAll('.badge')).map(b => b.className);")
        log = driver.get_log("browser")
        if screenshot:
            full_page_screenshot(driver, screenshot)
    return {"severe": [e for e in log if e["level"] == "SEVERE"], "log": log,
            "images": images, "tables": tables, "sections": sections, "badges": badges}

"""The HTML report opens in a real browser: Debian's headless Chromium, driven by selenium.

String checks (tests/test_report.py) cannot tell whether a browser can decode
the embedded PNGs or complains about the page; this opens it the way a marketer
would and asks the browser. ``assert_page_renders`` is shared with the
end-to-end pipeline test.

Chromium and ChromeDriver come from Debian's packages (``.ci/run`` installs
them). Where they are missing (a developer's Windows machine) the test skips,
except in CI, where a missing browser means the CI setup is broken and the
test fails.
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
from pathlib import Path

import pytest

from core.profile_export.report import render_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PAGE_LOAD_TIMEOUT_SECONDS = 10
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",  # CI containers run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    # Nothing but the page: no update checks, sync or first-run pages that would talk to the network.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def _missing_browser() -> list[str]:
    return [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]


# Skipped only off CI (a developer's Windows machine); in CI a missing browser fails loudly instead.
needs_chromium = pytest.mark.skipif(
    bool(_missing_browser()) and not os.environ.get("CI"),
    reason="headless Chromium not available; the report's browser check runs on Debian with the chromium "
           "and chromium-driver packages, as in CI")


def _require_chromium() -> None:
    missing = _missing_browser()
    if missing:
        pytest.fail(f"{', '.join(missing)} missing in CI: .ci/run should have installed Debian's "
                    "chromium and chromium-driver packages before running the tests")


def assert_page_renders(html_path: Path, expected_images: int, profile_dir: Path | None = None) -> None:
    """Open ``html_path`` in headless Chromium and fail unless it renders cleanly.

    Checks that the page finishes loading, the browser logs nothing at level
    SEVERE (a console error or a resource that failed to load), the page
    fetched no resources at all (everything is embedded), and exactly
    ``expected_images`` images are present, each decoded (``complete`` with
    a non-zero natural width).

    Parameters
    ----------
    html_path : Path
        The report file.
    expected_images : int
        Number of ``<img>`` elements the page should hold (one per chart given).
    profile_dir : Path, optional
        Fresh folder for Chromium's profile (e.g. under pytest's ``tmp_path``);
        by default a temporary folder removed afterwards. Not beside the page,
        which may sit in an artifacts folder that must hold only outputs.
    """
    _require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    with contextlib.ExitStack() as stack:
        # A fresh profile, so no state leaks between runs or from a developer's own browser.
        if profile_dir is None:
            profile_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(ignore_cleanup_errors=True)))
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in (*CHROMIUM_ARGS, f"--user-data-dir={profile_dir}"):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        stack.callback(driver.quit)  # runs before the profile folder is removed
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_SECONDS)
        driver.get(Path(html_path).resolve().as_uri())
        WebDriverWait(driver, PAGE_LOAD_TIMEOUT_SECONDS).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,"
            " width: i.naturalWidth, scheme: i.src.split(':')[0]}));")
        # Data URIs are not network fetches, so a self-contained page has no resource entries at all.
        fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, f"browser errors: {severe}"
    assert not fetched, f"the page fetched resources: {fetched}"
    assert len(images) == expected_images, f"{len(images)} images on the page, expected {expected_images}"
    broken = [i for i in images if not (i["complete"] and i["width"] > 0)]
    assert not broken, f"images that did not render: {broken}"
    assert all(i["scheme"] == "data" for i in images), images


@needs_chromium
def test_report_renders_in_headless_chromium(tmp_path):
    from test_report import make_report_data

    data = make_report_data(tmp_path / "charts")
    page = tmp_path / "report.html"
    page.write_text(render_report(data), encoding="utf-8")
    assert_page_renders(page, expected_images=len(data.images), profile_dir=tmp_path / "chromium-profile")


@needs_chromium
@pytest.mark.parametrize("defect, message", [
    ("<img alt=\"cut short\" src=\"data:image/png;base64,{truncated}\">", "did not render"),
    ("<script>console.error('report broke')</script>", "browser errors"),
], ids=["truncated image", "console error"])
def test_a_broken_page_fails_the_check(tmp_path, defect, message):
    """The check is not vacuous: an undecodable image or a console error fails it."""
    from core.profile_export import plots

    plots.save_loss_plot({"loss": [1.0, 0.5]}, tmp_path / "loss.png")
    png = (tmp_path / "loss.png").read_bytes()
    truncated = base64.b64encode(png[:40]).decode("ascii")  # a valid header, no image data
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>broken</title></head><body>'
                    + defect.format(truncated=truncated) + "</body></html>", encoding="utf-8")
    images = defect.count("<img")
    with pytest.raises(AssertionError, match=message):
        assert_page_renders(page, expected_images=images, profile_dir=tmp_path / "chromium-profile")

"""The user's daily path in a real browser: `dagster dev` on loopback with workspace.yaml, Debian's
Chromium driven by Selenium. The lineage page shows every asset; the first asset and the cleaned
training pool are materialized from their pages, then one data-scale partition of the first
partitioned asset from the partition dialog; every run succeeds and the asset page shows the
metadata they recorded.

Chromium and ChromeDriver are Debian packages: the suite installs them itself (apt-get, as root)
and skips only when they cannot be installed on this machine, saying why."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from retrofit_pipeline.config import REPO_ROOT
from retrofit_pipeline.definitions import defs

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PAGE_TIMEOUT_S = 60
RUN_TIMEOUT_S = 300


def _install_chromium() -> str | None:
    """None when Chromium and ChromeDriver are there (installed now if need be), else why not."""
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return None
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine to install Debian's chromium and chromium-driver"
    if os.geteuid() != 0:
        return "installing Debian's chromium and chromium-driver needs root (run: sudo apt-get install chromium chromium-driver)"
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]]
    for command in steps:
        result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=1200)
        if result.returncode != 0:
            return f"`{' '.join(command)}` failed: {(result.stderr or result.stdout).strip()[-500:]}"
    return None if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists() else "chromium installed but not at /usr/bin"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    why_not = _install_chromium()
    if why_not:
        pytest.skip(f"no browser for the UI test: {why_not}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Headless as root, and none of Chromium's own network traffic (this machine has no internet).
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1600,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(10)
    yield driver
    driver.quit()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    """`dagster dev` as a user starts it (webserver + daemon), on a fresh instance and a preset of its
    own (the test preset, with its artifacts in a folder of this module's)."""
    home = tmp_path_factory.mktemp("ui-dagster-home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    preset = home / "ui.yaml"
    preset.write_text(yaml.safe_dump({"extends": os.environ["RETROFIT_CONFIG"], "name": "ui",
                                      "artifacts_dir": str(tmp_path_factory.mktemp("ui-artifacts"))}))
    port = _free_port()
    log = open(home / "dagster-dev.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT, env={**os.environ, "DAGSTER_HOME": str(home), "RETROFIT_CONFIG": str(preset)}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"{url}/server_info", timeout=5)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                pytest.fail(f"dagster dev did not come up:\n{(home / 'dagster-dev.log').read_text()[-3000:]}")
            time.sleep(1)
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()


def _open(browser, url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(url)
    # A first visit to a fresh instance greets with a newsletter dialog.
    for skip in browser.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
        skip.click()


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _run_succeeds(browser, run_url: str) -> None:
    """Watches the run's own page until the run ends; it must end in success."""
    from selenium.webdriver.common.by import By

    _open(browser, run_url)

    def status():
        header = browser.find_element(By.TAG_NAME, "body").text
        return next((word for word in ("Success", "Failure", "Canceled") if f"\n{word}\n" in f"\n{header}\n"), None)

    assert _wait_for(status, RUN_TIMEOUT_S, f"run {run_url} to end") == "Success", run_url


def _run_links(browser) -> set[str]:
    from selenium.webdriver.common.by import By

    return {a.get_attribute("href") for a in browser.find_elements(By.XPATH, "//a[contains(@href, '/runs/')]")}


def _launched_run_url(browser, links_before: set[str]) -> str:
    """The link to the run just launched (the toast that says so links to it)."""
    return _wait_for(lambda: next(iter(_run_links(browser) - links_before), None), PAGE_TIMEOUT_S, "the launched run's link")


def test_lineage_page_shows_every_asset(browser, dagster_dev):
    from selenium.webdriver.common.by import By

    _open(browser, f"{dagster_dev}/asset-groups")
    expected = sorted(key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys())
    groups = sorted({node.group_name for node in defs.resolve_asset_graph().asset_nodes})
    for group in groups:  # the sidebar's group rows start folded
        row = browser.find_element(By.XPATH, f"//div[contains(@class, 'AssetSidebarNode_itemContainer')][.//span[normalize-space()='{group}']]")
        row.find_element(By.XPATH, ".//button[.//*[@aria-label='arrow_drop_down']]").click()
    for name in expected:
        # Selecting an asset in the sidebar brings its node into view in the graph.
        browser.find_element(By.XPATH, f"//div[contains(@class, 'AssetSidebarNode_itemContainer')]//span[normalize-space()='{name}']").click()
        _wait_for(lambda: name in browser.find_element(By.CSS_SELECTOR, "svg:has(foreignObject)").text.split("\n"),
                  PAGE_TIMEOUT_S, f"asset {name} in the lineage graph")
    assert len(expected) >= 10, expected


def _page_once_it_shows(browser, label: str, what: str) -> str:
    """The page's text, once it contains `label` (metadata renders after the page itself)."""
    from selenium.webdriver.common.by import By

    def page_text():
        text = browser.find_element(By.TAG_NAME, "body").text
        return text if label in text else None

    return _wait_for(page_text, PAGE_TIMEOUT_S, what)


def test_materialize_first_asset_then_one_partition_from_the_ui(browser, dagster_dev):
    from selenium.webdriver.common.by import By

    # The first asset (raw_corpora) shares one multi-asset step with evaluation_set: the UI asks to confirm.
    _open(browser, f"{dagster_dev}/assets/raw_corpora")
    browser.find_element(By.XPATH, "//button[normalize-space()='Materialize']").click()
    links_before = _run_links(browser)
    browser.find_element(By.XPATH, "//button[normalize-space()='Confirm']").click()
    _run_succeeds(browser, _launched_run_url(browser, links_before))

    # The cleaned training pool (unpartitioned, upstream of every scale): a plain Materialize, no confirmation
    # once raw_corpora exists.
    _open(browser, f"{dagster_dev}/assets/training_pool")
    links_before = _run_links(browser)
    browser.find_element(By.XPATH, "//button[normalize-space()='Materialize']").click()
    _run_succeeds(browser, _launched_run_url(browser, links_before))

    # One data-scale partition of the first partitioned asset, picked in the partition dialog.
    _open(browser, f"{dagster_dev}/assets/training_mixture")
    browser.find_element(By.XPATH, "//button[normalize-space()='Materialize…']").click()
    browser.find_element(By.CSS_SELECTOR, "[class*='TagSelector_tagSelectorContainer']").click()
    browser.find_element(By.XPATH, "//*[@role='menuitem'][.//span[normalize-space()='small']]").click()
    browser.find_element(By.XPATH, "//*[normalize-space(text())='Launch runs to materialize training_mixture']").click()  # close the menu
    links_before = _run_links(browser)
    browser.find_element(By.XPATH, "//button[normalize-space()='Launch 1 run']").click()
    run_url = _launched_run_url(browser, links_before)
    _run_succeeds(browser, run_url)
    assert "partition: small" in browser.find_element(By.TAG_NAME, "body").text

    # The asset page now shows what the run recorded.
    _open(browser, f"{dagster_dev}/assets/training_mixture?partition=small")
    page = _page_once_it_shows(browser, "rows_by_language", "training_mixture's metadata on its page")
    for label in ("rows_by_task", "rows_by_language_and_task", "rows_by_domain", "distinct_queries"):
        assert label in page, label

    # The cleaning counts are recorded once, on the training pool's page.
    _open(browser, f"{dagster_dev}/assets/training_pool")
    pool_page = _page_once_it_shows(browser, "dropped_exact_duplicates", "training_pool's metadata on its page")
    for label in ("dropped_eval_overlap_exact", "dropped_near_duplicates", "held_out_domains"):
        assert label in pool_page, label

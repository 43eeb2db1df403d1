"""The user's daily path in a real browser: `dagster dev` on loopback with workspace.yaml, Debian's
Chromium driven by Selenium. The lineage page shows every asset; the first asset is materialized
from its page, then the training pool, then one data-scale partition of the first partitioned asset
from the partition dialog; the runs succeed and the asset page shows the metadata they recorded. A second experiment
(RETROFIT_EXPERIMENTS: an ablation of the test preset) stands beside the first in the lineage graph,
each asset in its own experiment's groups, and runs from the UI into its own artifacts folder; the
screenshot of the two side by side is docs/ui_experiments.png.

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

from retrofit_pipeline.config import REPO_ROOT, load_config
from retrofit_pipeline.dagster_defs.experiment import Experiment
from retrofit_pipeline.dagster_defs.factory import build_definitions
from retrofit_pipeline.definitions import defs
from retrofit_pipeline.paths import ArtifactPaths

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PAGE_TIMEOUT_S = 60
RUN_TIMEOUT_S = 300
SECOND = "ui-no-negatives"  # the second experiment's preset name; its key prefix is ui_no_negatives
SCREENSHOT = REPO_ROOT / "docs" / "ui_experiments.png"


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
def presets(tmp_path_factory) -> dict:
    """The primary experiment's preset (the test preset, with its artifacts in a folder of this
    module's) and a second experiment's: the negatives ablation of it."""
    folder = tmp_path_factory.mktemp("ui-presets")
    primary, second = folder / "ui.yaml", folder / "ui_no_negatives.yaml"
    primary.write_text(yaml.safe_dump({"extends": os.environ["RETROFIT_CONFIG"], "name": "ui",
                                       "artifacts_dir": str(tmp_path_factory.mktemp("ui-artifacts"))}))
    second.write_text(yaml.safe_dump({"extends": str(primary), "name": SECOND, "negatives": {"strategy": "none"}}))
    return {"primary": primary, "second": second}


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory, presets):
    """`dagster dev` as a user starts it (webserver + daemon), on a fresh instance, with two
    experiments: the primary preset (RETROFIT_CONFIG) and its ablation (RETROFIT_EXPERIMENTS)."""
    home = tmp_path_factory.mktemp("ui-dagster-home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = _free_port()
    log = open(home / "dagster-dev.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT, env={**os.environ, "DAGSTER_HOME": str(home), "RETROFIT_CONFIG": str(presets["primary"]),
                            "RETROFIT_EXPERIMENTS": str(presets["second"])},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
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

    # The cleaned pool every data scale samples from (one asset, no dialog).
    _open(browser, f"{dagster_dev}/assets/training_pool")
    links_before = _run_links(browser)
    browser.find_element(By.XPATH, "//button[normalize-space()='Materialize']").click()
    _run_succeeds(browser, _launched_run_url(browser, links_before))

    # One data-scale partition of the first partitioned asset, picked in the partition dialog.
    _open(browser, f"{dagster_dev}/assets/training_mixture")
    browser.find_element(By.XPATH, "//button[normalize-space()='Materialize…']").click()

    def partition_item():
        # The dialog reads the partitions before its selector opens; on a loaded machine a first
        # click can land before that, so click again until the item shows.
        items = browser.find_elements(By.XPATH, "//*[@role='menuitem'][.//span[normalize-space()='small']]")
        if items:
            return items[0]
        for selector in browser.find_elements(By.CSS_SELECTOR, "[class*='TagSelector_tagSelectorContainer']"):
            selector.click()  # the dialog may not have rendered its selector yet: the next round tries again
        return None

    browser.implicitly_wait(0)
    try:
        _wait_for(partition_item, 90, "the partition 'small' in the dialog's selector").click()
    finally:
        browser.implicitly_wait(10)
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


def _graph_context_menu(browser, item: str) -> bool:
    """Picks `item` from the lineage graph's context menu (right click on the graph's background, at
    its top left corner, which a freshly loaded graph leaves empty), then reloads the page, which fits
    the new graph into view; False, and the menu closed, when the menu has no such item (e.g. the
    groups are already expanded)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    # The graph's top left corner, just below the filter box above it (offsets are from the box's centre).
    search = browser.find_element(By.XPATH, "//*[normalize-space(text())='Search and filter assets']")
    ActionChains(browser).move_to_element_with_offset(search, -search.size["width"] // 2 + 10, search.size["height"] // 2 + 40).context_click().perform()
    entries = _wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "[role='menuitem']"), PAGE_TIMEOUT_S, "the graph's context menu")
    entry = next((e for e in entries if e.text.startswith(item)), None)
    if entry is None:
        ActionChains(browser).send_keys(Keys.ESCAPE).perform()
        return False
    entry.click()
    browser.refresh()
    _wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "svg:has(foreignObject) foreignObject"), PAGE_TIMEOUT_S, "the lineage graph")
    return True


def _boxes(browser, kind: str) -> list[tuple[str, float, float, float, float]]:
    """(label, x, y, width, height) of the graph's expanded group boxes ("group") or asset nodes ("asset")."""
    from selenium.webdriver.common.by import By

    browser.implicitly_wait(0)
    try:
        found = []
        for node in browser.find_elements(By.CSS_SELECTOR, "svg:has(foreignObject) foreignObject"):
            if kind == "group":
                labels = [e.get_attribute("data-tooltip") for e in node.find_elements(By.CSS_SELECTOR, "[class*='ExpandedGroupNode'] [data-tooltip]")]
            else:
                labels = [e.text for e in node.find_elements(By.CSS_SELECTOR, "[class*='AssetNode_assetName']")]
            if labels:
                found.append((labels[0], *(float(node.get_attribute(a)) for a in ("x", "y", "width", "height"))))
        return found
    finally:
        browser.implicitly_wait(10)


def _shown_as(name: str, shown: str) -> bool:
    """The graph shortens long names with an ellipsis in the middle (official_m…_scores)."""
    if "…" not in shown:
        return name == shown
    head, tail = shown.split("…", 1)
    return name.startswith(head) and name.endswith(tail) and len(name) > len(head) + len(tail)


def test_two_experiments_side_by_side_in_the_lineage_graph(browser, dagster_dev, presets):
    from selenium.webdriver.common.by import By

    expected_defs = build_definitions([Experiment(str(presets["primary"]), primary=True), Experiment(str(presets["second"]))])
    expected: dict[str, set[str]] = {}
    for node in expected_defs.resolve_asset_graph().asset_nodes:
        expected.setdefault(node.group_name, set()).add(node.key.path[-1])
    prefix = Experiment(str(presets["second"])).name
    assert {group for group in expected if group.startswith(f"{prefix}__")} == {f"{prefix}__{g}" for g in ("data", "training", "evaluation")}

    # The second experiment's first asset, from its own page: it runs on its own preset, into its own folder.
    _open(browser, f"{dagster_dev}/assets/{prefix}/raw_corpora")
    browser.find_element(By.XPATH, "//button[normalize-space()='Materialize']").click()
    links_before = _run_links(browser)
    browser.find_element(By.XPATH, "//button[normalize-space()='Confirm']").click()
    _run_succeeds(browser, _launched_run_url(browser, links_before))
    second = ArtifactPaths(load_config(presets["second"]).experiment_dir)
    assert second.raw_pairs.exists() and second.root.name == SECOND
    assert second.root.parent == ArtifactPaths(load_config(presets["primary"]).experiment_dir).root.parent

    # The whole graph, every group expanded, laid out top to bottom: the experiments stand side by side.
    # The graph's settings (orientation, folded groups) live in the browser's local storage: start
    # from the defaults, whatever the tests before left there, and leave the defaults behind.
    browser.set_window_size(1800, 1200)
    try:
        _open(browser, f"{dagster_dev}/asset-groups")
        browser.execute_script("window.localStorage.clear()")
        _open(browser, f"{dagster_dev}/asset-groups")
        _wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "svg:has(foreignObject) foreignObject"), PAGE_TIMEOUT_S, "the lineage graph")
        # Vertical first: the folded graph fits into view, so its corner is free for the next right click.
        vertical = _graph_context_menu(browser, "Change graph to vertical orientation")
        _graph_context_menu(browser, "Expand all groups")
        total = sum(len(names) for names in expected.values())
        _wait_for(lambda: len(_boxes(browser, "asset")) == total and len(_boxes(browser, "group")) == len(expected),
                  PAGE_TIMEOUT_S, f"{total} assets in {len(expected)} expanded groups in the lineage graph")
        groups, shown = _boxes(browser, "group"), {}
        for name, x, y, width, height in _boxes(browser, "asset"):
            centre = (x + width / 2, y + height / 2)
            inside = [g for g in groups if g[1] <= centre[0] <= g[1] + g[3] and g[2] <= centre[1] <= g[2] + g[4]]
            owner = min(inside, key=lambda g: g[3] * g[4])[0]  # the innermost box that holds the node
            shown.setdefault(owner, []).append(name)
        assert set(shown) == set(expected), shown
        for group, names in expected.items():
            assert len(shown[group]) == len(names) and all(any(_shown_as(n, s) for s in shown[group]) for n in names), (group, shown[group])
        time.sleep(2)  # the materialization status of the nodes
        SCREENSHOT.parent.mkdir(exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))
        assert vertical
    finally:
        browser.execute_script("window.localStorage.clear()")
        browser.set_window_size(1600, 1000)

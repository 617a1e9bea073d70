"""Decks in a real browser: headless Chromium opens each deck the library writes, the way a user opens
``deck.html``, and the tests check what a user sees there.

Decks come from real local flytekit runs (``@task(enable_deck=True)``) with the real backends: W&B
offline, memray, whylogs. For each deck: no console errors (memray's report runs in an ``<iframe
srcdoc>``, whose console is in the same log), no request leaves the machine, and the text a user looks
for is on screen. Screenshots go to ``<pytest basetemp>/deck-screenshots`` (the path is printed and
shown in the warnings summary); ``UPDATE_DECK_SCREENSHOTS=1`` also copies them to ``docs/screenshots``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flytekit import task
from flytekit.core.context_manager import FlyteContextManager
from flytekit.deck.deck import _get_deck

from . import browser as web
from .conftest import _SCRUBBED_ENV

MiB = 1024 * 1024
DECK_FILE = "deck.html"
# flytekit's own deck.html template links Google Fonts: flytekit's request, not one a deck makes.
FLYTEKIT_FONTS = "https://fonts.googleapis.com/css?family=Lato:300,400,700%7COpen+Sans:400,700"
PROJECT, RUN_NAME, METRIC = "browser-deck", "browser-run", "browser_loss"


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[web.Browser]:
    reason = web.missing()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the browser tests: {reason}", pytrace=False)
        pytest.skip(f"no browser: {reason}")
    basetemp = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one folder for the whole run, not one per worker
        basetemp = basetemp.parent
    screenshots = basetemp / "deck-screenshots"
    chromium = web.Browser(tmp_path_factory.mktemp("chromium"), screenshots)
    print(f"deck screenshots: {screenshots}")
    (basetemp / "deck-screenshots.txt").write_text(f"{screenshots}\n", encoding="utf-8")
    warnings.warn(f"deck screenshots are in {screenshots}", UserWarning, stacklevel=1)
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """conftest's per-test isolation, for the module-scoped runs below: tracking dir and $HOME in tmp."""
    root = tmp_path_factory.mktemp("decks")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLYTE_CTX_TRACKING_DIR", str(root / "tracking"))
        patch.setenv("HOME", str(root / "home"))
        (root / "home").mkdir()
        patch.delenv("FLYTE_CTX_TRACKING_MODE", raising=False)
        for name in _SCRUBBED_ENV:
            patch.delenv(name, raising=False)
        yield root


def _decks() -> dict[str, str]:
    return {deck.name: deck.html for deck in FlyteContextManager.current_context().user_space_params.decks}


def allocate_join_buffers(megabytes: int) -> list[bytearray]:
    """The user's function the flame graph must name."""
    return [bytearray(MiB) for _ in range(megabytes)]


@pytest.fixture(scope="module")
def wandb_decks(isolated: Path) -> dict[str, str]:
    from flyte_ctx_tracking import wandb_session

    pages: dict[str, str] = {}

    @task(enable_deck=True)
    def train() -> None:
        import wandb

        with wandb_session(project=PROJECT, name=RUN_NAME, mode="offline"):
            for step in range(60):  # a training loop's loss curve
                wandb.log({METRIC: 1.0 / (1 + step) + 0.02 * (step % 5)})
        pages.update(_decks())

    train()
    return pages


@pytest.fixture(scope="module")
def memray_decks(isolated: Path) -> dict[str, str]:
    from flyte_ctx_tracking import memray_profile

    pages: dict[str, str] = {}

    @task(enable_deck=True)
    def join() -> None:
        with memray_profile("join"):
            kept = allocate_join_buffers(8)
        with memray_profile("table", memray_html_reporter="table"):
            kept += allocate_join_buffers(4)
        del kept
        pages.update(_decks())
        # The whole page as flytekit writes it to deck.html: one tab per deck, only the first one shown.
        pages[DECK_FILE] = _get_deck(FlyteContextManager.current_context().user_space_params, ignore_jupyter=True)

    join()
    return pages


@pytest.fixture(scope="module")
def whylogs_decks(isolated: Path) -> dict[str, str]:
    import numpy as np
    import pandas as pd

    from flyte_ctx_tracking import whylogs_profile
    from flyte_ctx_tracking.sessions.whylogs._compat import import_whylogs

    import_whylogs()
    from whylogs.core.constraints.factories import greater_than_number, no_missing_values

    rng = np.random.default_rng(0)
    country = rng.choice(["fr", "de", "it"], 500).astype(object)
    country[::10] = None
    reference = pd.DataFrame({"amount": rng.normal(100.0, 10.0, 500), "country": country})
    rules = [greater_than_number(column_name="amount", number=0), no_missing_values(column_name="country")]
    pages: dict[str, str] = {}

    @task(enable_deck=True)
    def ingest() -> None:
        with whylogs_profile("tx", reference=reference, constraints=rules) as prof:
            prof.log(reference.assign(amount=reference["amount"] + 30.0))
        pages.update(_decks())

    ingest()
    return pages


def open_deck(browser: web.Browser, name: str, html: str, *, settled: str | None = None) -> web.Visit:
    """Open the deck, screenshot it, and check what every deck must do: no errors, nothing fetched.

    ``settled``: a script, run in the memray frame, that is true once its drawing stopped moving.
    """
    from selenium.webdriver.support.ui import WebDriverWait

    visit = browser.open(name, web.page(html))
    if settled is not None:
        driver = browser.driver
        driver.switch_to.frame(memray_frame(browser))
        try:
            WebDriverWait(driver, web.TIMEOUT).until(lambda d: d.execute_script(settled))
        finally:
            driver.switch_to.default_content()
    browser.screenshot(name, copy_to=web.screenshot_copies())
    assert visit.severe == [], f"console errors in the {name} deck: {visit.severe}"
    assert visit.external_requests == [], f"the {name} deck reached out: {visit.external_requests}"
    return visit


def visible_text(browser: web.Browser) -> str:
    from selenium.webdriver.common.by import By

    return str(browser.driver.find_element(By.TAG_NAME, "body").text)


# ---------------------------------------------------------------------------------------- the harness itself
def test_the_harness_sees_errors_inside_srcdoc_frames_and_requests_leaving_the_machine(browser: web.Browser) -> None:
    frame = web.page("<script>throw new Error('inside the frame')</script>").replace("'", "&#39;")
    visit = browser.open(
        "harness",
        web.page(
            f"<iframe srcdoc='{frame}'></iframe><script>fetch('http://deck.invalid/x').catch(() => {{}})</script>"
        ),
    )
    assert any("inside the frame" in message for message in visit.severe), visit.console
    assert "http://deck.invalid/x" in visit.external_requests, visit.requests


# ---------------------------------------------------------------------------------------- tracker card
def test_the_wandb_card_shows_the_run_and_how_to_upload_it(
    browser: web.Browser, wandb_decks: dict[str, str], isolated: Path
) -> None:
    html = wandb_decks[f"Weights & Biases: {RUN_NAME}"]
    open_deck(browser, "wandb-run-card", html)
    text = visible_text(browser)
    assert "Weights & Biases run (finished)" in text
    assert f"name {RUN_NAME}" in text and f"project {PROJECT}" in text and "mode offline" in text
    assert "run id" in text
    run_dir = isolated / "tracking" / "wandb" / "offline-run-"
    assert f"Recorded offline in {run_dir}" in text, text
    assert f"Upload it with:\nwandb sync {run_dir}" in text, text


def test_the_wandb_card_shows_the_logged_metric_with_a_chart(browser: web.Browser, wandb_decks: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    browser.open("wandb-metric", web.page(wandb_decks[f"Weights & Biases: {RUN_NAME}"]))
    assert METRIC in visible_text(browser)
    charts = browser.driver.find_elements(By.CSS_SELECTOR, "svg")
    assert len(charts) == 1 and charts[0].size["width"] > 0  # one logged series, one chart on screen


# ---------------------------------------------------------------------------------------- memray
_FRAME_SIZES = """
const frame = arguments[0], doc = frame.contentDocument, body = doc.body;
const margin = parseFloat(getComputedStyle(body).marginBottom) || 0;
return {
    frame: frame.getBoundingClientRect().height,
    viewport: frame.contentWindow.innerHeight,
    content: Math.ceil(body.getBoundingClientRect().bottom + doc.defaultView.scrollY + margin),
    style: frame.style.height,
};
"""


# The flame graph animates to its width after the frame is resized: the root bar spans the chart when done.
_FLAMES_DRAWN = """
const chart = document.querySelector('#chart'), bar = document.querySelector('#chart svg g rect');
return !!(chart && bar) && bar.getBoundingClientRect().width >= 0.9 * chart.getBoundingClientRect().width;
"""


def memray_frame(browser: web.Browser) -> Any:
    from selenium.webdriver.common.by import By

    return browser.driver.find_element(By.CSS_SELECTOR, "iframe[title^='memray']")


def test_the_memray_flame_graph_renders_and_names_the_users_function(
    browser: web.Browser, memray_decks: dict[str, str]
) -> None:
    from selenium.webdriver.common.by import By

    open_deck(browser, "memray-flamegraph", memray_decks["Memray: join"], settled=_FLAMES_DRAWN)
    assert "Memray: join (finished)" in visible_text(browser)
    browser.driver.switch_to.frame(memray_frame(browser))
    try:
        text = browser.driver.find_element(By.TAG_NAME, "body").text
    finally:
        browser.driver.switch_to.default_content()
    assert "flamegraph report" in text
    assert "allocate_join_buffers" in text, text  # the call line of the user's function, drawn in the graph


def test_the_memray_table_renders_the_allocation_sites(browser: web.Browser, memray_decks: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    open_deck(browser, "memray-table", memray_decks["Memray: table"])
    browser.driver.switch_to.frame(memray_frame(browser))
    try:
        text = browser.driver.find_element(By.TAG_NAME, "body").text
    finally:
        browser.driver.switch_to.default_content()
    assert "table report" in text
    assert Path(__file__).name in text, text  # the site in this file that allocated the blocks


@pytest.mark.parametrize("deck", ["Memray: join", "Memray: table"])
def test_the_memray_frame_fits_its_report(browser: web.Browser, memray_decks: dict[str, str], deck: str) -> None:
    browser.open(f"frame-{deck.split()[-1]}", web.page(memray_decks[deck]))
    sizes = browser.driver.execute_script(_FRAME_SIZES, memray_frame(browser))
    print(f"{deck}: {sizes}")
    assert sizes["style"] not in ("", "900px", "480px"), sizes  # the onload handler resized the frame
    assert sizes["content"] <= sizes["viewport"], f"the report scrolls inside its frame: {sizes}"
    assert sizes["viewport"] - sizes["content"] <= 40, f"blank band under the report: {sizes}"


def test_in_flytekits_deck_page_the_memray_frame_fits_its_report_when_its_tab_is_opened(
    browser: web.Browser, memray_decks: dict[str, str]
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    visit = browser.open("deck-page", memray_decks[DECK_FILE])
    assert visit.external_requests == [FLYTEKIT_FONTS], visit.requests
    assert [m for m in visit.severe if FLYTEKIT_FONTS not in m] == [], visit.severe
    tab = next(li for li in browser.driver.find_elements(By.CSS_SELECTOR, "li") if li.text == "Memray: join")
    tab.click()
    WebDriverWait(browser.driver, web.TIMEOUT).until(lambda _: memray_frame(browser).is_displayed())
    sizes = browser.driver.execute_script(_FRAME_SIZES, memray_frame(browser))
    print(f"deck.html, Memray: join tab: {sizes}")
    browser.screenshot("deck-page-memray-tab")
    assert sizes["content"] <= sizes["viewport"], f"the report scrolls inside its frame: {sizes}"
    assert sizes["viewport"] - sizes["content"] <= 40, f"blank band under the report: {sizes}"


# ---------------------------------------------------------------------------------------- whylogs
@pytest.mark.parametrize(
    ("deck", "shot", "expected"),
    [
        ("whylogs: tx", "whylogs-summary", ["whylogs profile: tx", "500 rows logged", "amount", "country"]),
        ("whylogs drift: tx", "whylogs-drift", ["1 of 2 columns drifted: amount", "amount drift", "country no drift"]),
        (
            "whylogs constraints: tx",
            "whylogs-constraints",
            ["1 of 2 constraints passed", "amount greater than number 0 PASS", "country has no missing values FAIL"],
        ),
    ],
)
def test_the_whylogs_decks_show_their_tables_and_fetch_nothing(
    browser: web.Browser, whylogs_decks: dict[str, str], deck: str, shot: str, expected: list[str]
) -> None:
    from selenium.webdriver.common.by import By

    open_deck(browser, shot, whylogs_decks[deck])  # the interactive report stays inert: no request
    text = visible_text(browser)
    for words in expected:
        assert words in text, f"{words!r} not on screen: {text}"
    first_column = [cell.text for cell in browser.driver.find_elements(By.CSS_SELECTOR, "tbody tr td:first-child")]
    assert {"amount", "country"} <= set(first_column) or deck.startswith("whylogs constraints"), first_column
    # whylogs' own report is a template until asked for: nothing of it is in the live page.
    assert browser.driver.find_elements(By.CSS_SELECTOR, "iframe, script[src], link[href]") == []

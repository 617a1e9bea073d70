"""A headless Chromium for tests: open a deck the way a user opens ``deck.html`` and report what happened.

Debian's ``chromium`` and ``chromium-driver`` packages are used (``.ci/run`` installs them); selenium is
pointed at ``/usr/bin/chromedriver`` so that selenium-manager never downloads a driver. Everything runs
offline: the options below switch off Chromium's own background traffic.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "apt-get install chromium chromium-driver"
WINDOW = (1200, 900)
TIMEOUT = 30.0  # seconds: a deck page loads in about 2 s here, memray's inlined scripts included
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:")
_OPTIONS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    absent = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if absent:
        return f"{' and '.join(absent)} not found; install them with `{INSTALL_HINT}`"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed; `pip install -e '.[dev]'`"
    return None


def page(body: str) -> str:
    """``body`` in a minimal page, as flytekit's ``deck.html`` has it."""
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{body}</body></html>"


@dataclass
class Visit:
    """What the browser logged while it opened one page."""

    url: str
    console: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    @property
    def severe(self) -> list[str]:
        """Console errors (script errors, failed loads), iframes' included."""
        return [entry["message"] for entry in self.console if entry.get("level") == "SEVERE"]

    @property
    def external_requests(self) -> list[str]:
        """Requests for anything that is not in the page itself or on this disk."""
        return [url for url in self.requests if not url.startswith(LOCAL_SCHEMES)]


class Browser:
    """One headless Chromium; pages are written under ``pages`` and opened as ``file://``."""

    def __init__(self, workdir: Path, screenshots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.pages = workdir / "pages"
        self.pages.mkdir(parents=True, exist_ok=True)
        self.screenshots = screenshots
        screenshots.mkdir(parents=True, exist_ok=True)
        options = webdriver.ChromeOptions()
        for option in _OPTIONS:
            options.add_argument(option)
        options.add_argument(f"--user-data-dir={workdir / 'profile'}")
        options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
        options.binary_location = str(CHROMIUM)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        self.driver.set_page_load_timeout(TIMEOUT)
        self.driver.get("about:blank")
        self._drain()  # the start page's own requests (chrome://) are not a deck's

    def close(self) -> None:
        self.driver.quit()

    def _drain(self) -> tuple[list[dict[str, Any]], list[str]]:
        console = self.driver.get_log("browser")
        requests = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                requests.append(message["params"]["request"]["url"])
        return console, requests

    def open(self, name: str, html: str) -> Visit:
        """Write ``html`` (a whole page) as ``name``.html, open it and wait until it and its frames loaded."""
        from selenium.webdriver.support.ui import WebDriverWait

        path = self.pages / f"{name}.html"
        path.write_text(html, encoding="utf-8")
        self.driver.get("about:blank")
        self._drain()
        self.driver.get(path.as_uri())
        WebDriverWait(self.driver, TIMEOUT).until(
            lambda d: d.execute_script(
                "return document.readyState === 'complete' && [...document.querySelectorAll('iframe')]"
                ".every(f => f.contentDocument && f.contentDocument.readyState === 'complete')"
            )
        )
        console, requests = self._drain()
        return Visit(url=path.as_uri(), console=console, requests=requests)

    def screenshot(self, name: str, *, copy_to: Path | None = None) -> Path:
        """Save the viewport as ``name``.png; also copy it to ``copy_to`` when given."""
        target = self.screenshots / f"{name}.png"
        assert self.driver.save_screenshot(str(target)), f"no screenshot for {name}"
        if copy_to is not None:
            copy_to.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(target, copy_to / target.name)
        return target


def screenshot_copies() -> Path | None:
    """Where commit-ready copies go: ``docs/screenshots`` when ``UPDATE_DECK_SCREENSHOTS=1``, else nowhere."""
    if os.environ.get("UPDATE_DECK_SCREENSHOTS") == "1":
        return Path(__file__).resolve().parent.parent / "docs" / "screenshots"
    return None

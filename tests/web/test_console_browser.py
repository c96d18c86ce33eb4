"""The console in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Logs in, opens every page, follows a section from the county map, switches language, and keeps a
full-page screenshot of every page in ``out/screenshots/console/`` (kept by CI as artefacts).
Skipped only outside CI when no Chromium is installed; under ``CI=true`` a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from sanduan.central.store import open_store
from sanduan.central.web.app import build_app

from .conftest import POLLUTED, password

pytestmark = [pytest.mark.process]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "out" / "screenshots" / "console"
CHROMIUM = os.environ.get("SANDUAN_CHROMIUM") or shutil.which("chromium")

if CHROMIUM is None:
    if os.environ.get("CI"):
        raise RuntimeError("no chromium for the browser tests: `apt-get install chromium`")
    pytest.skip("no chromium installed (apt-get install chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(sqlite_console: str, example_county: object) -> Iterator[str]:
    store = open_store(sqlite_console)
    app = build_app(store, example_county, secret="b" * 40)  # type: ignore[arg-type]
    port = _free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=srv.run, name="console", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the console did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _shot(page: object, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def _login(page: object, base: str, name: str) -> None:
    page.goto(f"{base}/")  # type: ignore[attr-defined]
    assert "/login" in page.url  # type: ignore[attr-defined]
    page.fill("input[name=user]", name)  # type: ignore[attr-defined]
    page.fill("input[name=password]", password(name))  # type: ignore[attr-defined]
    page.click("form.login button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url(f"{base}/")  # type: ignore[attr-defined]


def test_viewer_walks_the_console(server: str, browser: object, sqlite_console: str) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page.goto(f"{server}/stations")
    _shot(page, "login")
    page.fill("input[name=user]", "vic")
    page.fill("input[name=password]", "wrong-password")
    page.click("form.login button[type=submit]")
    assert page.locator("p.error").inner_text() == "用户名或密码错误"
    _login(page, server, "vic")
    # the county: every section on the map, the rates
    assert page.locator("svg.county-map a.section-link").count() == 13
    assert page.locator("#kpi-compliance").inner_text().endswith("%")
    _shot(page, "county")
    # follow the polluted section from the map
    page.locator(f'svg.county-map a[data-section="{POLLUTED}"]').click()
    page.wait_for_url(f"**/section/{POLLUTED}?month=2026-05")
    assert page.locator("#section-class").inner_text() == "IV"
    assert page.locator("#chart-NH3-N-hour svg line.target").count() == 1
    _shot(page, "section")
    page.click("nav.periods a:text('2026-05')")
    page.wait_for_load_state()
    # stations, with a filter
    page.click("header nav a[href='/stations']")
    page.check("input[value=offline]")
    page.click("form.filters button")
    page.wait_for_url("**/stations?filter=offline*")
    assert page.locator("#stations tbody tr").count() >= 1
    _shot(page, "stations")
    page.goto(f"{server}/stations")
    _shot(page, "stations-all")
    # the ledger, with a row's evidence opened
    page.click("header nav a[href='/ledger']")
    first = page.locator("#ledger details").first
    first.locator("summary").click()
    assert first.locator("table.mini").count() >= 1
    _shot(page, "ledger")
    for path in ("problems", "review"):
        page.goto(f"{server}/{path}")
        _shot(page, path)
    # English
    page.click("header a.lang")
    page.wait_for_load_state()
    assert "Stations" in page.locator("header nav").inner_text()
    page.goto(f"{server}/")
    _shot(page, "county-en")
    page.click("header a.lang")
    # a viewer may not see the audit trail
    assert page.goto(f"{server}/audit").status == 403
    page.click("header form button")
    page.wait_for_url("**/login")
    page.close()


def test_admin_sees_every_write_with_its_actor(server: str, browser: object) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    _login(page, server, "ada")
    page.goto(f"{server}/audit")
    text = page.locator("#audit").inner_text()
    assert "ada" in text and "login" in text
    _shot(page, "audit")
    page.close()


def test_reviewer_acts_through_forms(server: str, browser: object) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    _login(page, server, "rui")
    # a problem still at 发现: open it from the list, assign it (交办) with a note
    page.click("header nav a[href='/problems']")
    page.select_option("select[name=state]", "discovered")
    page.click("form.filters button")
    _shot(page, "problems-list")
    page.locator("#problems tbody a").first.click()
    page.wait_for_url("**/problems/*")
    assert page.locator("#problem-state").get_attribute("data-state") == "discovered"
    page.select_option("#problem-form select[name=action]", "assign")
    page.fill("#problem-form input[name=note]", "browser: assigned to the town")
    page.click("#problem-form button")
    page.wait_for_load_state()
    assert page.locator("#problem-state").get_attribute("data-state") == "assigned"
    events = page.locator("#problem-events").inner_text()
    assert "browser: assigned to the town" in events and "rui" in events
    _shot(page, "problem")
    # data review: mark an hour invalid
    page.click("header nav a[href='/review']")
    page.select_option("#review-form select[name=station]", "CX-ST-04")
    page.select_option("#review-form select[name=parameter]", "TP")
    page.select_option("#review-form select[name=level]", "hour")
    page.fill("#review-form input[name=at]", "2026-05-12T08")
    page.select_option("#review-form select[name=reason]", "abnormal-value")
    page.fill("#review-form input[name=note]", "browser: spike checked")
    page.click("#review-form button")
    page.wait_for_selector("#review-done")
    assert "1/1 → 0/1" in page.locator("#review-done").inner_text()
    assert "browser: spike checked" in page.locator("#review-marks").inner_text()
    _shot(page, "review")
    page.close()

"""The console over HTTP (no browser): log-in, roles, CSRF, every page, on both stores."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from sanduan.central.store import open_store
from sanduan.central.web.app import build_app
from sanduan.central.web.auth import Users

from .conftest import POLLUTED, ConsoleData, password

SECRET = "k" * 40


@pytest.fixture
def client(console_data: ConsoleData) -> Iterator[TestClient]:
    store = open_store(console_data.url)
    app = build_app(store, console_data.county, secret=SECRET)
    try:
        with TestClient(app, base_url="http://console.test") as c:
            yield c
    finally:
        store.close()


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m is not None, "no CSRF token in the form"
    return m.group(1)


def login(c: TestClient, name: str, next_path: str = "/") -> None:
    page = c.get(f"/login?next={next_path}")
    r = c.post(
        "/login",
        data={
            "user": name,
            "password": password(name),
            "csrf": csrf_of(page.text),
            "next": next_path,
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == next_path


def test_every_page_needs_a_login(client: TestClient) -> None:
    for path in ("/", "/stations", f"/section/{POLLUTED}", "/ledger", "/problems", "/audit"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login?next=")
    assert client.get("/healthz").text == "ok"


def test_wrong_password_and_missing_csrf_are_refused(client: TestClient) -> None:
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"user": "vic", "password": "nope-nope", "csrf": token})
    assert r.status_code == 401
    assert "用户名或密码错误" in r.text
    r = client.post("/login", data={"user": "vic", "password": password("vic")})
    assert r.status_code == 400
    r = client.post("/login", data={"user": "nobody", "password": "x" * 10, "csrf": token})
    assert r.status_code == 401
    assert client.get("/", follow_redirects=False).status_code == 303


def test_next_is_never_another_site(client: TestClient) -> None:
    token = csrf_of(client.get("/login").text)
    r = client.post(
        "/login",
        data={"user": "vic", "password": password("vic"), "csrf": token, "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/"


def test_county_page(client: TestClient, console_data: ConsoleData) -> None:
    login(client, "vic")
    page = client.get("/").text
    county = console_data.county
    for sec in county.sections.values():
        assert f'data-section="{sec.id}"' in page
        assert f'href="/section/{sec.id}?month=2026-05"' in page
    assert "功能达标率" in page and "优良率" in page
    # the rates are the stored month's: recompute them from the assessments table
    store = open_store(console_data.url)
    try:
        rows = store.query(
            "SELECT section, grade, meets_target FROM assessments"
            " WHERE period = 'month' AND label = '2026-05' AND valid"
            if store.dialect == "postgresql"
            else "SELECT section, grade, meets_target FROM assessments"
            " WHERE period = 'month' AND label = '2026-05' AND valid = 1"
        )
    finally:
        store.close()
    assessed = {s.id for s in county.sections.values() if s.assessed}
    graded = [r for r in rows if r[0] in assessed and r[1] is not None]
    assert graded
    compliance = 100 * sum(1 for r in graded if r[2]) / len(graded)
    good = 100 * sum(1 for r in graded if r[1] <= 3) / len(graded)
    assert f'id="kpi-compliance">{compliance:.1f} %' in page
    assert f'id="kpi-good">{good:.1f} %' in page
    # the polluted outflow is class IV against a class III target: ringed, marked 未达标
    row = page[page.index(f'href="/section/{POLLUTED}?month=2026-05">') :]
    row = row[: row.index("</tr>")]
    assert ">IV<" in row and "未达标" in row
    assert "劣V" in page  # the legend names the worst class


def test_section_page(client: TestClient) -> None:
    login(client, "vic")
    page = client.get(f"/section/{POLLUTED}?month=2026-05").text
    assert 'id="chart-NH3-N-hour"' in page and 'id="chart-NH3-N-day"' in page
    assert "Zonghan" in page and "mg/L" in page
    assert "目标类别 III" in page  # the target line, labelled
    assert client.get("/section/NO-SUCH").status_code == 404
    # maintenance flags of the third section's station show on its charts
    assert 'class="flag">M<' in client.get("/section/ST-ZH-IN?month=2026-05").text


def test_ledger_page_has_evidence(client: TestClient) -> None:
    login(client, "vic")
    page = client.get("/ledger?period=2026-05").text
    assert 'id="ledger"' in page
    assert "<details>" in page and "c(D)" in page
    assert "本期无数据" in client.get("/ledger?period=2019-01").text


def test_stations_page_and_filters(client: TestClient, console_data: ConsoleData) -> None:
    login(client, "vic")
    page = client.get("/stations").text
    for st in console_data.county.stations:
        assert st in page
    offline = client.get("/stations?filter=offline").text
    shown = re.findall(r'<small class="muted">([^<]+)</small>', offline)
    assert shown and "CX-ST-05" in shown  # the silent station never reported
    assert len(shown) < len(console_data.county.stations)


def test_roles_and_audit(client: TestClient, console_data: ConsoleData) -> None:
    login(client, "vic")
    assert client.get("/audit").status_code == 403
    client.cookies.clear()
    login(client, "ada")
    page = client.get("/audit").text
    assert ">login<" in page and ">ada<" in page


def test_a_disabled_account_loses_its_session(
    client: TestClient, console_data: ConsoleData
) -> None:
    login(client, "rui")
    assert client.get("/").status_code == 200
    store = open_store(console_data.url)
    try:
        users = Users(store)
        assert users.disable("rui", actor="test")
        r = client.get("/", follow_redirects=False)
        assert r.status_code == 303
        users.add("rui", users_role("reviewer"), password("rui"), actor="test")
    finally:
        store.close()


def users_role(name: str):  # type: ignore[no-untyped-def]
    from sanduan.central.web.auth import Role

    return Role.parse(name)


def test_english_switch(client: TestClient) -> None:
    login(client, "vic")
    r = client.get("/lang/en?back=/stations", follow_redirects=False)
    assert r.headers["location"] == "/stations"
    client.cookies.set("lang", "en")
    page = client.get("/").text
    assert "Target compliance" in page and "功能达标率)" in page


def test_logout_needs_the_token(client: TestClient) -> None:
    login(client, "vic")
    client.post("/logout", data={"csrf": "wrong"})
    assert client.get("/", follow_redirects=False).status_code == 200
    token = csrf_of(client.get("/").text)
    client.post("/logout", data={"csrf": token})
    assert client.get("/", follow_redirects=False).status_code == 303


# --- problems and data review (the county's daily work) -------------------------------------


def test_problems_list_and_a_reviewer_assigns_one(
    client: TestClient, console_data: ConsoleData
) -> None:
    login(client, "rui")
    page = client.get("/problems?state=all").text
    ids = [int(x) for x in re.findall(r'<a href="/problems/(\d+)">', page)]
    assert ids, "compute discovered no problem in the month"
    assert "NH3-N" in page or "w21003" in page  # the pollution event at Zonghan's outflow
    pid = ids[0]
    detail = client.get(f"/problems/{pid}").text
    assert 'id="problem-form"' in detail
    r = client.post(
        f"/problems/{pid}",
        data={"csrf": csrf_of(detail), "action": "assign", "note": "please check the outfall"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == f"/problems/{pid}"
    after = client.get(f"/problems/{pid}").text
    assert "please check the outfall" in after and ">rui<" in after
    assert "已交办" in after or "交办" in after
    # a lifecycle action the rules refuse comes back as a message, nothing recorded
    r = client.post(
        f"/problems/{pid}",
        data={"csrf": csrf_of(after), "action": "close"},
        follow_redirects=False,
    )
    assert "error=" in r.headers["location"]
    # without the token nothing happens
    r = client.post(f"/problems/{pid}", data={"action": "rectify"}, follow_redirects=False)
    assert r.status_code == 400


def test_a_viewer_cannot_act(client: TestClient) -> None:
    login(client, "vic")
    page = client.get("/problems?state=all").text
    pid = re.findall(r'<a href="/problems/(\d+)">', page)[0]
    detail = client.get(f"/problems/{pid}").text
    assert 'id="problem-form"' not in detail
    r = client.post(f"/problems/{pid}", data={"csrf": csrf_of(detail), "action": "assign"})
    assert r.status_code == 403
    review = client.get("/review").text
    assert 'id="review-form"' not in review
    r = client.post("/review", data={"csrf": csrf_of(review), "action": "invalidate"})
    assert r.status_code == 403


def test_a_reviewer_marks_a_day_invalid(client: TestClient) -> None:
    login(client, "rui")
    page = client.get("/review").text
    form = {
        "csrf": csrf_of(page),
        "action": "invalidate",
        "station": "CX-ST-03",
        "parameter": "NH3-N",
        "level": "day",
        "at": "2026-05-07",
        "reason": "instrument-fault",
        "note": "drift found at calibration",
    }
    r = client.post("/review", data=form, follow_redirects=False)
    assert r.status_code == 303 and "done=" in r.headers["location"], r.headers["location"]
    after = client.get(r.headers["location"]).text
    assert 'id="review-done"' in after
    assert "drift found at calibration" in after and ">rui<" in after
    # 24 hourly NH3-N readings that day were valid, none are after the mark
    assert "24/24 → 0/24" in after
    # a mark the rules refuse (a station not in the county) is said, not stored
    bad = dict(form, csrf=csrf_of(after), station="NOPE")
    r = client.post("/review", data=bad, follow_redirects=False)
    assert "error=" in r.headers["location"]

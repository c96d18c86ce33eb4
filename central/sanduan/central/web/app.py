"""The console: a Starlette application over the central store, pages drawn on the server.

``build_app(store, county)`` returns the ASGI application; ``sanduan central console`` serves it
with uvicorn at ``[console] listen``. Pages (Chinese by default, ``/lang/en`` switches):

=====================  ==========================================================  ========
path                   what                                                        role
=====================  ==========================================================  ========
``/``                  the county: schematic coloured by class against target,     viewer
                       功能达标率 and 优良率, every section
``/stations``          online, last seen, buffer, oldest unacked, gaps, clock,      viewer
                       device errors; filters
``/section/{id}``      hourly and daily series with class limits and target,       viewer
                       flags, months and years
``/ledger``            the ledger of a month or year, each row with its evidence   viewer
``/problems``          problems from discovery to closure, filters; each problem's   viewer
                       events and, for reviewers, its lifecycle actions
``/review``            data review marks with before and after; the reviewers'     viewer
                       form to invalidate, restore or validate
``/audit``             every write the console made, with its actor                 admin
``/login`` ``/logout``                                                              (none)
``/healthz``           ``ok`` when the store answers (for monitoring)               (none)
=====================  ==========================================================  ========

Sessions are signed cookies (SameSite=Strict, HttpOnly); every form carries the session's CSRF
token and every POST checks it. Nothing is shown and nothing is written without a login.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sanduan.central.core.county import County
from sanduan.central.web import county_work, data, i18n, svg
from sanduan.central.web.auth import Role, User, Users, new_csrf_token, same_token
from sanduan.shared.config import ValidityConfig
from sanduan.shared.errors import SanduanError
from sanduan.shared.params import resolve
from sanduan.shared.standards import Direction, gb3838

if TYPE_CHECKING:
    from sanduan.central.store import Store

__all__ = ["TEMPLATES", "build_app", "template_env"]

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
CHART_PARAMETERS = ("DO", "CODMn", "NH3-N", "TP", "pH")
SESSION_COOKIE = "sanduan_console"


def template_env() -> Environment:
    """The one Jinja2 environment of the console (autoescaped HTML)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    return env


def _num(x: object, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


class Console:
    """The state shared by the pages: store, county, accounts, templates."""

    def __init__(self, store: Store, county: County, validity: ValidityConfig) -> None:
        self.store = store
        self.county = county
        self.validity = validity
        self.users = Users(store)
        self.env = template_env()

    # --- request helpers --------------------------------------------------------------

    def lang(self, request: Request) -> str:
        return i18n.language(request.cookies.get("lang"))

    def user(self, request: Request) -> User | None:
        name = request.session.get("user")
        if not isinstance(name, str):
            return None
        role = self.users.role_of(name)  # re-checked on every request: disabling takes effect
        return None if role is None else User(name, role)

    def csrf(self, request: Request) -> str:
        token = request.session.get("csrf")
        if not isinstance(token, str):
            token = new_csrf_token()
            request.session["csrf"] = token
        return token

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        lang = self.lang(request)
        w = i18n.words(lang)
        page = self.env.get_template(name).render(
            w=w,
            lang=lang,
            user=ctx.pop("current_user", None),
            csrf=self.csrf(request),
            path=request.url.path,
            class_name=i18n.class_names(lang),
            county=self.county,
            **ctx,
        )
        return HTMLResponse(page, status_code=status)

    def local(self, ms: int | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return data.local_time(ms, self.county.timezone, fmt)


Handler = Callable[[Console, Request, User], Response]


def page(role: Role = Role.VIEWER) -> Callable[[Handler], Callable[[Console, Request], Response]]:
    """Wrap a page: log-in required, ``role`` at least, CSRF checked on POST."""

    def wrap(fn: Handler) -> Callable[[Console, Request], Response]:
        def handler(c: Console, request: Request) -> Response:
            user = c.user(request)
            if user is None:
                target = quote(str(request.url.path), safe="/")
                return RedirectResponse(f"/login?next={target}", status_code=303)
            if user.role < role:
                w = i18n.words(c.lang(request))
                return c.render(
                    request, "message.html", 403, current_user=user, message=w["forbidden"]
                )
            return fn(c, request, user)

        return handler

    return wrap


# --- pages --------------------------------------------------------------------------------


@page()
def county_page(c: Console, request: Request, user: User) -> Response:
    labels = data.labels(c.store, "month")
    label = request.query_params.get("month") or (labels[0] if labels else None)
    rows = data.section_rows(c.store, c.county, "month", label)
    n, compliance, good = data.rates(rows)
    lang = c.lang(request)
    w = i18n.words(lang)
    schematic = svg.county_svg(
        c.county,
        {r.id: r.grade for r in rows},
        {r.id: r.meets for r in rows},
        link="/section/{id}" + (f"?month={label}" if label else ""),
        labels={"flow": w["flow"], "target": w["target"], "no-data": w["no_data"]},
        class_names=i18n.class_names(lang),
    )
    stations = data.station_rows(c.store, c.county)
    return c.render(
        request,
        "county.html",
        current_user=user,
        label=label,
        labels=labels,
        rows=rows,
        n=n,
        compliance=compliance,
        good=good,
        schematic=schematic,
        online=sum(1 for s in stations if s.online),
        station_count=len(stations),
        colour=svg.class_colour,
    )


STATION_FILTERS = ("all", "offline", "gaps", "errors", "backlog")


@page()
def stations_page(c: Console, request: Request, user: User) -> Response:
    rows = data.station_rows(c.store, c.county)
    flt = request.query_params.get("filter", "all")
    flt = flt if flt in STATION_FILTERS else "all"
    q = request.query_params.get("q", "").strip().lower()
    keep: dict[str, Callable[[data.StationRow], bool]] = {
        "all": lambda r: True,
        "offline": lambda r: not r.online,
        "gaps": lambda r: r.gaps > 0,
        "errors": lambda r: r.device_errors > 0,
        "backlog": lambda r: bool(r.buffer_depth),
    }
    shown = [
        r for r in rows if keep[flt](r) and (not q or q in r.id.lower() or q in r.name.lower())
    ]
    return c.render(
        request,
        "stations.html",
        current_user=user,
        rows=shown,
        total=len(rows),
        flt=flt,
        filters=STATION_FILTERS,
        q=q,
        local=c.local,
    )


def _limits(code_name: str, water_body: Any) -> list[tuple[int, float]]:
    item = gb3838().item(code_name)
    if item is None or item.direction not in (Direction.UPPER, Direction.LOWER):
        return []
    out: list[tuple[int, float]] = []
    for g in range(1, 6):
        lim = item.limit(g, water_body)
        if lim is not None and (not out or out[-1][1] != lim):
            out.append((g, float(lim)))
    return out


def _range_lines(code_name: str) -> list[tuple[str, float]]:
    """The two ends of a range item (pH 6..9), drawn as limit lines."""
    item = gb3838().item(code_name)
    if item is None or item.direction != Direction.RANGE:
        return []
    lo, hi = item.limits[0], item.limits[-1]
    return [(f"{lo:g}", float(lo)), (f"{hi:g}", float(hi))]


@page()
def section_page(c: Console, request: Request, user: User) -> Response:
    sid = request.path_params["sid"]
    sec = c.county.sections.get(sid)
    lang = c.lang(request)
    w = i18n.words(lang)
    if sec is None:
        return c.render(request, "message.html", 404, current_user=user, message=w["not_found"])
    months = data.labels(c.store, "month")
    years = data.labels(c.store, "year")
    year = request.query_params.get("year")
    month = None if year else (request.query_params.get("month") or (months[0] if months else None))
    label = year or month
    names = i18n.class_names(lang)
    charts: list[tuple[str, str]] = []
    if label is not None:
        start, end = data.period_bounds(label, c.county.timezone)
        levels = [("hour", w["hourly"], 3_600_000), ("day", w["daily"], 86_400_000)]
        if year:
            levels = [("day", w["daily"], 86_400_000), ("month", w["monthly"], 0)]
        for name in [p for p in CHART_PARAMETERS if p in sec.parameters] or list(sec.parameters):
            param = resolve(name)
            lims = _limits(param.name, sec.water_body)
            item = gb3838().item(param.name)
            target = item.limit(sec.target_class, sec.water_body) if lims and item else None
            for level, level_name, bucket in levels:
                s = data.series(c.store, sec.station, param.code, level=level, start=start, end=end)
                marks = (
                    data.flag_marks(
                        c.store, sec.station, param.code, start=start, end=end, bucket_ms=bucket
                    )
                    if bucket
                    else {}
                )
                chart = svg.series_svg(
                    f"{sec.name or sid} · {param.name} · {level_name}",
                    param.unit or w["dimensionless"],
                    [
                        svg.Series(
                            param.name,
                            s.t_ms,
                            [m if ok else math.nan for m, ok in zip(s.mean, s.valid, strict=True)],
                            [marks.get(t, "") for t in s.t_ms],
                        ),
                        svg.Series(
                            w["invalid"],
                            s.t_ms,
                            [math.nan if ok else m for m, ok in zip(s.mean, s.valid, strict=True)],
                            colour="#d08a2a",
                        ),
                    ],
                    [(f"{names[g]}", v) for g, v in lims] or _range_lines(param.name),
                    (f"{w['target']} {names[sec.target_class]}", target) if target else None,
                    t_range=(start, end),
                    tick_label="%m-%d" if level != "month" else "%Y-%m",
                    no_data=w["no_data"],
                )
                charts.append((f"{param.name}-{level}", chart))
    rows = data.section_rows(c.store, c.county, "year" if year else "month", label)
    row = next(r for r in rows if r.id == sid)
    return c.render(
        request,
        "section.html",
        current_user=user,
        sec=sec,
        row=row,
        label=label,
        months=months,
        years=years,
        is_year=bool(year),
        charts=charts,
        colour=svg.class_colour,
    )


@page()
def ledger_page(c: Console, request: Request, user: User) -> Response:
    months = data.labels(c.store, "month")
    years = data.labels(c.store, "year")
    label = request.query_params.get("period") or (months[0] if months else None)
    kind = "year" if label is not None and len(label) == 4 else "month"
    rows = data.ledger_rows(c.store, kind, label) if label else []
    paid = [r for r in rows if r.amount]
    return c.render(
        request,
        "ledger.html",
        current_user=user,
        label=label,
        months=months,
        years=years,
        rows=rows,
        total=sum(r.amount for r in paid),
        party=lambda p: _party(c.county, p),
    )


def _party(county: County, pid: str) -> str:
    town = county.towns.get(pid)
    if town is not None:
        return town.name or town.id
    if pid == county.fund:
        return county.fund_name or pid
    return pid


@page(Role.ADMIN)
def audit_page(c: Console, request: Request, user: User) -> Response:
    rows = c.users.recent_audit(200)
    return c.render(request, "audit.html", current_user=user, rows=rows, local=c.local)


# --- log in / out, language, health --------------------------------------------------------


def login_page(c: Console, request: Request) -> Response:
    nxt = request.query_params.get("next", "/")
    return c.render(request, "login.html", next=_safe_next(nxt), failed=False)


def _safe_next(nxt: str) -> str:
    """Only a path on this site (no scheme, no host, no protocol-relative ``//``)."""
    return nxt if nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt else "/"


async def login_post(c: Console, request: Request) -> Response:
    form = await request.form()
    if not same_token(form.get("csrf"), request.session.get("csrf")):
        w = i18n.words(c.lang(request))
        return c.render(request, "message.html", 400, message=w["csrf_failed"])
    name, password = str(form.get("user", "")), str(form.get("password", ""))
    nxt = _safe_next(str(form.get("next", "/")))
    user = c.users.authenticate(name[:64], password[:1024])
    if user is None:
        return c.render(request, "login.html", 401, next=nxt, failed=True)
    request.session.clear()
    request.session["user"] = user.name
    request.session["csrf"] = new_csrf_token()
    c.users.audit(user.name, "login", user.name, {})
    return RedirectResponse(nxt, status_code=303)


async def logout_post(c: Console, request: Request) -> Response:
    form = await request.form()
    if same_token(form.get("csrf"), request.session.get("csrf")):
        request.session.clear()
    return RedirectResponse("/login", status_code=303)


def set_language(c: Console, request: Request) -> Response:
    lang = i18n.language(request.path_params["lang"])
    back = _safe_next(request.query_params.get("back", "/"))
    resp = RedirectResponse(back, status_code=303)
    resp.set_cookie("lang", lang, max_age=365 * 86_400, samesite="strict", httponly=True)
    return resp


def healthz(c: Console, request: Request) -> Response:
    try:
        c.store.query("SELECT 1")
    except SanduanError as e:
        return PlainTextResponse(f"store unavailable: {e}", status_code=503)
    return PlainTextResponse("ok")


# --- assembly -----------------------------------------------------------------------------


def build_app(
    store: Store,
    county: County,
    *,
    secret: str | None = None,
    session_max_age_s: int = 8 * 3600,
    https_only: bool = False,
    validity: ValidityConfig | None = None,
    extra_routes: Mapping[str, Any] | None = None,
) -> Starlette:
    """The console over ``store`` for ``county``. ``secret`` signs session cookies (random per
    process when None: sessions then end when the process does)."""
    c = Console(store, county, validity or ValidityConfig())

    def bind(fn: Callable[..., Any]) -> Callable[[Request], Any]:
        import inspect

        if inspect.iscoroutinefunction(fn):

            async def run_async(request: Request) -> Response:
                result: Response = await fn(c, request)
                return result

            return run_async

        def run(request: Request) -> Response:
            result: Response = fn(c, request)
            return result

        return run

    routes: list[Route | Mount] = [
        Route("/", bind(county_page)),
        Route("/stations", bind(stations_page)),
        Route("/section/{sid}", bind(section_page)),
        Route("/ledger", bind(ledger_page)),
        Route("/problems", bind(page()(county_work.problems_page))),
        Route("/problems/{pid:int}", bind(page()(county_work.problem_page)), methods=["GET"]),
        Route("/problems/{pid:int}", bind(county_work.problem_action), methods=["POST"]),
        Route("/review", bind(page()(county_work.review_page)), methods=["GET"]),
        Route("/review", bind(county_work.review_post), methods=["POST"]),
        Route("/audit", bind(audit_page)),
        Route("/login", bind(login_page), methods=["GET"]),
        Route("/login", bind(login_post), methods=["POST"]),
        Route("/logout", bind(logout_post), methods=["POST"]),
        Route("/lang/{lang}", bind(set_language)),
        Route("/healthz", bind(healthz)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    for path, fn in (extra_routes or {}).items():
        routes.append(Route(path, bind(fn), methods=["GET", "POST"]))
    middleware = [
        Middleware(
            SessionMiddleware,
            secret_key=secret or secrets.token_urlsafe(32),
            session_cookie=SESSION_COOKIE,
            max_age=session_max_age_s,
            same_site="strict",
            https_only=https_only,
        )
    ]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.console = c
    app.state.started = time.time()
    return app

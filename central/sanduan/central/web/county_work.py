"""Problems (问题闭环) and data review (数据审核) in the console.

Views of what :mod:`sanduan.central.problems` and :mod:`sanduan.central.review` keep in the store,
and the reviewers' forms: a problem's lifecycle actions (交办, 整改, 反馈, 销号, 重新打开) and
review marks (invalidate, restore, validate) on a station's reading, hour or day. Every form is
CSRF-checked, needs at least the reviewer role, goes through the same functions as the
``sanduan central problems`` and ``review`` commands (so the same rules refuse the same mistakes),
and is recorded with its actor, in the problem's events or the review marks and in the console's
audit trail.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from sanduan.central.analytics import validity_rules
from sanduan.central.core.problems import STATE_NAMES_ZH, load_problem_rules
from sanduan.central.core.review import LEVELS, Mark, check_parameter, load_reasons, mark_span
from sanduan.central.problems import get_problem, load_problems, transition
from sanduan.central.review import add_mark, load_audit
from sanduan.central.web import data, i18n
from sanduan.central.web.auth import Role, User, same_token
from sanduan.shared.errors import InputError, SanduanError

if TYPE_CHECKING:
    from sanduan.central.web.app import Console

ACTIONS = ("assign", "rectify", "feedback", "close", "reopen")
REVIEW_ACTIONS = ("invalidate", "restore", "validate")


def _now() -> int:
    return int(time.time() * 1000)


def problems_page(c: Console, request: Request, user: User) -> Response:
    if not data.table_exists(c.store, "problems"):
        w = i18n.words(c.lang(request))
        return c.render(request, "message.html", current_user=user, message=w["no_problems_table"])
    now = _now()
    state = request.query_params.get("state", "open")
    town = request.query_params.get("town", "")
    problems = load_problems(c.store)
    shown = [
        p
        for p in problems
        if (state == "all" or (state == "open" and p.is_open) or p.state == state)
        and (not town or p.town == town)
        and (request.query_params.get("overdue") != "1" or p.overdue(now))
    ]
    shown.sort(key=lambda p: (not p.overdue(now), -p.opened_ms))
    return c.render(
        request,
        "problems.html",
        current_user=user,
        problems=shown[:500],
        total=len(problems),
        open_count=sum(1 for p in problems if p.is_open),
        overdue_count=sum(1 for p in problems if p.is_open and p.overdue(now)),
        state=state,
        town=town,
        request_overdue=request.query_params.get("overdue") == "1",
        now=now,
        states=STATE_NAMES_ZH,
        local=c.local,
    )


def problem_page(c: Console, request: Request, user: User) -> Response:
    w = i18n.words(c.lang(request))
    try:
        p = get_problem(c.store, int(request.path_params["pid"]))
    except (InputError, ValueError):
        return c.render(request, "message.html", 404, current_user=user, message=w["not_found"])
    return c.render(
        request,
        "problem.html",
        current_user=user,
        p=p,
        now=_now(),
        states=STATE_NAMES_ZH,
        actions=ACTIONS,
        can_act=user.role >= Role.REVIEWER,
        local=c.local,
        error=request.query_params.get("error", ""),
    )


async def _checked_form(c: Console, request: Request, role: Role) -> tuple[User, Any] | Response:
    """The form of a POST by a logged-in user of ``role`` with the session's CSRF token."""
    w = i18n.words(c.lang(request))
    user = c.user(request)
    if user is None:
        return RedirectResponse("/login", status_code=303)
    form = await request.form()
    if not same_token(form.get("csrf"), request.session.get("csrf")):
        return c.render(request, "message.html", 400, current_user=user, message=w["csrf_failed"])
    if user.role < role:
        return c.render(request, "message.html", 403, current_user=user, message=w["forbidden"])
    return user, form


async def problem_action(c: Console, request: Request) -> Response:
    checked = await _checked_form(c, request, Role.REVIEWER)
    if isinstance(checked, Response):
        return checked
    user, form = checked
    pid = int(request.path_params["pid"])
    action = str(form.get("action", ""))
    note = str(form.get("note", ""))[:2000]
    details: dict[str, Any] = {}
    if form.get("to"):
        details["to"] = str(form["to"])[:64]
    if action == "feedback" and note:
        details["evidence"] = note
    try:
        if action not in ACTIONS:
            raise InputError(f"unknown action {action!r}; actions: {', '.join(ACTIONS)}")
        transition(
            c.store,
            load_problem_rules(),
            c.county,
            pid,
            action,  # type: ignore[arg-type]
            actor=user.name,
            note=note,
            details=details,
        )
    except SanduanError as e:
        return RedirectResponse(f"/problems/{pid}?error={_q(str(e))}", status_code=303)
    c.users.audit(user.name, f"problem.{action}", str(pid), {"note": note, **details})
    return RedirectResponse(f"/problems/{pid}", status_code=303)


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(text[:300])


def review_page(c: Console, request: Request, user: User) -> Response:
    if not data.table_exists(c.store, "review_marks"):
        w = i18n.words(c.lang(request))
        return c.render(request, "message.html", current_user=user, message=w["no_review_table"])
    station = request.query_params.get("station") or None
    marks = load_audit(c.store, station=station)[-200:]
    marks.reverse()
    return c.render(
        request,
        "review.html",
        current_user=user,
        marks=marks,
        reasons=load_reasons(),
        stations=list(c.county.stations),
        parameters=sorted({p for s in c.county.sections.values() for p in s.parameters}),
        levels=LEVELS,
        actions=REVIEW_ACTIONS,
        station=station or "",
        can_act=user.role >= Role.REVIEWER,
        local=c.local,
        error=request.query_params.get("error", ""),
        done=request.query_params.get("done", ""),
    )


async def review_post(c: Console, request: Request) -> Response:
    checked = await _checked_form(c, request, Role.REVIEWER)
    if isinstance(checked, Response):
        return checked
    user, form = checked
    station = str(form.get("station", ""))
    try:
        action = str(form.get("action", ""))
        level = str(form.get("level", ""))
        if action not in REVIEW_ACTIONS:
            raise InputError(f"unknown review action {action!r}")
        if level not in LEVELS:
            raise InputError(f"unknown level {level!r}; levels: {', '.join(LEVELS)}")
        at = str(form.get("at", "")).strip()
        if level == "hour" and len(at) == 13:
            at += ":00"
        start, end = mark_span(level, at, c.county.timezone)
        param = str(form.get("parameter", "")) or None
        mark = Mark(
            0,
            0,
            user.name,
            action,  # type: ignore[arg-type]
            level,
            station,
            check_parameter(param),
            start,
            end,
            str(form.get("reason", "")),
            str(form.get("note", ""))[:2000],
        )
        excluded = validity_rules(c.validity, c.county).excluded_flags
        before, after = add_mark(c.store, mark, load_reasons(), excluded, c.county.stations)
    except SanduanError as e:
        return RedirectResponse(f"/review?station={_q(station)}&error={_q(str(e))}", 303)
    c.users.audit(
        user.name,
        f"review.{action}",
        f"{station} {param or '*'} {level} {at}",
        {"reason": mark.reason, "before": before, "after": after},
    )
    done = f"{before['valid']}/{before['readings']} → {after['valid']}/{after['readings']}"
    return RedirectResponse(f"/review?station={_q(station)}&done={_q(done)}", status_code=303)

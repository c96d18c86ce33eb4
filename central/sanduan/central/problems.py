"""Problems in the store: discovery runs and lifecycle transitions (the I/O shell of
:mod:`sanduan.central.core.problems`).

The ``problems`` table holds the facts of discovery and never changes; ``problem_events`` is an
append-only log of every transition (actor, time, note, details), from which a problem's state
is folded. A discovery run is recorded in ``runs`` (kind ``problems``) with the end of the data
it checked, which is what "quiet for N hours" is measured against.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sanduan.central.core.problems import (
    Action,
    Finding,
    Problem,
    ProblemEvent,
    ProblemRules,
    fold,
    next_state,
    quiet_enough,
    reconcile,
)
from sanduan.central.store.base import now_ms
from sanduan.shared.errors import InputError

if TYPE_CHECKING:
    from sanduan.central.core.county import County
    from sanduan.central.store import Store

RUN_KIND = "problems"
SYSTEM = "system"

_P_COLS = (
    "id, rule, kind, subject, station, section, town, river, code, opened_ms, first_ms,"
    " message, details"
)


def _json(text: Any) -> dict[str, Any]:
    if text is None:
        return {}
    if isinstance(text, dict):
        return text
    doc = json.loads(text)
    return doc if isinstance(doc, dict) else {}


def load_problems(store: Store, ids: Sequence[int] | None = None) -> list[Problem]:
    """Every problem (or those of ``ids``) with its state folded from its events."""
    where = ""
    params: list[object] = []
    if ids is not None:
        if not ids:
            return []
        where = f" WHERE id IN ({', '.join('?' * len(ids))})"
        params = list(ids)
    rows = store.query(f"SELECT {_P_COLS} FROM problems{where} ORDER BY id", params)
    ev_where = where.replace("id IN", "problem_id IN")
    evs = store.query(
        "SELECT problem_id, time_ms, action, actor, note, details FROM problem_events"
        f"{ev_where} ORDER BY problem_id, id",
        params,
    )
    by_problem: dict[int, list[ProblemEvent]] = {}
    for pid, t, action, actor, note, details in evs:
        by_problem.setdefault(int(pid), []).append(
            ProblemEvent(int(pid), int(t), action, actor, note, _json(details))
        )
    out: list[Problem] = []
    for r in rows:
        base = Problem(
            int(r[0]),
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            int(r[9]),
            int(r[10]),
            r[11],
            _json(r[12]),
        )
        out.append(fold(base, by_problem.get(base.id, [])))
    return out


def get_problem(store: Store, problem_id: int) -> Problem:
    found = load_problems(store, [problem_id])
    if not found:
        raise InputError(
            f"there is no problem {problem_id}; `sanduan central problems list` shows them"
        )
    return found[0]


def checked_until(store: Store) -> int | None:
    """The end of the data the latest discovery runs checked (data time, UTC ms)."""
    best: int | None = None
    for (result,) in store.query(
        "SELECT result FROM runs WHERE kind = ? AND result IS NOT NULL", [RUN_KIND]
    ):
        v = _json(result).get("checked_until_ms")
        if isinstance(v, int) and (best is None or v > best):
            best = v
    return best


def _add_event(store: Store, e: ProblemEvent) -> None:
    store.insert_rows(
        "problem_events",
        ("problem_id", "time_ms", "action", "actor", "note", "details"),
        [(e.problem_id, e.time_ms, e.action, e.actor, e.note, dict(e.details))],
    )


def record_discovery(
    store: Store,
    rules: ProblemRules,
    findings: Sequence[Finding],
    window: tuple[int, int],
    *,
    time_ms: int | None = None,
) -> dict[str, Any]:
    """Open problems for new findings, note open problems found again, and record the run.
    Returns counts and the ids opened."""
    now = now_ms() if time_ms is None else time_ms
    run_id = store.start_run(
        RUN_KIND, {"rules": rules.source, "window_ms": list(window)}, started_ms=now
    )
    try:
        current = load_problems(store)
        rec = reconcile(current, findings)
        next_id = max((p.id for p in current), default=0) + 1
        opened: list[int] = []
        rows: list[tuple[object, ...]] = []
        events: list[tuple[object, ...]] = []
        for f in rec.new:
            rule = rules.get(f.rule)
            details = {**dict(f.evidence), "rule": rule.thresholds(), "last_ms": f.last_ms}
            rows.append(
                (
                    next_id,
                    f.rule,
                    f.kind,
                    f.subject,
                    f.station,
                    f.section,
                    f.town,
                    f.river,
                    f.code,
                    now,
                    f.first_ms,
                    f.message,
                    details,
                )
            )
            events.append((next_id, now, "discover", SYSTEM, f.message, {"last_ms": f.last_ms}))
            opened.append(next_id)
            next_id += 1
        for pid, last in rec.seen:
            events.append((pid, now, "seen", SYSTEM, "found again", {"last_ms": last}))
        if rows:
            store.insert_rows(
                "problems",
                (
                    "id",
                    "rule",
                    "kind",
                    "subject",
                    "station",
                    "section",
                    "town",
                    "river",
                    "code",
                    "opened_ms",
                    "first_ms",
                    "message",
                    "details",
                ),
                rows,
            )
        if events:
            store.insert_rows(
                "problem_events",
                ("problem_id", "time_ms", "action", "actor", "note", "details"),
                events,
            )
        summary = {
            "findings": len(findings),
            "opened": len(opened),
            "seen_again": len(rec.seen),
            "opened_ids": opened,
            "checked_until_ms": window[1],
        }
    except BaseException as e:
        store.finish_run(run_id, {"error": f"{type(e).__name__}: {e}"})
        raise
    store.finish_run(run_id, summary)
    return summary


def transition(
    store: Store,
    rules: ProblemRules,
    county: County | None,
    problem_id: int,
    action: Action,
    *,
    actor: str,
    note: str = "",
    details: Mapping[str, Any] | None = None,
    time_ms: int | None = None,
) -> Problem:
    """Apply one lifecycle action (assign, rectify, feedback, close, reopen) to a problem.

    ``assign`` (and ``reopen``) default the assignee to the town answerable for the subject
    and the deadline to the rule's; ``close`` is refused until the rule has been quiet long
    enough."""
    if not actor.strip():
        raise InputError("every transition needs an actor: give --actor NAME")
    now = now_ms() if time_ms is None else time_ms
    p = get_problem(store, problem_id)
    next_state(p.state, action)  # raises with what is allowed
    d = dict(details or {})
    rule = rules.get(p.rule)
    if action in ("assign", "reopen"):
        to = d.get("to") or p.assignee or p.town
        if not to:
            raise InputError(
                f"problem {p.id} has no responsible town in the county topology: give --to TOWN"
            )
        if county is not None and to not in county.towns:
            known = ", ".join(county.towns)
            raise InputError(f"--to {to!r} is not a town of the county; towns: {known}")
        d["to"] = to
        d.setdefault("deadline_ms", now + rule.deadline_ms)
    if action == "feedback" and not (note.strip() or d.get("evidence")):
        raise InputError("反馈 (feedback) needs evidence: give --evidence TEXT or --note TEXT")
    if action == "close":
        why = quiet_enough(p, rule, checked_until(store))
        if why is not None:
            raise InputError(f"problem {p.id} cannot be closed yet: {why}")
        d.setdefault("quiet_since_ms", p.last_seen_ms)
    _add_event(store, ProblemEvent(p.id, now, action, actor, note, d))
    return get_problem(store, problem_id)

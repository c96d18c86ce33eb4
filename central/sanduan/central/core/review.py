"""Data review (数据审核): reviewers' marks over the raw readings, and what they change. Pure.

Raw readings are never modified. A *mark* covers one reading, one local hour or one local day
of a station (one item, or every item) and says:

* ``invalidate``: the readings are not valid (they get the review flag ``R``, which is always
  excluded from means);
* ``restore``: undo earlier invalidations; the readings are back to their station flags;
* ``validate``: the readings are valid although the station flagged them (e.g. a stuck-value
  ``D`` the reviewer has checked): their flag becomes ``N``. NaN stays invalid.

Marks apply in the order they were made; the latest wins. :func:`apply_marks` returns reviewed
readings columns for the assessment; :func:`ledger_changes` tells which ledger rows a recompute
changed and how.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from sanduan.central.core.validity import HOUR_MS
from sanduan.shared.errors import ConfigError, InputError, UnknownParameterError
from sanduan.shared.params import resolve

__all__ = [
    "REVIEW_FLAG",
    "Mark",
    "ReasonCode",
    "apply_marks",
    "ledger_changes",
    "load_reasons",
    "mark_span",
]

REVIEW_FLAG = "R"
"""The flag reviewed-invalid readings carry inside the centre (never on the wire)."""

ReviewAction = Literal["invalidate", "restore", "validate"]
ReviewLevel = Literal["reading", "hour", "day"]
ACTIONS: tuple[ReviewAction, ...] = ("invalidate", "restore", "validate")
LEVELS: tuple[ReviewLevel, ...] = ("reading", "hour", "day")


@dataclass(frozen=True, slots=True)
class ReasonCode:
    code: str
    zh: str
    en: str


def parse_reasons(text: str, source: str) -> dict[str, ReasonCode]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, "", f"not valid TOML: {e}") from None
    out: dict[str, ReasonCode] = {}
    items = doc.get("reason", [])
    if not isinstance(items, list):
        raise ConfigError(source, "reason", "expected [[reason]] tables")
    for i, r in enumerate(items):
        if not isinstance(r, dict) or not all(
            isinstance(r.get(k), str) for k in ("code", "zh", "en")
        ):
            raise ConfigError(source, f"reason[{i}]", "each reason needs code, zh and en strings")
        if r["code"] in out:
            raise ConfigError(source, f"reason[{i}].code", f"duplicate reason code {r['code']!r}")
        out[r["code"]] = ReasonCode(r["code"], r["zh"], r["en"])
    return out


def load_reasons(path: Path | str | None = None) -> dict[str, ReasonCode]:
    """Reason codes from ``path`` or the built-in data/review.toml."""
    if path is None:
        from importlib import resources

        text = resources.files("sanduan.central").joinpath("data/review.toml").read_text("utf-8")
        return parse_reasons(text, "<builtin review.toml>")
    p = Path(path)
    try:
        return parse_reasons(p.read_text(encoding="utf-8"), str(p))
    except OSError as e:
        raise ConfigError(str(p), "", f"cannot read the reason codes: {e.strerror}") from None


@dataclass(frozen=True, slots=True)
class Mark:
    """One review mark. ``parameter`` None covers every item of the station."""

    id: int
    time_ms: int
    reviewer: str
    action: ReviewAction
    level: ReviewLevel
    station: str
    parameter: str | None
    start_ms: int
    end_ms: int
    reason: str
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time_ms": self.time_ms,
            "reviewer": self.reviewer,
            "action": self.action,
            "level": self.level,
            "station": self.station,
            "parameter": self.parameter,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "reason": self.reason,
            "note": self.note,
        }


def parse_time(text: str, timezone: str) -> dt.datetime:
    """An ISO date-time (local to ``timezone`` unless it has an offset) or a date."""
    try:
        t = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"time {text!r}: expected an ISO date or date-time, e.g. 2026-05-03 or 2026-05-03T14:00"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=ZoneInfo(timezone))
    return t


def mark_span(level: ReviewLevel, at: str, timezone: str) -> tuple[int, int]:
    """[start, end) in UTC ms of the reading (its exact time), local hour or local day ``at``."""
    t = parse_time(at, timezone)
    ms = int(t.timestamp() * 1000)
    if level == "reading":
        return ms, ms + 1
    if level == "hour":
        start = _floor_hour(t.astimezone(ZoneInfo(timezone)))
        return start, start + HOUR_MS
    local = t.astimezone(ZoneInfo(timezone))
    day = dt.datetime(local.year, local.month, local.day, tzinfo=ZoneInfo(timezone))
    nxt = day.date() + dt.timedelta(days=1)
    end = dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=ZoneInfo(timezone))
    return int(day.timestamp() * 1000), int(end.timestamp() * 1000)


def _floor_hour(t: dt.datetime) -> int:
    return int(t.replace(minute=0, second=0, microsecond=0).timestamp() * 1000)


def check_parameter(name: str | None) -> str | None:
    if name is None:
        return None
    try:
        return resolve(name).name
    except UnknownParameterError as e:
        raise InputError(str(e)) from None


def _param_names(codes: npt.NDArray[Any]) -> npt.NDArray[np.str_]:
    uniq, inv = np.unique(codes.astype(str), return_inverse=True)
    names = []
    for c in uniq.tolist():
        try:
            names.append(resolve(c).name)
        except UnknownParameterError:
            names.append(c)
    return np.asarray(names, dtype=np.str_)[inv] if names else np.asarray([], dtype=np.str_)


def apply_marks(columns: Mapping[str, Any], marks: Iterable[Mark]) -> dict[str, Any]:
    """Readings columns with the marks applied to their flags (a new ``flag`` column; the other
    columns are shared, not copied). Columns: ``station``, ``ts_ms``, ``code``, ``flag``."""
    ms = sorted(marks, key=lambda m: (m.time_ms, m.id))
    out = dict(columns)
    if not ms:
        return out
    station = np.asarray(columns["station"]).astype(str)
    ts = np.asarray(columns["ts_ms"], dtype=np.int64)
    raw = np.asarray(columns["flag"]).astype("<U1")
    flags = raw.copy()
    params: npt.NDArray[np.str_] | None = None
    for m in ms:
        sel = (station == m.station) & (ts >= m.start_ms) & (ts < m.end_ms)
        if m.parameter is not None:
            if params is None:
                params = _param_names(np.asarray(columns["code"]))
            sel &= params == m.parameter
        if m.action == "invalidate":
            flags[sel] = REVIEW_FLAG
        elif m.action == "restore":
            flags[sel] = raw[sel]
        else:
            flags[sel] = "N"
    out["flag"] = flags
    return out


def valid_count(columns: Mapping[str, Any], excluded: Iterable[str], mark: Mark) -> dict[str, int]:
    """Readings of ``mark``'s span: total and not excluded (for the audit's before/after)."""
    station = np.asarray(columns["station"]).astype(str)
    ts = np.asarray(columns["ts_ms"], dtype=np.int64)
    flags = np.asarray(columns["flag"]).astype("<U1")
    values = np.asarray(columns["value"], dtype=np.float64)
    sel = (station == mark.station) & (ts >= mark.start_ms) & (ts < mark.end_ms)
    if mark.parameter is not None:
        sel &= _param_names(np.asarray(columns["code"])) == mark.parameter
    ok = sel & np.isfinite(values) & ~np.isin(flags, sorted({*excluded, REVIEW_FLAG}))
    return {"readings": int(sel.sum()), "valid": int(ok.sum())}


# --- what a recompute changed ------------------------------------------------------------


def _key(row: Mapping[str, Any]) -> tuple[str, ...]:
    ev = row.get("evidence") or {}
    return (
        str(row.get("rule")),
        str(row.get("payer")),
        str(row.get("payee")),
        str(ev.get("component", "")),
        str(ev.get("town", "")),
        str(ev.get("upstream_town", "")),
    )


def _inputs(ev: Mapping[str, Any]) -> dict[str, Any]:
    """The classes and means behind a ledger row (whatever its rule recorded)."""
    words = ("class", "mean", "grade", "inputs", "sections", "factors")
    return {k: v for k, v in ev.items() if any(w in k for w in words)}


def ledger_changes(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Ledger rows (``rule``, ``payer``, ``payee``, ``amount_yuan``, ``status``, ``evidence``)
    added, removed or changed between two computations of a period, with the classes and means
    behind each side."""
    old = {_key(r): r for r in before}
    new = {_key(r): r for r in after}
    out: list[dict[str, Any]] = []
    for k in sorted(old.keys() | new.keys()):
        a, b = old.get(k), new.get(k)
        if a is not None and b is not None:
            same_amount = round(float(a.get("amount_yuan") or 0), 2) == round(
                float(b.get("amount_yuan") or 0), 2
            )
            ia, ib = _inputs(a.get("evidence") or {}), _inputs(b.get("evidence") or {})
            if same_amount and a.get("status") == b.get("status") and ia == ib:
                continue
            change = "changed"
        else:
            change = "added" if a is None else "removed"
        out.append(
            {
                "change": change,
                "rule": k[0],
                "payer": k[1],
                "payee": k[2],
                "component": k[3],
                "town": k[4],
                "before": None
                if a is None
                else {
                    "amount_yuan": a.get("amount_yuan"),
                    "status": a.get("status"),
                    "inputs": _inputs(a.get("evidence") or {}),
                },
                "after": None
                if b is None
                else {
                    "amount_yuan": b.get("amount_yuan"),
                    "status": b.get("status"),
                    "inputs": _inputs(b.get("evidence") or {}),
                },
            }
        )
    return out

"""Console accounts: roles, argon2 password hashes in the central store, and the audit trail.

Roles are ordered: a ``viewer`` reads every page, a ``reviewer`` may also act on data review and
problems, an ``admin`` may also manage accounts. Nothing is shown and nothing is written without
a login; every write the console makes is recorded in ``console_audit`` with its actor.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from sanduan.shared.errors import InputError

if TYPE_CHECKING:
    from sanduan.central.store import Store

__all__ = ["Role", "User", "Users", "new_csrf_token", "same_token"]

NAME_MAX = 64
PASSWORD_MIN = 8


class Role(IntEnum):
    VIEWER = 1
    REVIEWER = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            known = ", ".join(r.name.lower() for r in cls)
            raise InputError(f"unknown role {text!r}; roles: {known}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role


# Moderate argon2id parameters: ~50 ms a login on a small server, 64 MiB.
_HASHER = PasswordHasher(time_cost=2, memory_cost=64 * 1024, parallelism=1)
# A hash to verify against when the user does not exist, so both cases take as long.
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))


def _check_name(name: str) -> str:
    if not 1 <= len(name) <= NAME_MAX or not name.isprintable() or name != name.strip():
        raise InputError(
            f"user name {name[:80]!r} must be 1..{NAME_MAX} printable characters, no outer spaces"
        )
    return name


def _check_password(password: str) -> str:
    if len(password) < PASSWORD_MIN:
        raise InputError(f"a password needs at least {PASSWORD_MIN} characters")
    return password


class Users:
    """Accounts and the audit trail in the central store (tables ``console_users`` and
    ``console_audit``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, name: str, role: Role, password: str, *, actor: str = "cli") -> None:
        """Create or replace an account (a new password and role for an existing name)."""
        _check_name(name)
        _check_password(password)
        self.store.replace_rows(
            "console_users",
            {"name": name},
            ("name", "role", "password_hash", "created_ms", "disabled"),
            [(name, role.label, _HASHER.hash(password), int(time.time() * 1000), False)],
        )
        self.audit(actor, "user.set", name, {"role": role.label})

    def disable(self, name: str, *, actor: str = "cli") -> bool:
        rows = self.store.query(
            "SELECT role, password_hash, created_ms FROM console_users WHERE name = ?", (name,)
        )
        if not rows:
            return False
        role, hashed, created = rows[0]
        self.store.replace_rows(
            "console_users",
            {"name": name},
            ("name", "role", "password_hash", "created_ms", "disabled"),
            [(name, role, hashed, created, True)],
        )
        self.audit(actor, "user.disable", name, {})
        return True

    def all(self) -> list[tuple[str, str, bool]]:
        """``(name, role, disabled)`` for every account."""
        rows = self.store.query("SELECT name, role, disabled FROM console_users ORDER BY name")
        return [(str(n), str(r), bool(d)) for n, r, d in rows]

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if the name and password match an enabled account, else None."""
        rows = self.store.query(
            "SELECT role, password_hash, disabled FROM console_users WHERE name = ?", (name,)
        )
        hashed = str(rows[0][1]) if rows else _DUMMY_HASH
        try:
            _HASHER.verify(hashed, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if not rows or rows[0][2]:
            return None
        return User(name=name, role=Role.parse(str(rows[0][0])))

    def role_of(self, name: str) -> Role | None:
        """The current role of an enabled account (sessions re-check it on every request)."""
        rows = self.store.query("SELECT role, disabled FROM console_users WHERE name = ?", (name,))
        if not rows or rows[0][1]:
            return None
        return Role.parse(str(rows[0][0]))

    def audit(self, actor: str, action: str, target: str, detail: Mapping[str, object]) -> None:
        self.store.insert_rows(
            "console_audit",
            ("time_ms", "actor", "action", "target", "detail"),
            [
                (
                    int(time.time() * 1000),
                    actor,
                    action,
                    target,
                    json.dumps(detail, ensure_ascii=False, sort_keys=True),
                )
            ],
        )

    def recent_audit(self, limit: int = 50) -> list[tuple[int, str, str, str, str]]:
        rows = self.store.query(
            "SELECT time_ms, actor, action, target, detail FROM console_audit"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [(int(t), str(a), str(x), str(g), str(d)) for t, a, x, g, d in rows]


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(a: object, b: object) -> bool:
    """Constant-time comparison of two CSRF tokens (False unless both are non-empty strings)."""
    return isinstance(a, str) and isinstance(b, str) and bool(a) and secrets.compare_digest(a, b)

"""The agent's record of command ids in the buffer file: answers survive a restart, old ids go."""

from __future__ import annotations

from pathlib import Path

import pytest

from sanduan.edge import commands
from sanduan.edge.commands import CommandLog
from sanduan.edge.core.commands import Outcome
from sanduan.shared.wire import CommandResult

T0 = 1_767_225_600_000


def test_answers_survive_a_reopen_and_are_sent_once(tmp_path: Path) -> None:
    db = tmp_path / "buffer.db"
    log = CommandLog(db)
    assert log.known("c-1") is None
    log.start("c-1", "push-config", T0)
    assert log.known("c-1") == "running" and log.running() == [("c-1", "push-config")]
    log.answer(CommandResult("S1", "c-1", T0 + 1, False, "rejected", "bad key", "f" * 64), "x")
    log.close()
    log = CommandLog(db)
    assert log.known("c-1") == Outcome(False, "rejected", "bad key", "f" * 64)
    assert [i for i, _ in log.unsent()] == ["c-1"]
    log.mark_sent("c-1")
    assert log.unsent() == [] and log.running() == []
    log.close()


def test_only_the_latest_ids_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "KEEP_IDS", 3)
    log = CommandLog(tmp_path / "buffer.db")
    for i in range(5):
        log.start(f"c-{i}", "poll-now", T0 + i)
    assert [log.known(f"c-{i}") for i in range(5)] == [None, None] + ["running"] * 3
    log.close()

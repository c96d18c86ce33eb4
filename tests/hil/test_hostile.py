"""The hostile station's attacks (pure), and what the wire makes of them."""

from __future__ import annotations

import random

import pytest

from sanduan.hil.hostile import (
    ATTACKS,
    FORGED_CODE,
    StationState,
    attack_round,
    is_forged_batch,
)
from sanduan.shared import topics, wire
from sanduan.shared.errors import WireFormatError

NOW_MS = 1_688_140_800_000
LIMIT = 4 * 1024 * 1024


@pytest.mark.parametrize("stream", [0, 0x1234_5678_9ABC])
def test_a_round_of_attacks(stream: int) -> None:
    state = StationState(stream, acked=(5, 6, 7, 8))
    first = attack_round(
        "S1", state, now_ms=NOW_MS, round_no=0, max_message_bytes=LIMIT, rng=random.Random(1)
    )
    assert {m.attack for m in first} == set(ATTACKS) - {"stolen_id"}
    assert first[-1].attack == "oversize"  # once, last
    sent = attack_round(
        "S1", state, now_ms=NOW_MS, round_no=2, max_message_bytes=LIMIT, rng=random.Random(1)
    )
    kinds = [m.attack for m in sent]
    assert set(kinds) == set(ATTACKS) - {"stolen_id", "oversize"}
    assert all(topics.parse(m.topic)[0] == "S1" for m in sent)  # only its own topics
    by_kind = {m.attack: m for m in [*first, *sent]}
    assert len(by_kind["oversize"].payload) == LIMIT + 1
    for m in sent:
        if m.attack in ("oversize", "garbage"):
            with pytest.raises(WireFormatError):
                wire.decode(m.payload, max_size=2 * LIMIT)
    # The forged readings the centre might store are known by key, far above any real seq.
    forged = {k: a for m in sent for k, a in m.forged.items()}
    assert set(forged.values()) == {"huge_seq", "ts_1970", "ts_2100"}
    assert all(s == stream and q > wire.MAX_SEQ - 100 for s, q in forged)
    huge = wire.decode_batch(by_kind["huge_seq"].payload)
    assert (huge.stream, huge.codes, huge.seq) == (stream, (FORGED_CODE,), (wire.MAX_SEQ - 20,))
    assert is_forged_batch(huge.batch_seq)
    ts = {a: wire.decode_batch(by_kind[a].payload).ts_ms for a in ("ts_1970", "ts_2100")}
    assert ts == {"ts_1970": (0,), "ts_2100": (4_102_444_800_000,)}
    # The conflict repeats acknowledged seqs with other content, and is not "forged": its keys
    # are real readings'.
    conflict = wire.decode_batch(by_kind["conflict"].payload)
    assert set(conflict.seq) <= {5, 6, 7, 8} and conflict.stream == stream
    assert not by_kind["conflict"].forged


def test_seq_beyond_the_bounds_is_refused_by_the_v2_decoder() -> None:
    sent = {m.attack: m for m in attack_round(
        "S1", StationState(7), now_ms=NOW_MS, round_no=0, max_message_bytes=LIMIT,
        rng=random.Random(0),
    )}  # fmt: skip
    with pytest.raises(WireFormatError, match="out of range"):
        wire.decode(sent["seq_2^63"].payload)


def test_rounds_never_reuse_a_forged_seq_and_no_conflict_before_any_ack() -> None:
    keys: set[tuple[int, int]] = set()
    for n in range(50):
        sent = attack_round(
            "S1", StationState(), now_ms=NOW_MS, round_no=n, max_message_bytes=LIMIT,
            rng=random.Random(n),
        )  # fmt: skip
        assert "conflict" not in {m.attack for m in sent}
        new = {k for m in sent for k in m.forged}
        assert not new & keys
        keys |= new
    assert not is_forged_batch(1_000_000)

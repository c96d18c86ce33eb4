"""Golden vectors of wire format v1 (tests/golden/wire, written by make_golden.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sanduan.shared.errors import WireFormatError
from sanduan.shared.wire import Kind, decode, encode, from_json_obj, to_json_obj

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "wire"
VALID = sorted(p.stem for p in GOLDEN.glob("*.bin") if not p.name.startswith("bad-"))
BAD = sorted(p.stem for p in GOLDEN.glob("bad-*.bin"))


def test_every_kind_has_a_golden_vector() -> None:
    kinds = {json.loads((GOLDEN / f"{name}.json").read_text())["k"] for name in VALID}
    assert kinds == {k.value for k in Kind}
    assert len(BAD) >= 20


@pytest.mark.parametrize("name", VALID)
def test_golden_decodes_to_json(name: str) -> None:
    expected = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    assert to_json_obj(decode((GOLDEN / f"{name}.bin").read_bytes())) == expected


@pytest.mark.parametrize("name", VALID)
def test_json_encodes_to_golden_bytes(name: str) -> None:
    obj = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    assert encode(from_json_obj(obj)) == (GOLDEN / f"{name}.bin").read_bytes()


@pytest.mark.parametrize("name", BAD)
def test_bad_vector_is_rejected_with_reason(name: str) -> None:
    expected = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))["error"]
    with pytest.raises(WireFormatError) as info:
        decode((GOLDEN / f"{name}.bin").read_bytes())
    assert expected in info.value.reason

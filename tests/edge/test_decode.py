"""Precompiled block decoders give exactly what ReadBlock.decode gives."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanduan.edge.core.decode import BlockDecoder
from sanduan.shared.registers import (
    ByteOrder,
    RegisterSpec,
    RegType,
    builtin_profiles,
    plan_reads,
)


def same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a
    )


@pytest.mark.parametrize("name", sorted(builtin_profiles()))
def test_builtin_profiles_decode_alike(name: str) -> None:
    profile = builtin_profiles()[name]
    for block in plan_reads(profile.registers, max_gap=10):
        dec = BlockDecoder(block)
        for seed in range(50):
            regs = [(seed * 7919 + i * 104729) & 0xFFFF for i in range(block.count)]
            assert same(dec.decode(regs), block.decode(regs)), (name, block, regs)
        # The sentinels of the profile decode to NaN through both.
        zeros = [0] * block.count
        assert same(dec.decode(zeros), block.decode(zeros))


@st.composite
def blocks(draw: Any) -> tuple[list[RegisterSpec], list[int]]:
    specs: list[RegisterSpec] = []
    addr = draw(st.integers(0, 100))
    for i in range(draw(st.integers(1, 8))):
        addr += draw(st.integers(0, 3))  # holes between registers
        rtype = draw(st.sampled_from(list(RegType)))
        order = draw(st.sampled_from(list(ByteOrder)))
        scale = draw(st.sampled_from([1.0, 0.1, 0.01, 10.0]))
        offset = draw(st.sampled_from([0.0, -40.0]))
        width = 2 if rtype in (RegType.INT32, RegType.UINT32, RegType.FLOAT32) else 1
        sentinels: tuple[int | float, ...] = ()
        if draw(st.booleans()):
            sentinels = (-9999,) if rtype in (RegType.INT16, RegType.INT32) else (9999,)
        specs.append(
            RegisterSpec(
                name=f"r{i}",
                code=f"w{21001 + i}",
                address=addr,
                type=rtype,
                order=order,
                scale=scale,
                offset=offset,
                sentinels=sentinels,
            )
        )
        addr += width
    total = addr + 4
    regs = draw(st.lists(st.integers(0, 0xFFFF), min_size=total, max_size=total))
    return specs, regs


@settings(max_examples=300, deadline=None)
@given(blocks())
def test_any_layout_decodes_alike(case: tuple[list[RegisterSpec], list[int]]) -> None:
    specs, image = case
    for block in plan_reads(specs, max_count=125, max_gap=3):
        regs = image[block.address : block.address + block.count]
        assert same(BlockDecoder(block).decode(regs), block.decode(regs))


def test_wrong_register_count_is_refused_like_the_block() -> None:
    spec = RegisterSpec(name="v", code="w01001", address=0)
    block = plan_reads([spec])[0]
    with pytest.raises(ValueError, match="got 1 registers"):
        BlockDecoder(block).decode([0])

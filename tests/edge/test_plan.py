"""Read planning: unit cases and properties (coverage, limits, fewest requests)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sanduan.edge.core.plan import PlanError, format_block, plan_blocks, plan_bus, plan_device
from sanduan.shared.config import BusConfig, DeviceConfig, parse_model
from sanduan.shared.registers import (
    MAX_READ_COUNT,
    RegisterSpec,
    RegType,
    builtin_profiles,
    load_profile,
)


def spec(name: str, address: int, rtype: str = "uint16", function: int = 3) -> RegisterSpec:
    return parse_model(
        RegisterSpec,
        {
            "name": name,
            "code": f"w{address:05d}",
            "address": address,
            "function": function,
            "type": rtype,
        },
        "<test>",
    )


def test_sonde_merges_across_its_hole_only_when_allowed() -> None:
    regs = load_profile("sonde-multi").registers
    assert [(b.address, b.count) for b in plan_blocks(regs, max_gap=0)] == [
        (0x2601, 10),
        (0x260D, 2),
    ]
    assert [(b.address, b.count) for b in plan_blocks(regs, max_gap=2)] == [(0x2601, 14)]
    assert [(b.address, b.count) for b in plan_blocks(regs, max_gap=1)] == [
        (0x2601, 10),
        (0x260D, 2),
    ]


def test_function_codes_never_merge() -> None:
    regs = [spec("a", 0, function=3), spec("b", 1, function=4), spec("c", 2, function=3)]
    blocks = plan_blocks(regs, max_gap=5)
    assert [(b.function, b.address, b.count) for b in blocks] == [(3, 0, 3), (4, 1, 1)]


def test_125_register_limit() -> None:
    regs = [spec("a", 0, "float32"), spec("b", 123, "float32"), spec("c", 125)]
    blocks = plan_blocks(regs, max_gap=124)
    assert [(b.address, b.count) for b in blocks] == [(0, 125), (125, 1)]
    assert max(b.count for b in blocks) == MAX_READ_COUNT


def test_register_wider_than_the_device_limit_is_an_error() -> None:
    with pytest.raises(PlanError) as info:
        plan_blocks([spec("do", 0, "float32")], max_count=1)
    assert info.value.key == "max_read_count"
    assert "'do'" in info.value.reason
    with pytest.raises(PlanError):
        plan_blocks([spec("do", 0)], max_count=126)


def test_device_gap_overrides_the_bus_gap() -> None:
    profile = load_profile("sonde-multi")
    dev = DeviceConfig(name="s", slave=1, profile="sonde-multi", max_gap=0)
    assert plan_device(dev, profile, bus_max_gap=10).requests == 2
    dev = DeviceConfig(name="s", slave=1, profile="sonde-multi")
    plan = plan_device(dev, profile, bus_max_gap=10)
    assert (plan.requests, plan.registers_read, plan.registers_used) == (1, 14, 12)
    assert plan.naive_requests == 6


def test_bus_plan_prefixes_the_device_key() -> None:
    bus = BusConfig(
        name="b",
        port="/dev/null",
        device=[
            DeviceConfig(name="ok", slave=1, profile="do-ldo"),
            DeviceConfig(name="bad", slave=2, profile="sonde-multi", max_read_count=1),
        ],
    )
    profiles = {"ok": load_profile("do-ldo"), "bad": load_profile("sonde-multi")}
    with pytest.raises(PlanError) as info:
        plan_bus(bus, profiles)
    assert info.value.key == "device[1].max_read_count"


def test_format_block_names_registers_and_discards() -> None:
    block = plan_blocks(load_profile("do-optical").registers, max_gap=2)[0]
    assert format_block(block) == "FC04 0x0002+6: do_mgl@0x0002 temperature@0x0006 (+2 discarded)"


def test_every_builtin_profile_needs_fewer_requests_than_registers_or_equal() -> None:
    for profile in builtin_profiles().values():
        planned = len(plan_blocks(profile.registers, max_gap=10))
        assert 1 <= planned <= len(profile.registers)


# -- properties --------------------------------------------------------------------------------


@st.composite
def register_maps(draw: st.DrawFn) -> list[RegisterSpec]:
    n = draw(st.integers(1, 12))
    out: list[RegisterSpec] = []
    used: dict[int, set[int]] = {3: set(), 4: set()}
    for i in range(n):
        fc: Literal[3, 4] = draw(st.sampled_from([3, 4]))
        rtype = draw(st.sampled_from(["uint16", "float32"]))
        width = 2 if rtype == "float32" else 1
        addr = draw(st.integers(0, 300))
        cells = set(range(addr, addr + width))
        if cells & used[fc]:
            continue
        used[fc] |= cells
        out.append(
            RegisterSpec(
                name=f"r{i}", code=f"w{i:05d}", address=addr, function=fc, type=RegType(rtype)
            )
        )
    if not out:
        out.append(RegisterSpec(name="r", code="w00001", address=0, type=RegType.UINT16))
    return out


def _fewest(specs: Sequence[RegisterSpec], max_count: int, max_gap: int) -> int:
    """The minimum number of blocks, by dynamic programming over address-sorted registers."""
    total = 0
    for fc in (3, 4):
        s = sorted((x for x in specs if x.function == fc), key=lambda x: x.address)
        best = [0] + [10**9] * len(s)
        for j in range(1, len(s) + 1):
            for i in range(j):
                group = s[i:j]
                span = max(x.end for x in group) - group[0].address
                holes_ok = all(
                    group[k + 1].address - group[k].end <= max_gap for k in range(len(group) - 1)
                )
                if span <= max_count and holes_ok:
                    best[j] = min(best[j], best[i] + 1)
        total += best[len(s)]
    return total


@settings(max_examples=300, deadline=None)
@given(register_maps(), st.integers(2, 125), st.integers(0, 20))
def test_plan_covers_everything_within_limits_with_fewest_requests(
    specs: list[RegisterSpec], max_count: int, max_gap: int
) -> None:
    blocks = plan_blocks(specs, max_count=max_count, max_gap=max_gap)
    seen = [s.name for b in blocks for s in b.registers]
    assert sorted(seen) == sorted(s.name for s in specs)  # each register exactly once
    for b in blocks:
        assert 1 <= b.count <= max_count
        for s in b.registers:
            assert s.function == b.function
            assert b.address <= s.address and s.end <= b.address + b.count
        ordered = sorted(b.registers, key=lambda s: s.address)
        assert ordered[0].address == b.address
        assert max(s.end for s in ordered) == b.address + b.count
        for x, y in itertools.pairwise(ordered):
            assert y.address - x.end <= max_gap
    assert len(blocks) == _fewest(specs, max_count, max_gap)

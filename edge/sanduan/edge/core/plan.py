"""Read planning: which FC03/FC04 requests cover a device's register map.

Per device and function code, registers whose hole is at most ``max_gap`` registers merge into
one request of at most ``max_count`` registers (125, the Modbus limit, unless the device takes
fewer). The holes are read and discarded: a hole costs 2 bytes a register on the wire, a separate
request costs 13 bytes of framing, two inter-frame gaps and the device's turnaround, so merging
across small holes saves bus time. Sorting by address and growing each block as far as the limits
allow gives the fewest requests (a block can only start at a register that the previous one could
not take).

The plan is pure data; :func:`format_bus_plan` prints it in the stable text form used by
``sanduan edge check-config`` and by the golden tests in ``tests/golden/plan``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sanduan.shared.config import BusConfig, DeviceConfig
from sanduan.shared.registers import (
    MAX_READ_COUNT,
    DeviceProfile,
    ReadBlock,
    RegisterSpec,
    plan_reads,
)

__all__ = [
    "BusPlan",
    "DevicePlan",
    "PlanError",
    "format_block",
    "format_bus_plan",
    "plan_blocks",
    "plan_bus",
    "plan_device",
]


class PlanError(ValueError):
    """A register map cannot be read with the device's limits; ``key`` names the setting."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


def plan_blocks(
    registers: Sequence[RegisterSpec], max_count: int = MAX_READ_COUNT, max_gap: int = 0
) -> tuple[ReadBlock, ...]:
    """The fewest reads covering ``registers``: FC03 blocks first, then FC04, by address.

    Raises :class:`PlanError` when a register is wider than ``max_count`` or the limits are out
    of the Modbus range.
    """
    if not 1 <= max_count <= MAX_READ_COUNT:
        raise PlanError("max_read_count", f"{max_count} is not in 1..{MAX_READ_COUNT}")
    if max_gap < 0:
        raise PlanError("max_gap", f"{max_gap} is negative")
    for spec in registers:
        if spec.width > max_count:
            raise PlanError(
                "max_read_count",
                f"{max_count} is smaller than register {spec.name!r}"
                f" ({spec.type.value}, {spec.width} registers)",
            )
    return tuple(plan_reads(registers, max_count=max_count, max_gap=max_gap))


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """One device on a bus: its settings, register map and the requests of one poll."""

    config: DeviceConfig
    profile: DeviceProfile
    max_gap: int
    max_count: int
    blocks: tuple[ReadBlock, ...]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def slave(self) -> int:
        return self.config.slave

    @property
    def requests(self) -> int:
        return len(self.blocks)

    @property
    def registers_read(self) -> int:
        """Registers on the wire per poll, holes included."""
        return sum(b.count for b in self.blocks)

    @property
    def registers_used(self) -> int:
        return sum(s.width for s in self.profile.registers)

    @property
    def naive_requests(self) -> int:
        """Requests a gateway that reads one register (value) per request would send."""
        return len(self.profile.registers)


@dataclass(frozen=True, slots=True)
class BusPlan:
    """The devices of one bus (one serial port) in configuration order, with their plans."""

    config: BusConfig
    devices: tuple[DevicePlan, ...]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def requests(self) -> int:
        return sum(d.requests for d in self.devices)

    def device(self, name: str) -> DevicePlan:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(f"bus {self.name}: no device {name!r}")


def plan_device(device: DeviceConfig, profile: DeviceProfile, bus_max_gap: int) -> DevicePlan:
    """Plan one device; its own ``max_gap`` (when set) overrides the bus's."""
    max_gap = bus_max_gap if device.max_gap is None else device.max_gap
    blocks = plan_blocks(profile.registers, max_count=device.max_read_count, max_gap=max_gap)
    return DevicePlan(device, profile, max_gap, device.max_read_count, blocks)


def plan_bus(bus: BusConfig, profiles: Mapping[str, DeviceProfile]) -> BusPlan:
    """Plan every device of ``bus``; ``profiles`` maps device names to their resolved profiles.

    A :class:`PlanError` raised for a device has its key prefixed with ``device[i].``.
    """
    plans = []
    for i, dev in enumerate(bus.device):
        try:
            plans.append(plan_device(dev, profiles[dev.name], bus.max_gap))
        except PlanError as exc:
            raise PlanError(f"device[{i}].{exc.key}", exc.reason) from None
    return BusPlan(bus, tuple(plans))


def format_block(block: ReadBlock) -> str:
    """``FC03 0x2601+14`` followed by the registers it carries and the registers discarded."""
    names = " ".join(f"{s.name}@{s.address:#06x}" for s in block.registers)
    discarded = block.count - sum(s.width for s in block.registers)
    tail = f" (+{discarded} discarded)" if discarded else ""
    return f"FC{block.function:02d} {block.address:#06x}+{block.count}: {names}{tail}"


def _line_name(bus: BusConfig) -> str:
    return f"{bus.baudrate} {bus.bytesize}{bus.parity}{bus.stopbits}"


def format_bus_plan(plan: BusPlan) -> list[str]:
    """The plan of one bus as stable text lines (no timing)."""
    bus = plan.config
    out = [f"bus {bus.name}: port {bus.port}, {_line_name(bus)}, max_gap {bus.max_gap}"]
    for d in plan.devices:
        source = d.config.profile if d.config.profile is not None else "inline"
        out.append(
            f"  device {d.name}: slave {d.slave}, profile {source}, max_gap {d.max_gap},"
            f" max_read_count {d.max_count}"
        )
        out.extend(f"    {format_block(b)}" for b in d.blocks)
        out.append(
            f"    {d.requests} request{'s' if d.requests != 1 else ''},"
            f" {d.registers_read} registers read ({d.registers_used} used),"
            f" {d.naive_requests} one per register"
        )
    return out

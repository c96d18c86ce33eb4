"""From a station configuration to planned buses: resolve each device's register map.

A device names a builtin profile (``profile = "sonde-multi"``), a profile file (a path, relative
to the station file) or carries its register map inline (``registers = [...]``). Every problem
is a :class:`~sanduan.shared.errors.ConfigError` naming the station file (or the profile file)
and the key.
"""

from __future__ import annotations

from pathlib import Path

from sanduan.edge.core.plan import BusPlan, PlanError, plan_bus
from sanduan.shared.config import DeviceConfig, StationConfig, load_station_config
from sanduan.shared.errors import ConfigError
from sanduan.shared.registers import (
    DeviceProfile,
    builtin_profiles,
    load_profile,
    profile_from_mapping,
)

__all__ = ["load_station", "plan_station", "resolve_profile"]


def resolve_profile(device: DeviceConfig, source: str, key: str) -> DeviceProfile:
    """The register map of ``device``; ``key`` is its place in the file (``bus[0].device[1]``)."""
    if device.registers is not None:
        data = {"name": device.name, "slave": device.slave, "registers": device.registers}
        return profile_from_mapping(data, source, key)
    name = device.profile
    assert name is not None  # DeviceConfig guarantees one of profile/registers
    if name.endswith(".toml") or "/" in name:
        path = Path(name)
        if not path.is_absolute():
            path = Path(source).parent / path
        if not path.is_file():
            raise ConfigError(source, f"{key}.profile", f"profile file {str(path)!r} not found")
        return load_profile(path)
    profiles = builtin_profiles()
    if name not in profiles:
        known = ", ".join(sorted(profiles))
        raise ConfigError(
            source,
            f"{key}.profile",
            f"unknown profile {name!r}; builtin profiles: {known} (or give a .toml path)",
        )
    return profiles[name]


def plan_station(config: StationConfig, source: str | Path) -> list[BusPlan]:
    """Resolve every device's register map and plan every bus, in configuration order."""
    src = str(source)
    plans = []
    for i, bus in enumerate(config.bus):
        profiles = {
            dev.name: resolve_profile(dev, src, f"bus[{i}].device[{j}]")
            for j, dev in enumerate(bus.device)
        }
        try:
            plans.append(plan_bus(bus, profiles))
        except PlanError as exc:
            raise ConfigError(src, f"bus[{i}].{exc.key}", exc.reason) from None
    return plans


def load_station(path: str | Path) -> tuple[StationConfig, list[BusPlan]]:
    """Load and validate a station file and plan its buses (raises ConfigError)."""
    config = load_station_config(path)
    return config, plan_station(config, path)

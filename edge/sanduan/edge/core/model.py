"""What the bus pollers hand to the rest of the agent."""

from __future__ import annotations

from dataclasses import dataclass

from sanduan.shared.model import Flag


@dataclass(frozen=True, slots=True)
class PolledValue:
    """A value read from a device, before it is committed to the buffer.

    ``ts_ms`` is the time it was read (UTC ms), or the analyzer's own result time when the
    device reports one. ``flag`` comes from the device's status or quality registers, or is
    ``B`` when the device could not be read.
    """

    device: str
    code: str
    ts_ms: int
    value: float
    flag: Flag = Flag.N

"""Simulated Modbus RTU sondes and analyzers on a (virtual) serial bus.

A :class:`SimulatedBus` owns one serial port and serves any number of :class:`SimulatedDevice`
slaves on it, the way a multi-drop RS-485 bus does: a request for a slave id nobody has, and a
request with a bad CRC, get no reply at all. Each device serves its profile's registers
(encoded with :func:`sanduan.shared.registers.encode_value`) from a value source, and can be told
to misbehave at any time through :class:`Faults`::

    with VirtualSerialPair() as (dev_port, client_port):
        sonde = SimulatedDevice(load_profile("sonde-multi"), slave=1, values={"w01001": 7.2})
        with SimulatedBus(dev_port, [sonde]) as bus:
            sonde.set_faults(silent=True)
            ...
            bus.stats.requests[1]

Analyzers: with ``cycle_s`` a device produces one result per cycle; its result-time register
holds the cycle's start and a callable value source is evaluated at that time, so values only
change when a new cycle's result appears. A value source may also give a status, quality or
result-time register by its register name (``{"status": 2, "result_time": ...}``), which is how
the rig's analyzer models report calibration and maintenance cycles.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import heapq
import math
import random
import select
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import serial

from sanduan.hil.ports import SPIN_S, PythonRelay, sleep_until
from sanduan.hil.rtu import (
    ILLEGAL_DATA_ADDRESS,
    ILLEGAL_DATA_VALUE,
    ILLEGAL_FUNCTION,
    Request,
    RequestHunter,
    exception_reply,
    read_reply,
)
from sanduan.shared.model import Flag
from sanduan.shared.registers import (
    MAX_READ_COUNT,
    DeviceProfile,
    RegisterSpec,
    Role,
    encode_nan,
    encode_value,
)

__all__ = ["BusStats", "Faults", "SimulatedBus", "SimulatedDevice", "ValueSource"]

# Values by parameter code or register name; or a function of time (Unix seconds) giving them.
ValueSource = Mapping[str, float] | Callable[[float], Mapping[str, float]]


@dataclass(frozen=True, slots=True)
class Faults:
    """How a device misbehaves. Several may be combined (e.g. slow + stuck).

    - ``silent``: no reply at all (an offline or unpowered device).
    - ``crc_corrupt``: the right reply with a wrong CRC.
    - ``garbage``: random bytes instead of a reply.
    - ``delay_s``: reply this much later (a slow device; beyond the client's timeout the late
      reply lands in the next transaction, as on a real bus).
    - ``exception``: answer every request with this Modbus exception code.
    - ``stuck``: keep serving the registers as they were when the fault was set.
    - ``nan``: serve the NaN sentinel for all value registers (True) or for the given codes or
      register names.
    """

    silent: bool = False
    crc_corrupt: bool = False
    garbage: bool = False
    delay_s: float = 0.0
    exception: int | None = None
    stuck: bool = False
    nan: bool | frozenset[str] = False

    @property
    def any(self) -> bool:
        return self != Faults()


class SimulatedDevice:
    """One Modbus RTU slave serving a device profile's registers. Thread-safe setters."""

    def __init__(
        self,
        profile: DeviceProfile,
        slave: int | None = None,
        values: ValueSource | None = None,
        *,
        cycle_s: float | None = None,
        result_time: float | None = None,
        turnaround_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
        name: str | None = None,
    ) -> None:
        self.profile = profile
        self.slave = profile.slave if slave is None else slave
        if not 1 <= self.slave <= 247:
            raise ValueError(f"slave id {self.slave} is not in 1..247")
        self.name = name or f"{profile.name}@{self.slave}"
        self.cycle_s = cycle_s
        self.turnaround_s = turnaround_s
        self.clock = clock
        self.requests = 0  # requests addressed to this device (good CRC)
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._faults = Faults()
        self._stuck: dict[int, dict[int, int]] | None = None
        self._source: ValueSource = values if values is not None else {}
        self._overrides: dict[str, float] = {}
        self._result_time = result_time
        self._set_at = clock()
        self._by_key: dict[str, RegisterSpec] = {}
        for spec in profile.registers:
            self._by_key[spec.name] = spec
            if spec.code is not None:
                self._by_key[spec.code] = spec
        self._span: dict[int, tuple[int, int]] = {}
        for fc in (3, 4):
            specs = [s for s in profile.registers if s.function == fc]
            if specs:
                self._span[fc] = (min(s.address for s in specs), max(s.end for s in specs))

    # -- runtime control -------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, **changes: Any) -> Faults:
        """Change some fault fields (``silent=True``, ``delay_s=0.5``, ``nan={"w01001"}``...)."""
        nan = changes.get("nan")
        if nan is not None and not isinstance(nan, bool):
            changes["nan"] = frozenset(str(k) for k in nan)
        with self._lock:
            new = dataclasses.replace(self._faults, **changes)
            if not new.stuck:
                self._stuck = None
            elif not self._faults.stuck:
                self._stuck = {fc: self._image(fc, self.clock()) for fc in self._span}
            self._faults = new
            return new

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = Faults()
            self._stuck = None

    def set_values(self, values: ValueSource) -> None:
        """Replace the value source (a mapping, or a function of Unix time)."""
        with self._lock:
            self._source = values
            self._set_at = self.clock()

    def set(self, key: str, value: float) -> None:
        """Force one register (by name or parameter code): a value, a raw status or a time."""
        with self._lock:
            spec = self._by_key.get(key)
            if spec is None:
                raise KeyError(f"{self.name}: no register {key!r}")
            self._overrides[spec.name] = value
            self._set_at = self.clock()

    def unset(self, key: str) -> None:
        with self._lock:
            spec = self._by_key.get(key)
            if spec is not None:
                self._overrides.pop(spec.name, None)

    def set_status(self, status: int | Flag, register: str | None = None) -> None:
        """Set a status register (the first one by default) to a raw value or to a flag."""
        specs = [s for s in self.profile.registers if s.role is Role.STATUS]
        if register is not None:
            specs = [self._by_key[register]]
        if not specs:
            raise KeyError(f"{self.name}: profile {self.profile.name} has no status register")
        spec = specs[0]
        raw = status if isinstance(status, int) and not isinstance(status, Flag) else None
        if raw is None:
            raw = next((k for k, f in spec.flags.items() if f == status), None)
            if raw is None:
                raise ValueError(f"{self.name}: {spec.name} has no raw value for flag {status}")
        self.set(spec.name, raw)

    def new_result(self, values: Mapping[str, float], at: float | None = None) -> None:
        """An analyzer finished a cycle: new values and a new result time."""
        with self._lock:
            self._source = dict(values)
            self._result_time = self.clock() if at is None else at
            self._set_at = self._result_time

    # -- register image ----------------------------------------------------------------------

    def _default_raw(self, spec: RegisterSpec) -> float:
        return float(next((k for k, f in spec.flags.items() if f is Flag.N), 0))

    def _value_of(self, spec: RegisterSpec, values: Mapping[str, float], rtime: float) -> float:
        if spec.name in self._overrides:
            return self._overrides[spec.name]
        if spec.role is Role.VALUE:
            v = values.get(spec.code or "", values.get(spec.name))
            return math.nan if v is None else float(v)
        if spec.name in values:  # a status, quality or result time given by the value source
            return float(values[spec.name])
        if spec.role is Role.RESULT_TIME:
            return float(math.floor(rtime))
        return self._default_raw(spec)

    def _image(self, fc: int, now: float) -> dict[int, int]:
        """Register address -> 16-bit word for one function code. Caller holds the lock."""
        if self._stuck is not None and fc in self._stuck:
            return self._stuck[fc]
        if self.cycle_s:
            at = math.floor(now / self.cycle_s) * self.cycle_s
            rtime = at if self._result_time is None else self._result_time
        else:
            at = now
            if self._result_time is not None:
                rtime = self._result_time
            else:
                rtime = now if callable(self._source) else self._set_at
        source = self._source
        values = source(at) if callable(source) else source
        nan = self._faults.nan
        lo, hi = self._span[fc]
        image = dict.fromkeys(range(lo, hi), 0)
        for spec in self.profile.registers:
            if spec.function != fc:
                continue
            if spec.role is Role.VALUE and (
                nan is True or (isinstance(nan, frozenset) and {spec.name, spec.code} & nan)
            ):
                words = encode_nan(spec)
            else:
                v = self._value_of(spec, values, rtime)
                try:
                    words = encode_value(v, spec)
                except ValueError:
                    words = encode_nan(spec)  # out of the register's range
            for i, w in enumerate(words):
                image[spec.address + i] = w
        return image

    def read(self, function: int, address: int, count: int) -> list[int] | int:
        """The words a read would return, or the Modbus exception code it would get."""
        if function not in (3, 4):
            return ILLEGAL_FUNCTION
        if not 1 <= count <= MAX_READ_COUNT:
            return ILLEGAL_DATA_VALUE
        span = self._span.get(function)
        if span is None or address < span[0] or address + count > span[1]:
            return ILLEGAL_DATA_ADDRESS
        with self._lock:
            image = self._image(function, self.clock())
        return [image[a] for a in range(address, address + count)]

    def handle(self, req: Request) -> tuple[float, bytes | None]:
        """(delay, reply) for a request addressed to this device; reply None means silence."""
        self.requests += 1
        f = self._faults
        delay = self.turnaround_s + f.delay_s
        if f.silent:
            return delay, None
        if f.exception is not None:
            return delay, exception_reply(self.slave, req.function, f.exception)
        result = self.read(req.function, req.address, req.count)
        if isinstance(result, int):
            reply = exception_reply(self.slave, req.function, result)
        else:
            reply = read_reply(self.slave, req.function, result)
        if f.garbage:
            n = self._rng.randint(3, max(3, len(reply)))
            return delay, bytes(self._rng.getrandbits(8) for _ in range(n))
        if f.crc_corrupt:
            reply = reply[:-1] + bytes((reply[-1] ^ 0xA5,))
        return delay, reply


@dataclass
class BusStats:
    """What a bus saw. ``requests`` counts good-CRC requests per slave id, present or not."""

    frames: int = 0
    crc_errors: int = 0
    absent: int = 0  # requests for a slave id no device has (left unanswered)
    replies: int = 0
    requests: collections.Counter[int] = field(default_factory=collections.Counter)


class SimulatedBus:
    """Serves several simulated slaves on one serial port from a background thread."""

    def __init__(
        self,
        port: str,
        devices: Iterable[SimulatedDevice],
        *,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        silence_s: float = 0.003,
        log_size: int = 10_000,
        line: PythonRelay | None = None,
    ) -> None:
        self.port = port
        self.line = line
        """The relay emulating the line ``port`` is an end of, when it runs in this process: a
        request's turnaround then counts from when it ended on the emulated wire and a reply is
        on the wire from when it is written (:mod:`sanduan.hil.ports`), not from when a thread
        noticed."""
        self.devices: dict[int, SimulatedDevice] = {}
        for d in devices:
            if d.slave in self.devices:
                raise ValueError(f"two devices with slave id {d.slave} on {port}")
            self.devices[d.slave] = d
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.silence_s = silence_s
        self.stats = BusStats()
        # (monotonic time, slave, function, address, count) of each good-CRC request
        self.log: collections.deque[tuple[float, int, int, int, int]] = collections.deque(
            maxlen=log_size
        )
        self._serial: serial.Serial | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._pending: list[tuple[float, int, bytes]] = []
        self._seq = 0

    def add(self, device: SimulatedDevice) -> None:
        if device.slave in self.devices:
            raise ValueError(f"two devices with slave id {device.slave} on {self.port}")
        self.devices = {**self.devices, device.slave: device}

    def remove(self, slave: int) -> None:
        self.devices = {k: v for k, v in self.devices.items() if k != slave}

    def reset_stats(self) -> None:
        self.stats = BusStats()
        self.log.clear()
        for d in self.devices.values():
            d.requests = 0

    def start(self) -> SimulatedBus:
        if self._thread is not None:
            return self
        self._serial = serial.Serial(
            self.port,
            baudrate=self.baudrate,
            parity=self.parity,
            stopbits=self.stopbits,
            timeout=0,
        )
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"bus {self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
            self._serial = None

    def __enter__(self) -> SimulatedBus:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _dispatch(self, req: Request, received: float | None = None) -> None:
        """Answer one request; the reply is due ``delay`` after the request was received (the
        time spent computing it here is part of the device's turnaround, not added to it)."""
        if received is None:
            received = time.monotonic()
        stats = self.stats
        stats.frames += 1
        stats.requests[req.slave] += 1
        self.log.append((time.monotonic(), req.slave, req.function, req.address, req.count))
        device = self.devices.get(req.slave)
        if device is None:  # absent slave or broadcast (0): silence
            stats.absent += 1
            return
        delay, reply = device.handle(req)
        if reply is None:
            return
        self._seq += 1
        heapq.heappush(self._pending, (received + delay, self._seq, reply))

    def _run(self) -> None:
        ser = self._serial
        assert ser is not None
        fd = ser.fileno()
        hunter = RequestHunter()
        last_rx = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            while self._pending and self._pending[0][0] <= now:
                _, _, reply = heapq.heappop(self._pending)
                if self.line is not None:
                    self.line.sending(self.port, time.monotonic())
                try:
                    ser.write(reply)
                except (serial.SerialException, OSError):
                    return
                self.stats.replies += 1
            # Wait for bytes: a short silence ends a partial frame; an idle line waits longer.
            timeout = self.silence_s if hunter.buf else 0.05
            if self._pending:
                due = self._pending[0][0]
                if due - now <= SPIN_S:  # a reply is due: be on time, not 0.1 ms late
                    sleep_until(due)
                    continue
                timeout = max(0.0, min(timeout, due - now - SPIN_S))
            try:
                ready, _, _ = select.select([fd], [], [], timeout)
                data = ser.read(ser.in_waiting or 1) if ready else b""
            except (serial.SerialException, OSError, TypeError, ValueError):
                if self._stop.is_set():
                    return
                time.sleep(0.01)
                continue
            received = time.monotonic()
            if data and self.line is not None:
                # The bytes read ended on the emulated wire at or before the relay's stamp (a
                # stamp older than the previous read is none of theirs: keep the read's time).
                arrived = self.line.arrival(self.port)
                if last_rx < arrived < received:
                    received = arrived
            if data:
                requests = hunter.feed(data)
            elif hunter.buf and time.monotonic() - last_rx >= self.silence_s:
                requests = hunter.silence()
            else:
                requests = []
            if data:
                last_rx = time.monotonic()
            for req in requests:
                self._dispatch(req, received)
            self.stats.crc_errors = hunter.crc_errors

"""Virtual serial ports: two device paths connected like a null-modem cable.

:class:`VirtualSerialPair` uses socat when it is on PATH and otherwise a pure-Python relay (two
pseudo-terminals whose master ends a thread copies between), so it works with nothing but Python.
The Python relay can also emulate the line's speed: with ``baud=`` each chunk is delivered only
after ``len(chunk) * bits_per_char / baud`` seconds of wire time, one direction at a time, as on
a half-duplex RS-485 bus.

A simulated slave served in the same process (:class:`sanduan.hil.devices.SimulatedBus` given
``line=`` the relay) can also take the line's own times instead of its thread's: when a frame
delivered to it ended on the emulated wire (:meth:`PythonRelay.arrival`), and, announcing a
write (:meth:`PythonRelay.sending`), have its reply on the wire from the moment it writes it.
Without that, each of those two hops adds a pseudo-terminal transfer and a thread wake-up (about
0.1 ms each, milliseconds now and then) that a wire does not have.

Either way the pair keeps its own file descriptor open on both ends, so a client that closes and
reopens its port (as a reconnecting poller does) finds the pair still there.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Literal

from sanduan.shared.errors import DeviceError

__all__ = ["Backend", "PythonRelay", "VirtualSerialPair", "sleep_until", "socat_available"]

Backend = Literal["auto", "socat", "python"]

# Called with (direction "ab"/"ba", data) before delivery; returns what to deliver (a place to
# drop, corrupt or delay bytes on the line).
LineHook = Callable[[str, bytes], bytes]


def socat_available() -> bool:
    return shutil.which("socat") is not None


SPIN_S = 0.0015
"""The last stretch of a timed wait is spent polling the clock: a sleep wakes 50-100 us late,
which is a tenth of a character time at 115200 baud and adds up on every frame."""


def sleep_until(deadline: float) -> None:
    """Wait until ``time.monotonic()`` reaches ``deadline``, to within a few microseconds."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if left > SPIN_S:
            time.sleep(left - SPIN_S)
        else:
            time.sleep(0)  # let other threads run while spinning


def _open_keepalive(path: str) -> int:
    """Open a pty slave end and keep it (never read), so its master never sees a hang-up."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    return fd


class PythonRelay:
    """Two pty pairs; a thread copies bytes between their master ends.

    ``baud`` (optional) emulates wire time; ``hook`` may rewrite the bytes in flight.
    """

    def __init__(
        self, baud: int | None = None, bits_per_char: int = 10, hook: LineHook | None = None
    ) -> None:
        self.baud = baud
        self.bits_per_char = bits_per_char
        self.hook = hook
        self.bytes_relayed = 0
        self.bytes_dropped = 0  # written while the receiving side's buffer was full
        self._masters: list[int] = []
        self._slaves: list[int] = []
        self.paths: tuple[str, str] = ("", "")
        self._stop_r, self._stop_w = -1, -1
        self._thread: threading.Thread | None = None
        self._arrived: dict[str, float] = {}  # direction -> when its last chunk ended
        self._notes: dict[str, float] = {}  # direction -> when an in-process writer began

    def _directions(self, path: str) -> tuple[str, str]:
        """(the direction delivering to ``path``, the direction carrying what it writes)."""
        if path == self.paths[0]:
            return "ba", "ab"
        if path == self.paths[1]:
            return "ab", "ba"
        raise ValueError(f"{path} is not an end of this relay ({self.paths})")

    def arrival(self, path: str) -> float:
        """When (``time.monotonic()``) the latest bytes delivered to the end ``path`` finished
        arriving on the emulated wire: their delivery time, set before they are written to
        ``path``, so whatever a reader finds there ended at or before it (-inf before any)."""
        return self._arrived.get(self._directions(path)[0], -math.inf)

    def sending(self, path: str, at: float) -> None:
        """An in-process writer on ``path`` is about to write (call it just before): its bytes
        are on the wire from ``at``, not from when the relay's thread reads them."""
        self._notes[self._directions(path)[1]] = at

    def start(self) -> tuple[str, str]:
        paths = []
        for _ in range(2):
            m, s = os.openpty()
            tty.setraw(m)
            tty.setraw(s)
            os.set_blocking(m, False)
            self._masters.append(m)
            self._slaves.append(s)
            paths.append(os.ttyname(s))
        self._stop_r, self._stop_w = os.pipe()
        self.paths = (paths[0], paths[1])
        self._thread = threading.Thread(target=self._run, name="serial-relay", daemon=True)
        self._thread.start()
        return self.paths

    def _deliver(self, direction: str, fd: int, data: bytes, received: float) -> None:
        if self.hook is not None:
            data = self.hook(direction, data)
        # A write announced before these bytes were read started on the wire then (a later
        # one cannot have: it is announced after these bytes were written).
        start = min(self._notes.pop(direction, received), received)
        if self.baud:
            deadline = start + len(data) * self.bits_per_char / self.baud
            sleep_until(deadline)
            self._arrived[direction] = deadline
        else:
            self._arrived[direction] = time.monotonic()
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                self.bytes_dropped += len(view)  # receiver overrun, as on a real UART
                return
            self.bytes_relayed += n
            view = view[n:]

    def _run(self) -> None:
        a, b = self._masters
        peer = {a: (b, "ab"), b: (a, "ba")}
        while True:
            ready, _, _ = select.select([a, b, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:  # EIO: no slave open; cannot happen while we hold ours
                    time.sleep(0.01)
                    continue
                if data:
                    dst, direction = peer[fd]
                    self._deliver(direction, dst, data, time.monotonic())

    def stop(self) -> None:
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(timeout=2)
            self._thread = None
        for fd in (*self._masters, *self._slaves, self._stop_r, self._stop_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._masters.clear()
        self._slaves.clear()
        self._stop_r = self._stop_w = -1


class VirtualSerialPair:
    """A null-modem pair of serial device paths; use as a context manager::

        with VirtualSerialPair() as (dev_port, client_port):
            ...

    ``backend``: "auto" (socat if on PATH and no line emulation is asked for, else Python),
    "socat" or "python". ``baud``/``bits_per_char``/``hook`` need the Python relay.
    """

    def __init__(
        self,
        backend: Backend = "auto",
        *,
        baud: int | None = None,
        bits_per_char: int = 10,
        hook: LineHook | None = None,
        startup_timeout: float = 5.0,
    ) -> None:
        emulate = baud is not None or hook is not None
        if backend == "auto":
            backend = "socat" if socat_available() and not emulate else "python"
        if backend == "socat" and emulate:
            raise ValueError("baud/hook emulation needs the python backend")
        if backend == "socat" and not socat_available():
            raise DeviceError("socat is not on PATH; use backend='python'")
        self.backend: Literal["socat", "python"] = backend
        self.startup_timeout = startup_timeout
        self.relay: PythonRelay | None = (
            PythonRelay(baud, bits_per_char, hook) if backend == "python" else None
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._keep: list[int] = []
        self.a = ""
        self.b = ""

    def open(self) -> tuple[str, str]:
        if self.relay is not None:
            self.a, self.b = self.relay.start()
            return self.a, self.b
        self._tmp = tempfile.TemporaryDirectory(prefix="sanduan-pty-")
        a = str(Path(self._tmp.name) / "a")
        b = str(Path(self._tmp.name) / "b")
        log_path = Path(self._tmp.name) / "socat.log"
        socat = shutil.which("socat") or "socat"
        with log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + self.startup_timeout
        # socat logs "starting data transfer loop" once both ptys exist.
        while b"starting data transfer loop" not in log_path.read_bytes():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                reason = log_path.read_text(errors="replace").strip()[-300:]
                self.close()
                raise DeviceError(f"socat did not create the pty pair: {reason}")
            time.sleep(0.002)
        self._keep = [_open_keepalive(a), _open_keepalive(b)]
        self.a, self.b = a, b
        return a, b

    def close(self) -> None:
        for fd in self._keep:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._keep = []
        if self.relay is not None:
            self.relay.stop()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> tuple[str, str]:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

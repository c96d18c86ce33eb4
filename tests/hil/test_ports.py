from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import serial

from sanduan.hil.ports import VirtualSerialPair, socat_available

pytestmark = [pytest.mark.serial]

BACKENDS = [
    pytest.param(
        "socat", marks=pytest.mark.skipif(not socat_available(), reason="socat not installed")
    ),
    "python",
]


@pytest.fixture(params=BACKENDS)
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    with VirtualSerialPair(request.param) as ports:
        yield ports


def _open(path: str) -> serial.Serial:
    return serial.Serial(path, baudrate=115200, timeout=1)


def test_bytes_flow_both_ways(pair: tuple[str, str]) -> None:
    a, b = pair
    with _open(a) as sa, _open(b) as sb:
        sa.write(b"\x01\x03request")
        assert sb.read(9) == b"\x01\x03request"
        payload = bytes(range(256))
        sb.write(payload)
        assert sa.read(256) == payload


def test_a_port_can_be_reopened(pair: tuple[str, str]) -> None:
    a, b = pair
    with _open(a) as sa:
        with _open(b) as sb:
            sa.write(b"one")
            assert sb.read(3) == b"one"
        with _open(b) as sb:
            sb.reset_input_buffer()
            sa.write(b"two")
            assert sb.read(3) == b"two"


def test_auto_picks_a_backend() -> None:
    pair = VirtualSerialPair()
    assert pair.backend == ("socat" if socat_available() else "python")
    assert VirtualSerialPair(baud=9600).backend == "python"


def test_socat_cannot_emulate_baud() -> None:
    with pytest.raises(ValueError, match="python backend"):
        VirtualSerialPair("socat", baud=9600)


def test_python_relay_emulates_wire_time() -> None:
    pair = VirtualSerialPair("python", baud=9600, bits_per_char=10)
    with pair as (a, b), _open(a) as sa, _open(b) as sb:
        t0 = time.perf_counter()
        sa.write(bytes(96))  # 96 * 10 / 9600 = 100 ms on the wire
        assert len(sb.read(96)) == 96
        elapsed = time.perf_counter() - t0
    assert 0.09 <= elapsed < 0.5


def test_python_relay_hook_rewrites_the_line() -> None:
    def hook(direction: str, data: bytes) -> bytes:
        return data.upper() if direction == "ab" else data

    pair = VirtualSerialPair("python", hook=hook)
    with pair as (a, b), _open(a) as sa, _open(b) as sb:
        sa.write(b"abc")
        assert sb.read(3) == b"ABC"
        sb.write(b"xyz")
        assert sa.read(3) == b"xyz"
    assert pair.relay is not None
    assert pair.relay.bytes_relayed == 6

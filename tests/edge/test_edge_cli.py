"""``sanduan edge check-config`` and ``sanduan edge poll --once`` through the real command."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sanduan.cli import app
from sanduan.hil.devices import SimulatedBus, SimulatedDevice
from sanduan.hil.ports import VirtualSerialPair
from sanduan.shared.model import Flag
from sanduan.shared.registers import load_profile

runner = CliRunner()

VALUES = {
    "w01001": 7.42,
    "w01009": 8.137,
    "w01010": 18.25,
    "w01014": 412.5,
    "w01003": 12.3,
    "w01016": 3.4,
    "w21003": 0.482,
    "w21011": 0.0873,
}

STATION = """
[station]
id = "cli-test"

[[bus]]
name = "rs485-1"
port = "{port}"
baudrate = 115200

  [[bus.device]]
  name = "sonde"
  slave = 1
  profile = "sonde-multi"
  timeout_s = 0.15
  retries = 0

  [[bus.device]]
  name = "nh3n"
  slave = 2
  profile = "nh3n-analyzer"
  timeout_s = 0.15
  retries = 0
{extra}"""

GHOST = """
  [[bus.device]]
  name = "ghost"
  slave = 9
  profile = "do-ldo"
  timeout_s = 0.1
  retries = 0
"""


@pytest.fixture
def served() -> Iterator[tuple[str, SimulatedDevice]]:
    with VirtualSerialPair() as (dev_port, client_port):
        sonde = SimulatedDevice(load_profile("sonde-multi"), 1, VALUES)
        nh3n = SimulatedDevice(
            load_profile("nh3n-analyzer"), 2, VALUES, result_time=time.time() - 60
        )
        with SimulatedBus(dev_port, [sonde, nh3n]):
            yield client_port, nh3n


def write(tmp_path: Path, port: str, extra: str = "") -> Path:
    path = tmp_path / "station.toml"
    path.write_text(STATION.format(port=port, extra=extra), encoding="utf-8")
    return path


@pytest.mark.serial
def test_poll_once_prints_a_table_with_names_flags_and_classes(
    tmp_path: Path, served: tuple[str, SimulatedDevice]
) -> None:
    port, nh3n = served
    nh3n.set_status(Flag.C)
    result = runner.invoke(app, ["edge", "poll", "--config", str(write(tmp_path, port)), "--once"])
    assert result.exit_code == 0, result.output
    rows = {
        line.split("│")[3].strip(): line
        for line in result.output.splitlines()
        if line.count("│") >= 6
    }
    assert {"pH", "DO", "temperature", "conductivity", "turbidity", "chlorophyll", "NH3-N"} <= set(
        rows
    )
    ph = [c.strip() for c in rows["pH"].split("│")]
    assert ph[1:6] == ["rs485-1", "sonde", "pH", "7.42", "N"]
    assert ph[6] == "I"  # pH 6-9 is Class I
    do = [c.strip() for c in rows["DO"].split("│")]
    assert do[4] == "8.137" and do[6] == "I"  # DO >= 7.5 mg/L
    nh3 = [c.strip() for c in rows["NH3-N"].split("│")]
    assert nh3[5] == "C" and nh3[6] == "-"  # calibration values are not graded
    assert "class" in result.output


@pytest.mark.serial
def test_poll_once_reports_a_silent_device_and_exits_1(
    tmp_path: Path, served: tuple[str, SimulatedDevice]
) -> None:
    port, _ = served
    path = write(tmp_path, port, GHOST)
    result = runner.invoke(app, ["edge", "poll", "--config", str(path), "--once"])
    assert result.exit_code == 1
    assert "bus rs485-1: device ghost (slave 9) FC03 0x0000+2: no reply within 0.1 s" in (
        result.output
    )
    assert "[timeout 1]" in result.output
    assert "7.42" in result.output  # the others were read


def test_poll_once_without_the_port(tmp_path: Path) -> None:
    path = write(tmp_path, str(tmp_path / "ttyUSB9"))
    result = runner.invoke(app, ["edge", "poll", "--config", str(path), "--once"])
    assert result.exit_code == 1
    assert "bus rs485-1: cannot open serial port" in result.output


def test_config_errors_exit_2_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(
        STATION.format(port="/dev/null", extra="").replace('"nh3n-analyzer"', '"nh3n"'),
        encoding="utf-8",
    )
    for args in (
        ["edge", "check-config", str(path)],
        ["edge", "poll", "--config", str(path), "--once"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert f"{path}: bus[0].device[1].profile: unknown profile 'nh3n'" in result.output
    missing = runner.invoke(app, ["edge", "check-config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2
    assert "nope.toml: file not found" in missing.output


def test_check_config_strict_fails_on_warnings(tmp_path: Path) -> None:
    path = write(tmp_path, "/dev/ttyUSB0").read_text(encoding="utf-8")
    busy = tmp_path / "busy.toml"
    busy.write_text(path.replace("baudrate = 115200", "baudrate = 1200"), encoding="utf-8")
    ok = runner.invoke(app, ["edge", "check-config", "--plan-only", str(busy)])
    assert ok.exit_code == 0
    assert "warning: bus rs485-1: utilisation" not in ok.output  # 60 s periods still fit
    fast = tmp_path / "fast.toml"
    fast.write_text(
        path.replace("baudrate = 115200", "baudrate = 1200").replace(
            "retries = 0", "retries = 0\n  poll_period_s = 0.5"
        ),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["edge", "check-config", "--plan-only", "--strict", str(fast)])
    assert result.exit_code == 1
    assert "warning: bus rs485-1: utilisation" in result.output
    assert "1200 8N1" in result.output

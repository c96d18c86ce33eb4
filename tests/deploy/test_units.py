"""The shipped systemd units' commands, run the way systemd runs them.

``deploy/install.sh --root ROOT --no-pip`` lays out /etc/sanduan and /etc/systemd/system under a
temporary root; the test moves the example configurations' absolute paths into that root, points
them at a Mosquitto with the shipped TLS, password and ACL configuration on a free port (the
station logs in as CX-GT-01, collector instance 1 as central-1), writes the passwords where the
units' ``LoadCredential=`` reads them, and then, for each unit: copies the credentials as systemd
would, runs every ``ExecStartPre=`` (exit 0 required), starts ``ExecStart=`` with the unit's
``Environment=``, waits until it is connected to the broker, sends SIGTERM and requires exit 0.
A configuration error must end ``ExecStart=`` with a status the unit does not restart on.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.brokers import TlsBroker, have_mosquitto_tls
from tests.deploy.systemd_units import Unit

from sanduan.central import cli as central_cli
from sanduan.edge import cli as edge_cli

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
INSTALL = DEPLOY / "install.sh"
STATION = "CX-GT-01"
ROLES = ["--role", "edge", "--role", "central"]
USERS = {STATION: "station-pw", "central-1": "central-1-pw"}


def shipped(name: str, **kw: object) -> Unit:
    return Unit.load(DEPLOY / "systemd" / name, **kw)


# --- the unit files themselves --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "config_error"),
    [
        ("sanduan-edge.service", edge_cli.CONFIG_ERROR),
        ("sanduan-central@.service", central_cli.CONFIG_ERROR),
    ],
)
def test_restart_policy_follows_the_exit_codes(name: str, config_error: int) -> None:
    unit = shipped(name)
    assert unit.value("Restart") == "on-failure"
    prevent = unit.value("RestartPreventExitStatus").split()
    assert str(config_error) in prevent
    assert str(edge_cli.RUN_FAILED) not in prevent and str(central_cli.RUN_FAILED) not in prevent
    assert unit.value("StartLimitIntervalSec", "Unit") == "0"
    # RestartPreventExitStatus= does not cover ExecStartPre=: a failing check must not fail
    # the start (it would restart until the start limit); ExecStart ends with the error.
    (pre,) = unit.command("ExecStartPre")
    assert pre.ignore_failure and "check-config" in pre.argv
    assert unit.value("User") == "sanduan"


def test_edge_may_open_serial_ports() -> None:
    unit = shipped("sanduan-edge.service")
    assert unit.value("SupplementaryGroups") == "dialout"
    assert not unit.values("PrivateDevices") and not unit.values("DevicePolicy")
    assert not unit.values("ProtectClock") and not unit.values("DeviceAllow")


def test_each_collector_instance_has_its_own_client_id_and_login() -> None:
    one, two = (
        shipped("sanduan-central@.service", instance=i).command("ExecStart")[0].argv
        for i in ("1", "2")
    )

    def option(argv: list[str], name: str) -> str:
        return argv[argv.index(name) + 1]

    assert option(one, "--client-id") == "sanduan-central-1"
    assert option(two, "--client-id") == "sanduan-central-2"
    assert option(one, "--mqtt-user") == "central-1" and option(two, "--mqtt-user") == "central-2"


def test_secrets_come_as_credentials() -> None:
    for name, path in [
        ("sanduan-edge.service", "/etc/sanduan/mqtt-password"),
        ("sanduan-central@.service", "/etc/sanduan/central-%i.password"),
    ]:
        unit = shipped(name, credentials=Path("/run/credentials/x"))
        assert unit.values("LoadCredential") == [f"mqtt-password:{path}"]
        argv = unit.command("ExecStart")[0].argv
        assert argv[argv.index("--mqtt-password-file") + 1] == "/run/credentials/x/mqtt-password"


# --- the commands, run -------------------------------------------------------------------------


@dataclass
class Installed:
    root: Path
    broker: TlsBroker
    tmp: Path


def _move_paths(text: str, root: Path) -> str:
    """A TOML file's absolute paths (quoted, or after sqlite:///) moved under ``root``."""
    return re.sub(r'(?<=["/])/(etc|var|dev)/', lambda m: f"{root}/{m.group(1)}/", text)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    if not have_mosquitto_tls():
        pytest.skip("needs mosquitto, mosquitto_passwd and openssl")
    tmp = tmp_path_factory.mktemp("units")
    root = tmp / "root"
    subprocess.run(
        ["sh", str(INSTALL), "--root", str(root), "--no-pip", *ROLES],
        check=True,
        capture_output=True,
    )
    broker = TlsBroker.start(tmp_path_factory.mktemp("broker"), USERS)
    etc = root / "etc" / "sanduan"
    station = (etc / "station.toml").read_text(encoding="utf-8")
    station = station.replace("mqtts://centre.example.org:8883", f"mqtts://localhost:{broker.port}")
    (etc / "station.toml").write_text(_move_paths(station, root), encoding="utf-8")
    # The RS-485 adapters of the example: pseudo-terminals stand in (check-config opens them).
    ptys: list[int] = []
    (root / "dev").mkdir(exist_ok=True)
    for name in sorted(set(re.findall(r"/dev/(tty\w+)", station))):
        master, slave = os.openpty()
        ptys += [master, slave]
        (root / "dev" / name).symlink_to(os.ttyname(slave))
    central = (etc / "central.toml").read_text(encoding="utf-8")
    central = central.replace("mqtts://127.0.0.1:8883", f"mqtts://127.0.0.1:{broker.port}")
    (etc / "central.toml").write_text(_move_paths(central, root), encoding="utf-8")
    shutil.copy(broker.ca, etc / "ca.pem")
    for name, user in [("mqtt-password", STATION), ("central-1.password", "central-1")]:
        (etc / name).write_text(USERS[user] + "\n", encoding="utf-8")
        (etc / name).chmod(0o600)

    from sanduan.central.store import open_store  # what `sanduan central migrate` does

    open_store(f"sqlite:///{root}/var/lib/sanduan/central.db", migrate=True).close()
    yield Installed(root, broker, tmp)
    broker.stop()
    for fd in ptys:
        os.close(fd)


def _unit(inst: Installed, name: str, instance: str = "") -> tuple[Unit, dict[str, str]]:
    unit = Unit.load(
        inst.root / "etc" / "systemd" / "system" / name,
        instance=instance,
        root=inst.root,
        credentials=inst.tmp / f"credentials-{name}",
    )
    env = {**os.environ, **unit.environment(), **unit.load_credentials()}
    return unit, env


def _start_pre(unit: Unit, env: dict[str, str]) -> None:
    for pre in unit.command("ExecStartPre"):
        done = subprocess.run(
            pre.argv, check=False, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{pre.argv}: {done.stdout}{done.stderr}"


def _run_until(unit: Unit, env: dict[str, str], ready: str) -> tuple[int, str]:
    """Start ``ExecStart=``, wait for the line ``ready``, SIGTERM it; (exit status, output)."""
    (main,) = unit.command("ExecStart")
    proc = subprocess.Popen(
        main.argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    up = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if ready in line:
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert up.wait(60), f"never '{ready}':\n{''.join(lines)}"
        assert proc.poll() is None, "".join(lines)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(float(unit.value("TimeoutStopSec")))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    return rc, "".join(lines)


def _with_config_error(unit: Unit, env: dict[str, str], config: Path) -> subprocess.Popen[bytes]:
    """ExecStart= started on a copy of ``config`` with an unknown section (it must exit)."""
    broken = config.with_name("broken-" + config.name)
    broken.write_text(config.read_text(encoding="utf-8") + "\n[oops]\n", encoding="utf-8")
    (main,) = unit.command("ExecStart")
    argv = [str(broken) if a == str(config) else a for a in main.argv]
    assert str(broken) in argv
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.process
@pytest.mark.mosquitto
def test_edge_unit_starts_connects_and_stops_cleanly(installed: Installed) -> None:
    unit, env = _unit(installed, "sanduan-edge.service")
    # The agent runs as shipped: without docstrings and asserts (-OO, docs/deploy.md).
    assert env["PYTHONOPTIMIZE"] == "2"
    broken = _with_config_error(unit, env, installed.root / "etc" / "sanduan" / "station.toml")
    _start_pre(unit, env)
    rc, out = _run_until(unit, env, f"connected to localhost:{installed.broker.port}")
    assert rc == 0, out
    assert (installed.root / "var" / "lib" / "sanduan" / "buffer.db").is_file()

    status = broken.wait(60)
    assert status == edge_cli.CONFIG_ERROR
    assert str(status) in unit.value("RestartPreventExitStatus").split()


@pytest.mark.process
@pytest.mark.mosquitto
def test_collector_unit_starts_connects_and_stops_cleanly(installed: Installed) -> None:
    unit, env = _unit(installed, "sanduan-central@.service", instance="1")
    broken = _with_config_error(unit, env, installed.root / "etc" / "sanduan" / "central.toml")
    _start_pre(unit, env)
    rc, out = _run_until(unit, env, "subscribed to")
    assert rc == 0, out
    assert "connected to" in out and "as sanduan-central-1" in out, out
    assert "session does not survive a restart" not in out, out

    status = broken.wait(60)
    assert status == central_cli.CONFIG_ERROR
    assert str(status) in unit.value("RestartPreventExitStatus").split()

"""deploy/install.sh in its ``--root DIR`` mode (no user, no systemctl, no network with
``--no-pip``): the files it writes, their modes, that it keeps an operator's files when run
again; and the shipped units as ``systemd-analyze verify`` reads them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sanduan.shared.config import load_central_config, load_station_config

pytestmark = pytest.mark.process

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
INSTALL = DEPLOY / "install.sh"
SH = shutil.which("dash") or "sh"
"""Debian's /bin/sh: the script must not need bash."""


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SH, str(INSTALL), "--root", str(root), "--no-pip", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_central_role(tmp_path: Path) -> None:
    done = install(tmp_path, "--role", "central")
    assert done.returncode == 0, done.stderr
    etc = tmp_path / "etc" / "sanduan"
    units = tmp_path / "etc" / "systemd" / "system"
    mosq = tmp_path / "etc" / "mosquitto"
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [
        "etc/mosquitto/conf.d/sanduan.conf",
        "etc/mosquitto/sanduan.acl",
        "etc/sanduan/central.toml",
        "etc/sanduan/county.toml",
        "etc/sanduan/rules.toml",
        "etc/systemd/system/sanduan-central@.service",
        "opt/sanduan/share/doc/deploy.md",
    ]
    shipped = DEPLOY / "systemd" / "sanduan-central@.service"
    assert (units / "sanduan-central@.service").read_bytes() == shipped.read_bytes()
    for name in ("county", "rules"):
        assert (etc / f"{name}.toml").read_bytes() == (DEPLOY / f"{name}.example.toml").read_bytes()
    for installed, source in [
        (mosq / "conf.d" / "sanduan.conf", "sanduan.conf"),
        (mosq / "sanduan.acl", "sanduan.acl"),
    ]:
        assert installed.read_bytes() == (DEPLOY / "mosquitto" / source).read_bytes()
    # The installed central.toml names the installed county and rules files, and loads.
    cfg = load_central_config(etc / "central.toml")
    assert cfg.central.county == etc / "county.toml"
    assert cfg.central.rules == etc / "rules.toml"
    assert mode(etc / "central.toml") == 0o640 and mode(mosq / "sanduan.acl") == 0o600
    assert mode(units / "sanduan-central@.service") == 0o644
    assert mode(tmp_path / "var" / "lib" / "sanduan") == 0o750
    assert "not creating the user" in done.stdout and "useradd" not in done.stdout


def test_edge_role(tmp_path: Path) -> None:
    done = install(tmp_path, "--role", "edge")
    assert done.returncode == 0, done.stderr
    station = tmp_path / "etc" / "sanduan" / "station.toml"
    assert station.read_bytes() == (DEPLOY / "station.example.toml").read_bytes()
    assert load_station_config(station).station.id == "CX-GT-01"
    assert (tmp_path / "etc" / "systemd" / "system" / "sanduan-edge.service").is_file()
    assert not (tmp_path / "etc" / "mosquitto").exists()
    assert not (tmp_path / "etc" / "systemd" / "system" / "sanduan-central@.service").exists()


def test_running_again_keeps_what_the_operator_changed(tmp_path: Path) -> None:
    assert install(tmp_path, "--role", "central", "--role", "edge").returncode == 0
    central = tmp_path / "etc" / "sanduan" / "central.toml"
    acl = tmp_path / "etc" / "mosquitto" / "sanduan.acl"
    central.write_text(central.read_text(encoding="utf-8") + "# local\n", encoding="utf-8")
    acl.write_text(acl.read_text(encoding="utf-8") + "user central-3\n", encoding="utf-8")
    edited = central.read_bytes(), acl.read_bytes()
    unit = tmp_path / "etc" / "systemd" / "system" / "sanduan-edge.service"
    unit.write_text("stale\n", encoding="utf-8")

    again = install(tmp_path, "--role", "central", "--role", "edge")
    assert again.returncode == 0, again.stderr
    assert (central.read_bytes(), acl.read_bytes()) == edited
    assert f"kept {acl}" in again.stdout
    # Units are replaced (local changes belong in drop-ins).
    assert unit.read_bytes() == (DEPLOY / "systemd" / "sanduan-edge.service").read_bytes()


@pytest.mark.parametrize("args", [[], ["--role", "gateway"], ["--role", "edge", "--bogus"]])
def test_bad_arguments_are_refused(tmp_path: Path, args: list[str]) -> None:
    done = install(tmp_path, *args)
    assert done.returncode == 2
    assert done.stderr.startswith("install.sh: ")
    assert not (tmp_path / "etc").exists()


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
@pytest.mark.parametrize("name", ["sanduan-edge.service", "sanduan-central@.service"])
def test_systemd_reads_the_units_without_complaint(name: str) -> None:
    """Only two kinds of notice are allowed: /opt/sanduan is not installed here, and (systemd
    before 254) RestartSteps=/RestartMaxDelaySec= are not known yet."""
    done = subprocess.run(
        ["systemd-analyze", "verify", str(DEPLOY / "systemd" / name)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    allowed = ("Command /opt/sanduan/bin/sanduan is not executable", "Unknown key 'Restart")
    other = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if line and not any(a in line for a in allowed)
    ]
    assert not other, other


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
@pytest.mark.parametrize("name", ["sanduan-edge.service", "sanduan-central@.service"])
def test_units_stay_hardened(name: str) -> None:
    """``systemd-analyze security`` rates the units 2.0 (edge) and 1.5 (collector) of 10; the
    shipped units before the hardening were 8.7 and 8.8 ("exposed")."""
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(DEPLOY / "systemd" / name)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
    if m is None:
        pytest.skip(f"this systemd-analyze cannot rate a unit file: {done.stderr.strip()}")
    assert float(m.group(1)) <= 2.5, done.stdout

"""What ``check-config`` checks before start-up: that what ``run`` needs is there.

A configuration file can be valid and still fail at start-up: a password file missing, a buffer
directory not created, a serial adapter unplugged, a broker refusing the credentials. The
functions here look at each such thing and return :class:`Check` results (``ok``, ``warning``
or ``error`` with the fix), one per thing, so an operator sees every problem at once.

The checks that touch the outside world (opening a serial port, connecting to the broker or the
database) go through :class:`Probes`, which tests replace. ``station_checks`` and
``central_checks`` assemble the list for a station and for the collector; the collector's
database probe is given by the caller (``sanduan.central.app``), since shared code does not know
the store.
"""

from __future__ import annotations

import functools
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from sanduan.shared.config import (
    BusConfig,
    CentralConfig,
    Hj212Credentials,
    MqttConfig,
    StationConfig,
    configure_tls,
    read_secret,
    split_hostport,
)
from sanduan.shared.errors import ConfigError
from sanduan.shared.logs import describe_connect_error

Status = Literal["ok", "warning", "error"]

ONLINE_TIMEOUT_S = 5.0
"""How long ``--online`` waits for the broker or the database."""


@dataclass(frozen=True, slots=True)
class Check:
    """One thing ``check-config`` looked at: its status, what it found and, if not ok, the fix."""

    status: Status
    what: str
    """The config key or the thing checked, e.g. ``uplink.password_file``, ``bus[0].port``."""
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<7} {self.what}: {self.detail}"
        return f"{text}; fix: {self.fix}" if self.fix else text


def ok(what: str, detail: str) -> Check:
    return Check("ok", what, detail)


def warning(what: str, detail: str, fix: str = "") -> Check:
    return Check("warning", what, detail, fix)


def error(what: str, detail: str, fix: str) -> Check:
    return Check("error", what, detail, fix)


def count(checks: Sequence[Check], status: Status) -> int:
    return sum(1 for c in checks if c.status == status)


def summary(checks: Sequence[Check], more_warnings: int = 0) -> str:
    """``"2 errors, 1 warning"`` for the last line (``more_warnings`` found elsewhere)."""
    e, w = count(checks, "error"), count(checks, "warning") + more_warnings
    return f"{e} error{'s' if e != 1 else ''}, {w} warning{'s' if w != 1 else ''}"


class ProbeFailed(Exception):
    """A probe could not do what ``run`` will do; ``reason`` and ``fix`` are for the operator."""

    def __init__(self, reason: str, fix: str, *, retry_311: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix
        self.retry_311 = retry_311
        """The broker may not speak MQTT 5: worth trying 3.1.1."""


# --- files and directories -------------------------------------------------------------------


def check_file(what: str, path: Path, fix: str = "") -> Check:
    """``path`` is a file this user can read."""
    fix = fix or f"create it, readable by the service's user, or correct {what}"
    if not path.exists():
        return error(what, f"{path} does not exist", fix)
    if path.is_dir():
        return error(what, f"{path} is a directory, not a file", f"correct {what}")
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        return error(what, f"{path}: cannot read: {e.strerror or e}", fix)
    return ok(what, f"{path} readable")


def check_secret_file(what: str, path: Path) -> Check:
    """``path`` is a readable, non-empty secret file (the secret itself is never shown)."""
    c = check_file(what, path)
    if c.status != "ok":
        return c
    try:
        read_secret(path, what)
    except ConfigError as e:
        return error(what, e.reason, f"write the secret into {path}")
    return ok(what, f"{path} readable, not empty")


def check_writable_dir(what: str, directory: Path, fix: str) -> Check:
    """``directory`` exists and this user can create files in it (tried with a temporary file,
    so root and ACLs are judged as they are)."""
    if not directory.exists():
        return error(what, f"the directory {directory} does not exist", fix)
    if not directory.is_dir():
        return error(what, f"{directory} is not a directory", fix)
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".sanduan-check-"):
            pass
    except OSError as e:
        return error(what, f"cannot create a file in {directory}: {e.strerror or e}", fix)
    return ok(what, f"directory {directory} writable")


def check_database_file(what: str, path: Path, fix: str) -> Check:
    """An SQLite file that ``run`` opens for writing (it may not exist yet)."""
    path = path.absolute()
    if path.is_dir():
        return error(what, f"{path} is a directory", f"set {what} to a file path")
    place = check_writable_dir(what, path.parent, fix)
    if place.status != "ok":
        return place
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            return error(
                what,
                f"{path} is not readable and writable by this user",
                "change its owner or mode to the service's user",
            )
        return ok(what, f"{path} exists, writable")
    return ok(what, f"{path} will be created (directory writable)")


# --- probes ----------------------------------------------------------------------------------


def open_serial(bus: BusConfig) -> str:
    """Open and close the bus's serial port with its settings (pyserial)."""
    import serial

    try:
        port = serial.serial_for_url(
            bus.port,
            baudrate=bus.baudrate,
            bytesize=bus.bytesize,
            parity=bus.parity,
            stopbits=bus.stopbits,
            timeout=0,
        )
    except (serial.SerialException, OSError, ValueError) as e:
        raise ProbeFailed(
            str(e),
            "plug in the adapter, check the port name (ls -l /dev/serial/by-id/) and that the"
            " agent's user may open it (group dialout)",
        ) from None
    except Exception as e:  # termios.error for a device that is not a serial port
        raise ProbeFailed(
            f"cannot set up {bus.port} as a serial port: {e}",
            "point bus.port at the serial adapter (ls -l /dev/serial/by-id/)",
        ) from None
    port.close()
    return f"{bus.port} opened at {bus.baudrate} {bus.bytesize}{bus.parity}{bus.stopbits}"


_CREDENTIAL_CODES = {4, 5, 134, 135}
"""CONNACK codes for bad user name or password / not authorised (MQTT 3.1.1 and 5)."""


def mqtt_connect(cfg: MqttConfig, timeout_s: float) -> str:
    """Connect to the broker as :func:`mqtt_try` says; with ``protocol = "auto"``, MQTT 5 and
    then 3.1.1 if the broker does not speak 5 (as the agent and the collector do)."""
    if cfg.protocol != "auto":
        return mqtt_try(cfg, timeout_s, v5=cfg.protocol == "5")
    try:
        return mqtt_try(cfg, timeout_s, v5=True)
    except ProbeFailed as e:
        if not e.retry_311:
            raise
    return mqtt_try(cfg, timeout_s, v5=False) + " (MQTT 3.1.1)"


_V5_UNSUPPORTED = {1, 132}
"""CONNACK codes of a broker that does not speak MQTT 5 (3.1.1 "unacceptable protocol")."""


def mqtt_try(cfg: MqttConfig, timeout_s: float, *, v5: bool) -> str:
    """Connect to the broker with the section's credentials and TLS, then disconnect.

    It asks for a client id of its own, but a broker that binds client ids to user names (the
    shipped Mosquitto configuration) gives it the service's id, and with it the service's
    session. So it never starts a clean session: it resumes (``clean_start`` false, the
    session's expiry kept), acknowledges nothing (what the broker had queued is delivered again
    to the service), and removes only a session that did not exist before it connected.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    where = f"{cfg.host}:{cfg.port}"
    client_id = f"sanduan-check-{os.getpid()}-{time.monotonic_ns() % 1_000_000}"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if v5 else False,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        manual_ack=True,
    )
    client.connect_timeout = timeout_s
    if cfg.username is not None:
        client.username_pw_set(cfg.username, cfg.resolved_password())
    if cfg.use_tls:
        try:
            configure_tls(client, cfg, "")
        except ConfigError as e:
            raise ProbeFailed(f"TLS set-up failed: {e}", "correct the TLS files") from None
    answered = threading.Event()
    result: list[Any] = []

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        result.append((reason, bool(flags.session_present)))
        answered.set()

    client.on_connect = on_connect
    kw: dict[str, Any] = {}
    if v5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        # A resumed session keeps the service's expiry.
        props.SessionExpiryInterval = int(getattr(cfg, "session_expiry_s", 86_400))
        props.ReceiveMaximum = 1
        kw = {"clean_start": False, "properties": props}
    try:
        client.connect(cfg.host, cfg.port, keepalive=max(5, int(timeout_s) + 5), **kw)
    except (OSError, ValueError) as e:
        reason = describe_connect_error(e)
        fix = "check that the broker runs there and the address in the config"
        if reason.startswith("TLS"):
            fix = (
                "check tls.ca_file (the CA that signed the broker's certificate) and the host name"
            )
        raise ProbeFailed(f"{where}: {reason}", fix) from None
    deadline = time.monotonic() + timeout_s
    try:
        while not answered.is_set() and time.monotonic() < deadline:
            client.loop(timeout=0.1)
        if result and not result[0][0].is_failure:
            if v5 and not result[0][1]:  # a session of its own: remove it when leaving
                gone = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
                gone.SessionExpiryInterval = 0
                client.disconnect(properties=gone)
            else:
                client.disconnect()
            client.loop(timeout=0.1)
    finally:
        sock = client.socket()
        if sock is not None:
            sock.close()
    if not result:
        raise ProbeFailed(
            f"{where}: no answer to CONNECT within {timeout_s:g} s",
            "check that this port speaks MQTT (TLS on mqtts://, plain on mqtt://)",
            retry_311=v5,
        )
    reason, present = result[0]
    if reason.is_failure:
        fix = "check the broker's log"
        if int(reason.value) in _CREDENTIAL_CODES:
            fix = "check username and the password (file) against the broker's password file/ACL"
        raise ProbeFailed(
            f"{where}: the broker refused: {reason}",
            fix,
            retry_311=v5 and int(reason.value) in _V5_UNSUPPORTED,
        )
    if not v5 and not present:
        _forget_311_session(cfg, client_id, timeout_s)
    return f"{where} accepted the connection" + (f" as {cfg.username}" if cfg.username else "")


def _forget_311_session(cfg: MqttConfig, client_id: str, timeout_s: float) -> None:
    """Remove the MQTT 3.1.1 session the probe made (a clean-session connection on its id)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=True,
        protocol=MQTTProtocolVersion.MQTTv311,
    )
    client.connect_timeout = timeout_s
    if cfg.username is not None:
        client.username_pw_set(cfg.username, cfg.resolved_password())
    if cfg.use_tls:
        configure_tls(client, cfg, "")
    done = threading.Event()
    client.on_connect = lambda *a: done.set()
    try:
        client.connect(cfg.host, cfg.port)
        deadline = time.monotonic() + timeout_s
        while not done.is_set() and time.monotonic() < deadline:
            client.loop(timeout=0.1)
        client.disconnect()
        client.loop(timeout=0.1)
    except (OSError, ValueError):
        pass  # it connected a moment ago; at worst an empty session is left behind
    finally:
        sock = client.socket()
        if sock is not None:
            sock.close()


@dataclass(frozen=True)
class Probes:
    """The checks that touch the outside world; tests replace them."""

    serial: Callable[[BusConfig], str] = open_serial
    mqtt: Callable[[MqttConfig, float], str] = mqtt_connect
    database: Callable[[str], str] | None = None
    """``url`` -> what was found (e.g. the schema version); raises ProbeFailed."""
    timeout_s: float = ONLINE_TIMEOUT_S


def _probe(what: str, fn: Callable[[], str]) -> Check:
    try:
        return ok(what, fn())
    except ProbeFailed as e:
        return error(what, e.reason, e.fix)
    except ConfigError as e:
        return error(what, str(e), "correct the file named")


# --- sections --------------------------------------------------------------------------------


def mqtt_checks(prefix: str, m: MqttConfig) -> list[Check]:
    """The password and TLS files of an MQTT section."""
    out: list[Check] = []
    if m.password_file is not None:
        out.append(check_secret_file(f"{prefix}.password_file", m.password_file))
    elif m.username is not None and m.password is None:
        out.append(
            warning(
                f"{prefix}.username",
                f"{m.username} has no password",
                f"set {prefix}.password_file if the broker asks for one",
            )
        )
    if m.tls is not None:
        for key in ("ca_file", "cert_file", "key_file"):
            p: Path | None = getattr(m.tls, key)
            if p is not None:
                out.append(check_file(f"{prefix}.tls.{key}", p))
        if (m.tls.cert_file is None) != (m.tls.key_file is None):
            out.append(
                error(
                    f"{prefix}.tls",
                    "cert_file and key_file come together",
                    "give both (client certificate) or neither",
                )
            )
        elif not count(out, "error"):
            out.append(tls_load_check(f"{prefix}.tls", m))
    return out


def tls_load_check(what: str, m: MqttConfig) -> Check:
    """The TLS files load as the MQTT client will load them (PEM, key matching certificate)."""
    tls = m.tls
    assert tls is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if tls.ca_file is not None:
            ctx.load_verify_locations(str(tls.ca_file))
        if tls.cert_file is not None:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    except (OSError, ssl.SSLError, ValueError) as e:
        return error(
            what,
            f"cannot load: {e}",
            "give PEM files: the CA certificate, and a client certificate with its key",
        )
    return ok(what, "certificates load")


def hj212_password_check(what: str, c: Hj212Credentials) -> Check | None:
    if c.password_file is None:
        return None
    file_check = check_file(what, c.password_file)
    if file_check.status != "ok":
        return file_check
    try:
        c.resolved_password()
    except ConfigError as e:
        return error(what, e.reason, f"write the password into {c.password_file}")
    return ok(what, f"{c.password_file} readable, a valid HJ 212 password")


def online_mqtt(prefix: str, m: MqttConfig, probes: Probes, files: Sequence[Check]) -> Check:
    """Connect to the broker, unless its password or TLS files (``files``) have errors."""
    what = f"{prefix}.broker"
    if m.broker == "embedded":
        return ok(what, "embedded (started by the agent itself)")
    if count(files, "error"):
        return warning(what, "not tried: its password or TLS files have errors (above)")
    return _probe(what, lambda: probes.mqtt(m, probes.timeout_s))


def station_checks(
    cfg: StationConfig, probes: Probes, *, online: bool = False, ports: bool = True
) -> list[Check]:
    """What ``sanduan edge run`` needs of a loaded station configuration; ``ports``: open the
    serial ports too."""
    out = [
        check_database_file(
            "buffer.path",
            cfg.buffer.path,
            "create the directory, writable by the agent's user (the systemd unit's"
            " StateDirectory= does), or set buffer.path",
        )
    ]
    mqtt_files = mqtt_checks("uplink", cfg.uplink)
    out.extend(mqtt_files)
    for i, p in enumerate(cfg.hj212):
        c = hj212_password_check(f"hj212[{i}].password_file", p)
        if c is not None:
            out.append(c)
    for i, bus in enumerate(cfg.bus if ports else []):
        out.append(_probe(f"bus[{i}].port", functools.partial(probes.serial, bus)))
    if online:
        out.append(online_mqtt("uplink", cfg.uplink, probes, mqtt_files))
    return out


def store_checks(cfg: CentralConfig) -> list[Check]:
    """The store's file (SQLite) or password file (PostgreSQL)."""
    sec = cfg.central
    scheme = urlsplit(sec.store).scheme
    if scheme == "sqlite":
        p = sqlite_file(sec.store)
        if p is None:
            return [ok("central.store", "in memory")]
        fix = "create the directory, writable by the collector's user, or change central.store"
        c = check_database_file("central.store", p, fix)
        if c.status == "ok" and not p.exists():
            return [
                warning(
                    "central.store",
                    f"{p} does not exist yet",
                    "run `sanduan central migrate` (or start with --migrate)",
                )
            ]
        return [c]
    if sec.store_password_file is not None:
        return [check_secret_file("central.store_password_file", sec.store_password_file)]
    return []


def sqlite_file(url: str) -> Path | None:
    """The file of ``sqlite:///relative.db`` or ``sqlite:////abs.db`` (None: in memory)."""
    path = urlsplit(url).path[1:]
    return None if path in ("", ":memory:") else Path(path)


def central_checks(cfg: CentralConfig, probes: Probes, *, online: bool = False) -> list[Check]:
    """What ``sanduan central run`` needs of a loaded collector configuration (the county and
    rules files are checked with the topology, by ``sanduan.central.app.check_config``)."""
    sec = cfg.central
    store = store_checks(cfg)
    mqtt_files = mqtt_checks("mqtt", cfg.mqtt)
    out = store + mqtt_files
    if cfg.console.secret_file is not None:
        out.append(check_secret_file("console.secret_file", cfg.console.secret_file))
    if cfg.hj212 is not None:
        try:
            host, port = split_hostport(cfg.hj212.listen)
        except ValueError as e:  # pragma: no cover - validated at load
            out.append(error("hj212.listen", str(e), "write host:port"))
        else:
            out.append(ok("hj212.listen", f"{host} port {port}"))
        for i, lg in enumerate(cfg.hj212.logger):
            c = hj212_password_check(f"hj212.logger[{i}].password_file", lg)
            if c is not None:
                out.append(c)
    if online:
        out.append(online_mqtt("mqtt", cfg.mqtt, probes, mqtt_files))
        if probes.database is None:
            pass
        elif count(store, "error"):
            out.append(warning("central.store", "not opened: see the errors above"))
        else:
            db = probes.database
            out.append(_probe("central.store", lambda: db(sec.store_url())))
    return out


__all__ = [
    "Check",
    "ProbeFailed",
    "Probes",
    "central_checks",
    "check_database_file",
    "check_file",
    "check_secret_file",
    "check_writable_dir",
    "count",
    "mqtt_connect",
    "open_serial",
    "station_checks",
    "summary",
]

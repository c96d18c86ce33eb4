"""Remote commands from the centre (``sanduan central station ID ...``, docs/commands.md).

A command is recorded in ``station_commands`` (state ``sent``) and published once, at QoS 1,
on the station's ``cmd`` topic by a short-lived MQTT client with the collector's broker
settings (or an operator's login); the collector stores the station's answer in the same row.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from sanduan.central.store import CommandRow, StationRow, Store
from sanduan.shared import topics, wire
from sanduan.shared.clock import age_text
from sanduan.shared.config import CollectorMqttConfig, configure_tls
from sanduan.shared.errors import LinkError, SanduanError
from sanduan.shared.wire import Command

DEFAULT_TTL_S = 600.0
"""A command not delivered within this time is refused by the station (``--ttl``)."""

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


class CommandError(SanduanError):
    """A command could not be sent or its answer did not come."""


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"10m"``, ``"2h"``, ``"1d"`` -> seconds (ValueError otherwise)."""
    m = _DURATION_RE.match(text)
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"duration {text!r} must look like 90s, 10m, 2h or 1d")
    return float(m.group(1)) * _UNIT_S[m.group(2) or "s"]


def new_command(
    station: str,
    name: str,
    *,
    now_ms: int,
    args: Mapping[str, wire.Scalar] | None = None,
    body: str = "",
    ttl_s: float = DEFAULT_TTL_S,
) -> Command:
    """A command with a new id, issued now, expiring after ``ttl_s``; validated as sent."""
    cmd = Command(
        station=station,
        command_id=f"c{now_ms:x}-{secrets.token_hex(4)}",
        name=name,
        issued_ms=now_ms,
        expires_ms=now_ms + max(1, round(ttl_s * 1000)),
        args=dict(args or {}),
        body=body.replace("\r\n", "\n"),
    )
    wire.encode(cmd)  # raises WireFormatError: nothing invalid is recorded or sent
    return cmd


def publish_command(mqtt_cfg: CollectorMqttConfig, cmd: Command, timeout_s: float = 10.0) -> None:
    """Publish ``cmd`` at QoS 1 and wait for the broker's PUBACK (LinkError if none)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"sanduan-cmd-{os.getpid()}-{secrets.token_hex(3)}",
        protocol=mqtt.MQTTv5 if mqtt_cfg.protocol != "3.1.1" else mqtt.MQTTv311,
    )
    if mqtt_cfg.username is not None:
        client.username_pw_set(mqtt_cfg.username, mqtt_cfg.resolved_password())
    if mqtt_cfg.use_tls:
        configure_tls(client, mqtt_cfg, "mqtt")
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    where = f"broker {mqtt_cfg.broker}"
    try:
        client.connect(mqtt_cfg.host, mqtt_cfg.port, keepalive=30)
    except (OSError, ValueError) as e:
        raise LinkError(f"{where}: cannot connect: {e}") from None
    client.loop_start()
    try:
        if not connected.wait(timeout_s) or refused:
            why = refused[0] if refused else f"no answer within {timeout_s:g} s"
            raise LinkError(f"{where}: connection refused: {why} (check [mqtt] or --mqtt-user)")
        info = client.publish(topics.cmd_topic(cmd.station), wire.encode(cmd), qos=1)
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise LinkError(f"{where}: the command was not acknowledged within {timeout_s:g} s")
    finally:
        client.disconnect()
        client.loop_stop()


def command_row(cmd: Command) -> CommandRow:
    args: dict[str, Any] = dict(cmd.args)
    if cmd.body:
        args["body_sha256"] = wire_sha256(cmd.body)
        args["body_bytes"] = len(cmd.body.encode("utf-8"))
    return CommandRow(
        id=cmd.command_id,
        station=cmd.station,
        name=cmd.name,
        args=json.dumps(args, sort_keys=True, separators=(",", ":")),
        issued=cmd.issued_ms,
        expires=cmd.expires_ms,
        state="sent",
    )


def wire_sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def wait_result(
    store: Store,
    station: str,
    command_id: str,
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> CommandRow:
    """The command's row once the station has answered (CommandError after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        row = store.command(command_id)
        if row is not None and row.answered_at is not None:
            return row
        if time.monotonic() >= deadline:
            raise CommandError(
                f"station {station}: no answer to command {command_id} within {timeout_s:g} s"
                " (it stays recorded; see sanduan central station ID commands)"
            )
        sleep(0.2)


def age(ms: int | None, now_ms: int) -> str:
    return age_text(None if ms is None else max(0.0, (now_ms - ms) / 1000))


def station_columns(store: Store, rows: list[StationRow], now_ms: int) -> dict[str, dict[str, Any]]:
    """``report stations``: the station file in force (from the heartbeat) and the last
    command, per station."""
    last = store.last_commands()
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        sha = None
        if r.last_status:
            try:
                extra = json.loads(r.last_status).get("extra", {})
            except ValueError:
                extra = {}
            x = extra.get("config_sha256") if isinstance(extra, dict) else None
            sha = x if isinstance(x, str) else None
        c = last.get(r.station)
        out[r.station] = {
            "config_sha256": sha,
            "config": sha[:12] if sha else None,
            "last_command": None
            if c is None
            else {
                "id": c.id,
                "name": c.name,
                "state": c.state,
                "issued_ms": c.issued,
                "age": age(c.issued, now_ms),
            },
        }
    return out

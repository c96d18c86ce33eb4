"""Typed configuration for a station and for the collector, loaded from TOML and validated once.

Every mistake becomes a :class:`~sanduan.shared.errors.ConfigError` naming the file, the key
(dotted, with list indices: ``bus[0].device[1].slave``) and the reason.

The models are msgspec structs: the edge agent validates its file with them and never imports
pydantic, which would add about 11 MiB to its resident memory (docs/benchmarks.md, "Agent
footprint"). Checks that one field's type and bounds cannot express run in ``__post_init__``
and raise :class:`FieldError` (naming the field) or ValueError (about the whole section).
"""

from __future__ import annotations

import enum
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import Meta, field

from sanduan.shared.errors import ConfigError
from sanduan.shared.model import WaterBody

STATION_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base for config sections: frozen, unknown keys rejected."""

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (field name to value; not validated again)."""
        return msgspec.structs.replace(self, **changes)


M = TypeVar("M", bound=Section)
MQ = TypeVar("MQ", bound="MqttConfig")
C = TypeVar("C", bound="Hj212Credentials")


class FieldError(ValueError):
    """A field's value fails a check of its own (raised from ``__post_init__``)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def check_station_id(v: str) -> str:
    """A station id, also an MQTT topic level and user name; ValueError if it is not one."""
    if not STATION_ID_RE.match(v):
        raise ValueError(
            f"station id {v!r} must be 1-64 characters of letters, digits, '_', '.', '-'"
        )
    return v


def _check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name like Asia/Shanghai)"
        ) from None
    return name


def _field(name: str, check: Any, value: Any) -> None:
    """Run ``check(value)``; its ValueError becomes a FieldError naming ``name``."""
    try:
        check(value)
    except ValueError as e:
        raise FieldError(name, str(e)) from None


TimeZoneName = Annotated[str, Meta(min_length=1)]


class TlsConfig(Section, frozen=True, kw_only=True):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False
    """Skip the host-name check (test brokers only)."""


def _check_broker(v: str) -> None:
    if v == "embedded":
        return
    parts = urlsplit(v)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"broker must look like mqtt://host:1883 or mqtts://host:8883, not {v!r}")
    try:
        parts.port  # noqa: B018  # raises on a bad port
    except ValueError:
        raise ValueError(f"bad port in broker URL {v!r}") from None


class MqttConfig(Section, frozen=True, kw_only=True):
    """How to reach the broker. ``broker`` is ``mqtt://host:port``, ``mqtts://host:port``
    (TLS) or ``embedded`` (the in-process broker of the single-machine demo)."""

    broker: str = "mqtt://127.0.0.1:1883"
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    client_id: str | None = None
    keepalive_s: Annotated[int, Meta(ge=5, le=3600)] = 30
    tls: TlsConfig | None = None

    def __post_init__(self) -> None:
        _field("broker", _check_broker, self.broker)

    @property
    def host(self) -> str:
        return urlsplit(self.broker).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.broker)
        if parts.port:
            return parts.port
        return 8883 if parts.scheme == "mqtts" else 1883

    @property
    def use_tls(self) -> bool:
        return self.tls is not None or urlsplit(self.broker).scheme == "mqtts"

    def resolved_password(self) -> str | None:
        """The password, read from ``password_file`` if that is given (ConfigError if the file
        cannot be read)."""
        if self.password_file is not None:
            return read_secret(self.password_file, "password_file")
        return self.password


def configure_tls(client: Any, m: MqttConfig, section: str) -> None:
    """Set up TLS on the paho ``client`` from ``m.tls`` (the system's CAs without ``ca_file``).

    A TLS file that is missing or not a certificate/key is a ConfigError naming the key
    (``section.tls.ca_file``) and the file, not a traceback from the ssl module.
    """
    import ssl

    tls = m.tls
    files = {
        "ca_file": tls.ca_file if tls else None,
        "cert_file": tls.cert_file if tls else None,
        "key_file": tls.key_file if tls else None,
    }
    prefix = f"{section}.tls" if section else "tls"
    for key, path in files.items():
        if path is not None and not path.is_file():
            raise ConfigError(
                str(path),
                f"{prefix}.{key}",
                "no such file: put it there, readable by the service's user, or correct the path",
            )
    try:
        client.tls_set(
            ca_certs=str(files["ca_file"]) if files["ca_file"] else None,
            certfile=str(files["cert_file"]) if files["cert_file"] else None,
            keyfile=str(files["key_file"]) if files["key_file"] else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    except (OSError, ssl.SSLError, ValueError) as e:
        named = [str(v) for v in files.values() if v is not None]
        raise ConfigError(
            ", ".join(named) or "the system CA certificates",
            prefix,
            f"cannot load: {e}; check that they are PEM certificates (and that the key matches"
            " the certificate)",
        ) from None
    if tls is not None and tls.insecure:
        client.tls_insecure_set(True)


# --- validation and its errors -------------------------------------------------------------

_AT_RE = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<key>[^`]*)`(?: in `\$(?P<path>[^`]*)`)?)?$", re.S)
_FIELD_RE = re.compile(r"^Object (missing required|contains unknown) field `(?P<name>[^`]*)`$")
_BOUND_RE = re.compile(
    r"^Expected `(?P<type>[^`]+)`(?P<what> of length)? (?P<op>>=|<=|>|<) (?P<n>\S+)$"
)
_TYPE_RE = re.compile(r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`$")
_OPS = {
    ">=": "greater than or equal to",
    "<=": "less than or equal to",
    ">": "greater than",
    "<": "less than",
}
_TYPES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "a list",
    "object": "a table",
    "null": "nothing",
    "Path": "a path (a string)",
}


def _dec_hook(typ: type, obj: Any) -> Any:
    if typ is Path and isinstance(obj, str):
        return Path(obj)
    raise NotImplementedError


def _join(key: str, part: str) -> str:
    if not part:
        return key
    if part.startswith("["):
        return key + part
    return f"{key}.{part}" if key else part


def _choices(model: type, key: str) -> list[Any] | None:
    """The allowed values of the field at ``key`` (dotted, with indices; ``[...]`` for a
    table's values) of ``model``, if it is a Literal or an enum."""
    typ: Any = model
    for part in re.findall(r"[^.\[\]]+|\[[^\]]*\]", key):
        typ = _unwrap(typ, part.startswith("["))
        if not part.startswith("["):
            if not (isinstance(typ, type) and issubclass(typ, msgspec.Struct)):
                return None
            hints = typing.get_type_hints(typ, include_extras=True)
            if part not in hints:
                return None
            typ = hints[part]
    typ = _unwrap(typ, False)
    if typing.get_origin(typ) is Literal:
        return list(typing.get_args(typ))
    if isinstance(typ, type) and issubclass(typ, enum.Enum):
        return [m.value for m in typ]
    return None


def _unwrap(typ: Any, index: bool) -> Any:
    """``typ`` without Annotated and None (and, for an index, the item type of the list or
    the value type of the table)."""
    while True:
        origin = typing.get_origin(typ)
        if origin is Annotated:
            typ = typing.get_args(typ)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(typ) if a is not type(None)]
            if len(args) != 1:
                return typ
            typ = args[0]
        elif index and origin in (list, tuple, dict):
            typ = typing.get_args(typ)[-1 if origin is dict else 0]
            index = False
        else:
            return typ


def _reason(model: type, key: str, msg: str) -> str:
    """msgspec's message ``msg`` about the value at ``key``, in plain words."""
    if b := _BOUND_RE.match(msg):
        if b["what"] and b["op"] == ">=" and b["n"] == "1":
            return "must not be empty"
        if b["what"]:
            return f"must have a length {_OPS[b['op']]} {b['n']}"
        return f"must be {_OPS[b['op']]} {b['n']}"
    if t := _TYPE_RE.match(msg):
        want = " or ".join(_TYPES.get(w, w) for w in t["want"].split(" | "))
        return f"must be {want}, not {_TYPES.get(t['got'], t['got'])}"
    if msg.startswith("Invalid enum value"):
        given = msg.removeprefix("Invalid enum value").strip()
        choices = _choices(model, key)
        if choices:
            return f"must be one of {', '.join(repr(c) for c in choices)}, not {given}"
        return f"not an allowed value: {given}"
    if msg.startswith("Expected `str` matching regex "):
        return "must match the pattern " + msg.removeprefix("Expected `str` matching regex ")
    return msg


def validation_message(model: type, exc: msgspec.ValidationError) -> tuple[str, str]:
    """``(key, reason)`` of msgspec's error for ``model``, in the words of ConfigError."""
    m = _AT_RE.match(str(exc))
    assert m is not None  # the pattern matches any text
    msg = m["msg"]
    if m["path"] is not None:  # a table's key: "... - at `key` in `$.flags`"
        key = m["path"].removeprefix(".")
        return key, "a key " + _reason(model, key, msg)
    key = (m["key"] or "$").removeprefix("$").removeprefix(".")
    cause = exc.__cause__
    if isinstance(cause, FieldError):
        return _join(key, cause.name), str(cause)
    if isinstance(cause, ValueError):
        return key, str(cause)
    if f := _FIELD_RE.match(msg):
        key = _join(key, f["name"])
        if msg.startswith("Object missing"):
            return key, "required key is missing"
        return key, "unknown key (check the spelling; see the example files in deploy/)"
    reason = _reason(model, key, msg)
    if key.endswith("[...]"):  # a table's value
        return key.removesuffix("[...]"), "a value " + reason
    return key, reason


def parse_model(model: type[M], data: Any, source: str, key: str = "") -> M:
    """Validate ``data`` into ``model``; an error becomes a ConfigError for ``source`` (its key
    under ``key``)."""
    try:
        return msgspec.convert(data, model, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        where, reason = validation_message(model, exc)
        raise ConfigError(source, _join(key, where), reason) from None


# --- ${ENV} substitution and secret files ---------------------------------------------------

_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
"""``$${`` (a literal ``${``), ``${NAME}`` / ``${NAME:-default}``, or a malformed ``${``."""


def expand_env(text: str, env: Mapping[str, str], file: str, key: str) -> str:
    """``text`` with ``${NAME}`` and ``${NAME:-default}`` replaced from ``env``; ``$${`` stands
    for a literal ``${``. ``:-`` uses the default when the variable is unset or empty.

    An unset variable without a default, or a ``${`` that is not a reference, is a ConfigError
    naming ``file``, ``key`` and the variable.
    """
    if "${" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        whole = m.group(0)
        if whole == "$${":
            return "${"
        name, default = m.group(1), m.group(2)
        if name is None:
            raise ConfigError(
                file,
                key,
                "'${' must start a reference like ${NAME} or ${NAME:-default}"
                " (write $${ for a literal '${')",
            )
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ConfigError(
                    file,
                    key,
                    f"environment variable {name} is not set: set it (for a systemd service:"
                    f" Environment= or EnvironmentFile= in the unit) or give a default,"
                    f" ${{{name}:-value}}",
                )
            return default
        return value

    return _ENV_RE.sub(one, text)


def substitute_env(data: Any, env: Mapping[str, str], file: str, key: str = "") -> Any:
    """``data`` (parsed TOML) with :func:`expand_env` applied to every string value; keys and
    non-string values are kept."""
    if isinstance(data, str):
        return expand_env(data, env, file, key)
    if isinstance(data, dict):
        return {
            k: substitute_env(v, env, file, f"{key}.{k}" if key else str(k))
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [substitute_env(v, env, file, f"{key}[{i}]") for i, v in enumerate(data)]
    return data


def read_secret(path: Path, key: str) -> str:
    """The secret held in the file ``path`` (given as config key ``key``), without one
    trailing newline; ConfigError naming the file and the fix if it cannot be read or is
    empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigError(
            str(path),
            "",
            f"cannot read the secret file given as {key}: {reason}; create it, readable by the"
            " service's user, or correct the path",
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "", f"secret file given as {key} is not UTF-8") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise ConfigError(str(path), "", f"the secret file given as {key} is empty")
    return text


def rebase(path: Path | None, base: Path) -> Path | None:
    """A relative ``path`` taken from the config file's directory ``base``."""
    if path is None or path.is_absolute():
        return path
    return base / path


def _rebase_mqtt(m: MQ, base: Path) -> MQ:
    """``password_file`` and the TLS files of an MQTT section relative to ``base``."""
    update: dict[str, Any] = {}
    if m.password_file is not None:
        update["password_file"] = rebase(m.password_file, base)
    if m.tls is not None:
        t = m.tls
        update["tls"] = t.replace(
            ca_file=rebase(t.ca_file, base),
            cert_file=rebase(t.cert_file, base),
            key_file=rebase(t.key_file, base),
        )
    return m.replace(**update) if update else m


def read_toml(path: Path | str) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file becomes a ConfigError naming it."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(p), "", "file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(p), "", "is a directory, expected a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), "", f"not valid TOML: {exc}") from None


def load_model(model: type[M], path: Path | str, env: Mapping[str, str] | None = None) -> M:
    """Read a configuration file, substitute ``${ENV}`` references in its string values
    (from ``env``, default the process environment) and validate it into ``model``."""
    data = substitute_env(read_toml(path), os.environ if env is None else env, str(path))
    return parse_model(model, data, str(path))


# --- station -----------------------------------------------------------------------------


class StationSection(Section, frozen=True, kw_only=True):
    id: str
    name: str = ""
    timezone: TimeZoneName = "Asia/Shanghai"
    target_class: Annotated[int, Meta(ge=1, le=5)] = 3
    water_body: WaterBody = WaterBody.RIVER

    def __post_init__(self) -> None:
        _field("id", check_station_id, self.id)
        _field("timezone", _check_timezone, self.timezone)


class BufferConfig(Section, frozen=True, kw_only=True):
    path: Path = Path("sanduan-buffer.db")
    max_bytes: Annotated[int, Meta(ge=1_000_000)] = 512 * 1024 * 1024
    commit_interval_s: Annotated[float, Meta(gt=0, le=60)] = 1.0
    commit_max_rows: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    synchronous: Literal["NORMAL", "FULL"] = "FULL"


class UplinkConfig(MqttConfig, frozen=True, kw_only=True):
    heartbeat_s: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    batch_max_readings: Annotated[int, Meta(ge=1, le=10_000)] = 1000
    batch_max_age_s: Annotated[float, Meta(gt=0, le=3600)] = 5.0
    ack_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    max_batches_per_s: Annotated[float, Meta(gt=0)] = 20.0
    max_inflight_batches: Annotated[int, Meta(ge=1, le=1000)] = 20
    reconnect_max_s: Annotated[int, Meta(ge=1, le=3600)] = 60
    """Longest wait between reconnect attempts (the wait doubles from 1 s up to this)."""
    session_expiry_s: Annotated[int, Meta(ge=0)] = 7 * 86_400
    """MQTT 5 session expiry: how long the broker keeps the station's session while offline."""
    clock_offset_max_s: Annotated[float, Meta(gt=0)] = 30.0
    """HJ 352: the station's clock must be within this many seconds of the platform's. The
    offset is estimated from the centre's acks; beyond it the agent sends one "clock" event."""


class GradingConfig(Section, frozen=True, kw_only=True):
    alarm_consecutive: Annotated[int, Meta(ge=1, le=10_000)] = 3
    stuck_polls: Annotated[int, Meta(ge=0, le=10_000)] = 4
    """Identical readings of one item in a row from which the agent flags them D (stuck
    sensor, kept out of assessment; see sanduan.shared.stuck). 0: off."""
    engine: Literal["numba", "numpy"] = "numba"
    """How the edge agent grades: the shared numba kernels (compiled ahead of time when the
    package was built with a C compiler, numba's JIT otherwise), or numpy with identical
    results; numpy saves about 100 MB of resident memory only where the JIT is used."""


class DeviceConfig(Section, frozen=True, kw_only=True):
    name: str
    slave: Annotated[int, Meta(ge=1, le=247)]
    profile: str | None = None
    registers: list[dict[str, Any]] | None = None
    """An inline register map (same keys as a profile's registers) instead of ``profile``."""
    poll_period_s: Annotated[float, Meta(gt=0, le=86_400)] = 60.0
    timeout_s: Annotated[float, Meta(gt=0, le=30)] = 1.0
    """How long a reply may take (the upper bound when ``adaptive_timeout`` is on)."""
    adaptive_timeout: bool = False
    """Adapt the first attempt's reply timeout to the device's measured turnaround, within
    [max(``timeout_min_s``, 0.05 s), ``timeout_s``]; after any timeout the full ``timeout_s``.
    Off by default: a reply later than the adapted timeout is asked for again, which a device
    that is only sometimes slow answers twice."""
    timeout_min_s: Annotated[float, Meta(gt=0, le=30)] = 0.1
    """Lower bound of the adapted reply timeout (capped at ``timeout_s``)."""
    retries: Annotated[int, Meta(ge=0, le=10)] = 2
    pause_s: Annotated[float, Meta(ge=0, le=10)] = 0.0
    backoff_max_s: Annotated[float, Meta(gt=0)] = 300.0
    degraded_after: Annotated[int, Meta(ge=1)] = 3
    turnaround_s: Annotated[float, Meta(ge=0, le=10)] = 0.010
    """The device's response latency (end of request to start of reply), for the bus-time
    estimate of ``sanduan edge check-config``; analyzers are often slower than sondes."""
    max_gap: Annotated[int, Meta(ge=0, le=124)] | None = None
    """Overrides the bus's ``max_gap`` (0 for a device that refuses to read unmapped
    registers)."""
    max_read_count: Annotated[int, Meta(ge=1, le=125)] = 125
    """Most registers the device answers in one read (125 is the Modbus limit)."""

    def __post_init__(self) -> None:
        if (self.profile is None) == (self.registers is None):
            raise ValueError(
                f"device {self.name!r}: give exactly one of 'profile' (a built-in profile name or"
                " a file path) or 'registers' (an inline register map)"
            )


class BusConfig(Section, frozen=True, kw_only=True):
    name: str
    port: str
    baudrate: Annotated[int, Meta(ge=300, le=921_600)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    max_gap: Annotated[int, Meta(ge=0, le=124)] = 10
    """Unwanted registers that may be read and discarded to merge two reads into one."""
    silence_s: Annotated[float, Meta(ge=0, le=1)] | None = None
    """Silence kept on the line before each request. Default: the Modbus RTU inter-frame gap
    (3.5 character times, 1.75 ms above 19200 baud); 0 for virtual ports and RTU-over-TCP."""
    device: list[DeviceConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen: dict[int, str] = {}
        for d in self.device:
            if d.slave in seen:
                raise ValueError(
                    f"devices {seen[d.slave]!r} and {d.name!r} share slave id {d.slave} on bus"
                    f" {self.name!r}"
                )
            seen[d.slave] = d.name


# --- HJ 212-2017 -------------------------------------------------------------------------

HJ212_MN_RE = re.compile(r"^[A-Za-z0-9_-]{1,24}$")
HJ212_PW_RE = re.compile(r"^[!-~]{1,32}$")

Hj212DataKind = Literal["realtime", "minute", "hourly", "daily"]


def _kinds(*kinds: Hj212DataKind) -> list[Hj212DataKind]:
    return list(kinds)


def _check_hostport(v: str) -> str:
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address {v!r} must be host:port, like 127.0.0.1:9212")
    return v


def split_hostport(v: str) -> tuple[str, int]:
    """``("host", port)`` of a validated ``host:port``."""
    host, _, port = v.rpartition(":")
    return host.strip("[]"), int(port)


class Hj212Credentials(Section, frozen=True, kw_only=True):
    """An HJ 212 MN with its password (``password`` or ``password_file``, exactly one)."""

    mn: str
    password: str | None = None
    password_file: Path | None = None

    def __post_init__(self) -> None:
        if not HJ212_MN_RE.match(self.mn):
            raise FieldError("mn", f"MN {self.mn!r} must be 1-24 letters, digits, '_' or '-'")
        pw = self.password
        if pw is not None and (not HJ212_PW_RE.match(pw) or set(pw) & set(";,=&")):
            raise FieldError(
                "password", "password must be 1-32 printable ASCII characters without ; , = &"
            )
        if (self.password is None) == (self.password_file is None):
            raise ValueError(f"MN {self.mn}: give exactly one of 'password' or 'password_file'")

    def resolved_password(self) -> str:
        """The password, read from ``password_file`` if that is given (ConfigError if the file
        cannot be read or holds no valid password)."""
        if self.password is not None:
            return self.password
        assert self.password_file is not None
        pw = read_secret(self.password_file, "password_file")
        if not HJ212_PW_RE.match(pw) or set(pw) & set(";,=&"):
            raise ConfigError(
                str(self.password_file),
                "",
                "must hold one password of 1-32 printable ASCII characters without ; , = &",
            )
        return pw


class Hj212PlatformConfig(Hj212Credentials, frozen=True, kw_only=True):
    """An environmental platform this station reports to over HJ 212-2017 (``[[hj212]]``)."""

    name: str
    address: str
    st: Annotated[str, Meta(pattern=r"^\d{2}$")] = "21"
    """System code: 21 is surface-water quality."""
    data: list[Hj212DataKind] = field(default_factory=lambda: _kinds("hourly"))
    """What to send: real-time (CN 2011), minute (2051), hourly (2061), daily (2031) data."""
    ack_timeout_s: Annotated[float, Meta(gt=0, le=86_400)] = 10.0
    """How long to wait for the platform's 9014 before sending a packet again."""
    retries: Annotated[int, Meta(ge=0, le=100)] = 3
    """Resends of an unanswered packet before the connection is dropped and made again."""
    reconnect_max_s: Annotated[float, Meta(ge=1, le=3600)] = 60.0
    """Longest wait between connection attempts (the wait doubles from 1 s up to this)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _field("address", _check_hostport, self.address)


class MetricsConfig(Section, frozen=True, kw_only=True):
    """``/metrics`` (Prometheus text) and ``/healthz`` over HTTP (``[metrics]``; off without
    ``listen``). See docs/deploy.md, "Monitoring"."""

    listen: str | None = None
    """``host:port`` to serve on, e.g. ``127.0.0.1:9471``; not set: no metrics endpoint."""

    def __post_init__(self) -> None:
        if self.listen is not None:
            _field("listen", split_listen, self.listen)


class StationMetricsConfig(MetricsConfig, frozen=True, kw_only=True):
    """The agent's ``[metrics]``: also the bounds of ``/healthz``."""

    poll_stale_s: Annotated[float, Meta(gt=0)] | None = None
    """Unhealthy when the devices have not been polled for this long. Default: three times
    the longest ``poll_period_s`` of the configured devices, at least 60 s."""
    link_down_max_s: Annotated[float, Meta(gt=0)] = 900.0
    """Unhealthy when the link to the centre has been down this long (the buffer holds the
    readings meanwhile; a short outage is not a fault of the station)."""


class CommandsConfig(Section, frozen=True, kw_only=True):
    """Remote commands from the centre (``[commands]``, docs/commands.md)."""

    enabled: bool = True
    confirm_s: Annotated[float, Meta(gt=0, le=86_400)] = 120.0
    """After ``push-config``: the agent must commit a reading and have a batch acknowledged
    within this many seconds, or it goes back to the previous station file by itself."""


class StationConfig(Section, frozen=True, kw_only=True):
    station: StationSection
    buffer: BufferConfig = field(default_factory=BufferConfig)
    uplink: UplinkConfig = field(default_factory=UplinkConfig)
    grading: GradingConfig = field(default_factory=GradingConfig)
    bus: list[BusConfig] = field(default_factory=list)
    hj212: list[Hj212PlatformConfig] = field(default_factory=list)
    """Platforms this station also reports to over HJ 212-2017."""
    metrics: StationMetricsConfig = field(default_factory=StationMetricsConfig)
    commands: CommandsConfig = field(default_factory=CommandsConfig)

    def __post_init__(self) -> None:
        ports: dict[str, str] = {}
        names: set[str] = set()
        for b in self.bus:
            if b.port in ports:
                raise ValueError(
                    f"buses {ports[b.port]!r} and {b.name!r} use the same serial port {b.port!r};"
                    " one port has one owner: put both devices on one bus"
                )
            ports[b.port] = b.name
            for d in b.device:
                if d.name in names:
                    raise ValueError(f"device name {d.name!r} is used twice")
                names.add(d.name)
        platforms = [p.name for p in self.hj212]
        if len(set(platforms)) != len(platforms):
            raise ValueError("two [[hj212]] platforms have the same name")


def _relative_password_files(items: list[C], base: Path) -> list[C]:
    """``password_file`` of HJ 212 credentials taken relative to the config file's directory."""
    return [
        c.replace(password_file=base / c.password_file)
        if c.password_file is not None and not c.password_file.is_absolute()
        else c
        for c in items
    ]


def load_station_config(path: Path | str, env: Mapping[str, str] | None = None) -> StationConfig:
    """Load a station file (``${ENV}`` substituted); the secret and TLS files it names are
    taken relative to its directory."""
    cfg = load_model(StationConfig, path, env)
    base = Path(path).parent
    cfg = cfg.replace(uplink=_rebase_mqtt(cfg.uplink, base))
    if cfg.hj212:
        platforms = _relative_password_files(cfg.hj212, base)
        cfg = cfg.replace(hj212=platforms)
    return cfg


# --- central -----------------------------------------------------------------------------


class CentralSection(Section, frozen=True, kw_only=True):
    store: str = "sqlite:///sanduan-central.db"
    store_password_file: Path | None = None
    """A file holding the PostgreSQL password, put into the store URL when connecting (so it
    is neither in the configuration nor in a log)."""
    county: Path | None = None
    rules: Path | None = None
    timezone: TimeZoneName = "Asia/Shanghai"

    def __post_init__(self) -> None:
        scheme = urlsplit(self.store).scheme
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise FieldError(
                "store",
                "store must be sqlite:///path/to/file.db or postgresql://user@host/db,"
                f" not {self.store!r}",
            )
        _field("timezone", _check_timezone, self.timezone)
        if self.store_password_file is not None:
            parts = urlsplit(self.store)
            if parts.scheme == "sqlite":
                raise ValueError("store_password_file is for a PostgreSQL store, not SQLite")
            if parts.password is not None:
                raise ValueError(
                    "the store URL holds a password and store_password_file is given too:"
                    " keep only one"
                )

    def store_url(self) -> str:
        """The URL to connect to the store with: ``store`` with the password of
        ``store_password_file`` put in (ConfigError if the file cannot be read). Never log
        it; ``sanduan.central.store.redact_url`` hides the password."""
        if self.store_password_file is None:
            return self.store
        return with_password(
            self.store, read_secret(self.store_password_file, "store_password_file")
        )


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` (percent-encoded) as the password of its user."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0] if at else ""  # as written (already percent-encoded)
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


class CollectorMqttConfig(MqttConfig, frozen=True, kw_only=True):
    group: str | None = None
    """Shared-subscription group: collectors with the same group split the stations."""
    session_expiry_s: Annotated[int, Meta(ge=0)] = 86_400
    """How long the broker keeps the collector's session (subscriptions and unacknowledged
    messages) while it is disconnected (MQTT 5; 3.1.1 sessions never expire)."""


class IngestConfig(Section, frozen=True, kw_only=True):
    max_message_bytes: Annotated[int, Meta(ge=1024, le=256 * 1024 * 1024)] = 1024 * 1024
    """Largest payload the collector decodes; a larger one is a dead letter ``oversize``, its
    size checked before anything else is done with it (a full 10,000-reading batch is ~200 kB)."""
    future_margin_s: Annotated[float, Meta(ge=0)] = 86_400.0
    """Readings stamped more than this ahead of the centre's clock are dead letters
    ``timestamp``."""
    earliest_reading: Annotated[str, Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")] = "2000-01-01"
    """Readings stamped before this date (UTC) are dead letters ``timestamp``."""
    dead_letters_per_hour: Annotated[int, Meta(ge=0)] = 100
    """Dead letters recorded per station and hour; further rejects are only counted."""
    dead_letter_bytes_per_hour: Annotated[int, Meta(ge=0)] = 1024 * 1024
    """Payload bytes kept in dead letters per station and hour; beyond, rejects are counted."""
    store_attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    """Tries to store a batch the store rejects while it accepts others, before the batch is a
    dead letter ``store``."""
    gap_timeout_s: Annotated[float, Meta(gt=0)] = 300.0
    resend_interval_s: Annotated[float, Meta(gt=0)] = 300.0
    gap_give_up_s: Annotated[float, Meta(gt=0)] = 30 * 86_400.0
    """A gap open this long is dropped: the station no longer holds those readings."""
    workers: Annotated[int, Meta(ge=1, le=64)] = 1
    """Threads writing to the store (each with its own connection; useful with PostgreSQL)."""
    max_pending: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    """Messages received but not yet handled; the collector stops reading from the broker
    when this many are waiting."""


class ValidityConfig(Section, frozen=True, kw_only=True):
    """Data-validity rules: how many valid values make a valid period."""

    min_values_per_hour: Annotated[int, Meta(ge=1)] = 1
    min_hours_per_day: Annotated[int, Meta(ge=1, le=24)] = 20
    min_values_per_day_4h: Annotated[int, Meta(ge=1, le=6)] = 3
    min_days_per_month: Annotated[int, Meta(ge=1, le=31)] = 20
    min_months_per_year: Annotated[int, Meta(ge=1, le=12)] = 9
    excluded_flags: list[str] = field(default_factory=lambda: ["M", "C", "D", "F", "B", "T"])
    month_basis: Literal["daily-means", "values"] = "daily-means"
    """Month mean: of the month's valid daily means, or of its valid hourly values."""


class Hj212LoggerConfig(Hj212Credentials, frozen=True, kw_only=True):
    """A third-party data logger allowed to send to the collector (``[[hj212.logger]]``)."""

    station: str

    def __post_init__(self) -> None:
        super().__post_init__()
        _field("station", check_station_id, self.station)


class Hj212ServerConfig(Section, frozen=True, kw_only=True):
    """The collector's HJ 212-2017 TCP server (``[hj212]``)."""

    listen: str
    logger: list[Hj212LoggerConfig] = field(default_factory=list)
    store: list[Hj212DataKind] = field(
        default_factory=lambda: _kinds("realtime", "minute", "hourly")
    )
    """Which uploads become readings (daily data is acknowledged and counted, and the centre
    computes its own daily means)."""
    idle_timeout_s: Annotated[float, Meta(gt=0)] = 900.0
    """A connection silent this long is closed (the logger connects again)."""
    max_connections: Annotated[int, Meta(ge=1, le=100_000)] = 5000
    max_errors: Annotated[int, Meta(ge=1)] = 50
    """Bad frames on one connection before it is closed (the first ones are dead-lettered)."""
    history_max_s: Annotated[float, Meta(gt=0)] = 7 * 86_400.0
    """How far back the collector asks a logger for missing hourly data."""
    max_future_s: Annotated[float, Meta(gt=0)] = 3600.0
    """Data stamped further ahead of the collector's clock is dead-lettered."""

    def __post_init__(self) -> None:
        _field("listen", _check_hostport, self.listen)
        seen: set[str] = set()
        for lg in self.logger:
            if lg.mn in seen:
                raise ValueError(f"MN {lg.mn} is given to two loggers")
            seen.add(lg.mn)


def split_listen(value: str) -> tuple[str, int]:
    """``"host:port"`` (``[v6]:port`` too) -> ``(host, port)``; raises ValueError."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen must be host:port (for example 127.0.0.1:8480), not {value!r}")
    return host, int(port)


class ConsoleConfig(Section, frozen=True, kw_only=True):
    """The web console (``sanduan central console``)."""

    listen: str = "127.0.0.1:8480"
    secret_file: Path | None = None
    """A file holding the key that signs session cookies (keep it private). Without one a
    random key is made at start-up, and every session ends when the console restarts."""
    session_max_age_s: Annotated[int, Meta(ge=60, le=30 * 86_400)] = 8 * 3600
    https_only: bool = False
    """Mark the session cookie Secure (serve the console behind TLS)."""

    def __post_init__(self) -> None:
        _field("listen", split_listen, self.listen)


class CentralConfig(Section, frozen=True, kw_only=True):
    central: CentralSection = field(default_factory=CentralSection)
    mqtt: CollectorMqttConfig = field(default_factory=CollectorMqttConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    validity: ValidityConfig = field(default_factory=ValidityConfig)
    hj212: Hj212ServerConfig | None = None
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


def load_central_config(path: Path | str, env: Mapping[str, str] | None = None) -> CentralConfig:
    """Load a collector file (``${ENV}`` substituted); the files it names are taken relative
    to its directory."""
    cfg = load_model(CentralConfig, path, env)
    base = Path(path).parent
    cfg = cfg.replace(mqtt=_rebase_mqtt(cfg.mqtt, base))
    sec = cfg.central
    updates: dict[str, Path] = {}
    for key in ("county", "rules", "store_password_file"):
        value: Path | None = getattr(sec, key)
        if value is not None and not value.is_absolute():
            updates[key] = base / value
    if updates:
        cfg = cfg.replace(central=sec.replace(**updates))
    if cfg.hj212 is not None and cfg.hj212.logger:
        loggers = _relative_password_files(cfg.hj212.logger, base)
        cfg = cfg.replace(hj212=cfg.hj212.replace(logger=loggers))
    secret = cfg.console.secret_file
    if secret is not None and not secret.is_absolute():
        console = cfg.console.replace(secret_file=base / secret)
        cfg = cfg.replace(console=console)
    return cfg

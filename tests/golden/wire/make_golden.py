"""Write the wire-format golden vectors (v1 and v2) next to this file.

Run once from the repository root: ``.venv/bin/python tests/golden/wire/make_golden.py``. The
vectors are committed; tests/shared/test_wire_golden.py checks that decoding every ``<name>.bin``
gives ``<name>.json`` and that encoding the JSON gives the same bytes, and that every
``bad-<name>.bin`` is rejected with the reason in ``bad-<name>.json``. Re-running must not change
any file unless the format itself changed (which needs a new version number).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from sanduan.shared.model import Flag, Reading
from sanduan.shared.wire import (
    MAX_CONFIG_BYTES,
    Ack,
    Batch,
    Command,
    CommandResult,
    Event,
    Message,
    Nack,
    NackReason,
    ResendRequest,
    Severity,
    Status,
    decode,
    encode,
    to_json_obj,
)

HERE = Path(__file__).resolve().parent
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
STATION = "js-taihu-07"
STREAM = 0x1D2C3B4A59687766  # a v2 stream id (random when a buffer is made; fixed here)


def valid_messages() -> dict[str, Message]:
    readings = [
        Reading(1001, T0, "w01001", 7.62, Flag.N, 1),
        Reading(1002, T0, "w01009", 8.4, Flag.N, 1),
        Reading(1003, T0, "w21003", 0.62, Flag.M, 0),
        Reading(1005, T0 + 3_600_000, "w01001", 7.58, Flag.N, 1),
        Reading(1006, T0 + 3_600_000, "w01009", math.nan, Flag.D, 0),
        Reading(1010, T0 + 3_600_000, "w21003", 2.35, Flag.T, 6),
    ]
    return {
        "batch": Batch.from_readings(STATION, 58, T0 + 3_605_000, readings),
        "batch-single": Batch.from_readings(
            STATION, 59, T0 + 7_205_000, [Reading(1011, T0 + 7_200_000, "w01010", 11.5)]
        ),
        "ack": Ack(STATION, 58, 1001, 1010, T0 + 3_606_000),
        "ack-ranges": Ack(STATION, 58, 1001, 1010, T0 + 3_606_000, ((1001, 1003), (1005, 1010))),
        "resend": ResendRequest(STATION, ((1004, 1004), (1007, 1009)), T0 + 3_606_500, "gap"),
        "status": Status(
            station=STATION,
            time_ms=T0 + 3_660_000,
            online=True,
            agent_version="0.1.0",
            buffer_depth=12,
            oldest_unacked_age_s=54.5,
            last_acked_seq=1010,
            dropped=0,
            device_errors={"nh3n-analyser": 3, "sonde": 0},
            bus_utilisation={"rs485-1": 0.125, "rs485-2": 0.0},
            clock_offset_s=-0.25,
            extra={"cpu_temp_c": 51.5, "modem": "4G", "rssi_dbm": -71, "door_open": False},
        ),
        "status-lastwill": Status.last_will(STATION, T0, agent_version="0.1.0"),
        "event": Event(
            station=STATION,
            time_ms=T0 + 3_600_000,
            event_id=17,
            kind="exceedance",
            message="NH3-N 2.35 mg/L above class III limit 1.0 mg/L",
            severity=Severity.CRITICAL,
            code="w21003",
            details={"limit": 1.0, "value": 2.35, "grade": 6, "unit": "mg/L"},
        ),
        "event-clock": Event(
            STATION, T0, 18, "clock", "clock stepped by +31.2 s", Severity.WARNING
        ),
        # v2: the same messages on a stream, and the nack
        "v2-batch": Batch.from_readings(STATION, 58, T0 + 3_605_000, readings, stream=STREAM),
        "v2-ack-ranges": Ack(
            STATION, 58, 1001, 1010, T0 + 3_606_000, ((1001, 1003), (1005, 1010)), STREAM
        ),
        "v2-resend": ResendRequest(STATION, ((1004, 1004),), T0 + 3_606_500, "gap", STREAM),
        "v2-status": Status(
            station=STATION,
            time_ms=T0 + 3_660_000,
            agent_version="0.2.0",
            buffer_depth=12,
            oldest_unacked_age_s=54.5,
            last_acked_seq=1010,
            stream=STREAM,
        ),
        "v2-nack": Nack(
            STATION,
            STREAM,
            58,
            1001,
            1010,
            NackReason.CONFLICT,
            ((1005, 1006),),
            T0 + 3_606_000,
            "seq 1005..1006 stored before with other content",
        ),
        # remote commands (v2 only)
        "cmd-resend": Command(
            STATION,
            "c-20260101-0001",
            "resend",
            T0 + 3_700_000,
            T0 + 4_300_000,
            {"first": 1004, "last": 1009},
        ),
        "cmd-push-config": Command(
            STATION,
            "c-20260101-0002",
            "push-config",
            T0 + 3_800_000,
            T0 + 4_400_000,
            body='[station]\nid = "js-taihu-07"\n\n[commands]\nconfirm_s = 120.0\n',
        ),
        "result-applied": CommandResult(
            STATION,
            "c-20260101-0002",
            T0 + 3_830_000,
            True,
            "applied",
            "station file applied and confirmed",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ),
        "result-refused": CommandResult(
            STATION, "c-20260101-0003", T0 + 3_900_000, False, "expired", "expired 12 s ago"
        ),
    }


def _wire(msg: Message) -> dict[str, Any]:
    obj: dict[str, Any] = msgpack.unpackb(encode(msg), raw=False)
    return obj


def _pack(obj: object) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def _mutated(msg: Message, change: Callable[[dict[str, Any]], None]) -> bytes:
    obj = _wire(msg)
    change(obj)
    return _pack(obj)


def _duplicate_key(msg: Message) -> bytes:
    obj = _wire(msg)
    packer = msgpack.Packer(use_bin_type=True)
    out: bytes = packer.pack_map_header(len(obj) + 1)
    for k, v in obj.items():
        out += packer.pack(k) + packer.pack(v)
    out += packer.pack("v") + packer.pack(1)
    return out


def bad_vectors() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, substring the decode error reason must contain)."""
    m = valid_messages()
    b, ack, rs, st = m["batch"], m["ack"], m["resend"], m["status"]
    b2, nack, ev = m["v2-batch"], m["v2-nack"], m["event"]
    cmd, res = m["cmd-push-config"], m["result-applied"]
    good = encode(b)

    def put(key: str, value: object) -> Callable[[dict[str, Any]], None]:
        return lambda o: o.__setitem__(key, value)

    return {
        "not-msgpack": (b"\xc1", "not msgpack"),
        "text": (b"hello, world\n", "not a wire message"),
        "truncated": (good[:-7], "truncated"),
        "trailing": (good + b"\x00", "trailing byte"),
        "not-map": (_pack([1, "batch"]), "must be a map"),
        "version": (_mutated(b, put("v", 3)), "unknown format version"),
        "kind": (_mutated(b, put("k", "reading")), "unknown message kind"),
        "missing-field": (_mutated(b, lambda o: o.pop("created")), "missing field(s) 'created'"),
        "unknown-field": (_mutated(b, put("note", "x")), "unknown field(s) 'note'"),
        "duplicate-key": (_duplicate_key(b), "repeats the key 'v'"),
        "type": (_mutated(b, put("bseq", "58")), "field 'bseq' must be an int"),
        "station": (_mutated(b, put("station", "js/taihu")), "invalid station id"),
        "flag": (_mutated(b, put("flag", "NNXNDT")), "unknown flag 'X' at index 2"),
        "grade": (_mutated(b, put("grade", b"\x01\x01\x00\x01\x00\x07")), "out of range 0..6"),
        "seq-order": (
            _mutated(b, put("seq", [1001, 1, 0, 2, 1, 4])),
            "seq is not strictly increasing at index 2",
        ),
        "header-count": (_mutated(b, put("n", 5)), "header count n = 5"),
        "header-first": (_mutated(b, put("first", 1000)), "header first = 1000"),
        "header-last": (_mutated(b, put("last", 1011)), "header last = 1011"),
        "column-length": (
            _mutated(b, lambda o: o.__setitem__("val", o["val"][:-1])),
            "column 'val' has 5 entries",
        ),
        "infinity": (
            _mutated(b, lambda o: o.__setitem__("val", [math.inf, *o["val"][1:]])),
            "infinity",
        ),
        "code-index": (_mutated(b, put("ci", [0, 1, 2, 0, 1, 3])), "outside the code dictionary"),
        "empty-batch": (
            _mutated(
                b,
                lambda o: o.update(n=0, seq=[], ts=[], ci=[], val=[], flag="", grade=b"", codes=[]),
            ),
            "no readings",
        ),
        "ack-ranges": (
            _mutated(ack, put("ranges", [[1001, 1005], [1004, 1010]])),
            "overlaps or is out of order",
        ),
        "resend-empty": (_mutated(rs, put("ranges", [])), "no ranges requested"),
        "status-bus": (
            _mutated(st, put("bus_util", {"rs485-1": 1.5})),
            "bus_util['rs485-1'] must be a float in 0..1",
        ),
        "status-online": (_mutated(st, put("online", 1)), "field 'online' must be a bool"),
        "v2-no-stream": (_mutated(b2, lambda o: o.pop("stream")), "missing field(s) 'stream'"),
        "v2-stream-zero": (_mutated(b2, put("stream", 0)), "field 'stream' = 0 is out of range"),
        "v2-seq-bound": (
            _mutated(b2, lambda o: o.update(first=1 << 48, seq=[1 << 48, *o["seq"][1:]])),
            "field 'first' = 281474976710656 is out of range 1..281474976710655",
        ),
        "v2-resend-huge": (
            _mutated(rs, lambda o: o.update(v=2, stream=STREAM, ranges=[[1, (1 << 63) - 1]])),
            "is not a valid range",
        ),
        "nack-v1": (_mutated(nack, put("v", 1)), "a nack is a v2 message"),
        "nack-reason": (_mutated(nack, put("reason", "nope")), "unknown nack reason 'nope'"),
        "event-nul": (_mutated(ev, put("msg", "NH3-N\x00high")), "control character"),
        "cmd-v1": (_mutated(cmd, put("v", 1)), "a cmd is a v2 message"),
        "cmd-expiry": (
            _mutated(cmd, lambda o: o.__setitem__("expires", o["issued"])),
            "is not after issued",
        ),
        "cmd-body-size": (
            _mutated(cmd, put("body", "#" * (MAX_CONFIG_BYTES + 1))),
            "above the maximum of 262144",
        ),
        "cmd-body-control": (
            _mutated(cmd, put("body", "[station]\r\nid = 'x'\n")),
            "field 'body' holds the control character",
        ),
        "cmd-id": (_mutated(cmd, put("id", "a/b")), "field 'id' = 'a/b' must match"),
        "cmd-name": (_mutated(cmd, put("name", "Push Config")), "field 'name'"),
        "result-sha": (_mutated(res, put("sha256", "ABC")), "64 lower-case hex digits"),
        "result-ok": (_mutated(res, put("ok", "yes")), "field 'ok' must be a bool"),
        "ranges-count": (
            _mutated(ack, put("ranges", [[i, i] for i in range(1001, 1001 + 257, 1)][:257])),
            "above the maximum 256",
        ),
    }


def main() -> None:
    for name, msg in valid_messages().items():
        data = encode(msg)
        (HERE / f"{name}.bin").write_bytes(data)
        # From the decoded message, so the JSON shows maps in their canonical (sorted) order.
        obj = to_json_obj(decode(data))
        text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False)
        (HERE / f"{name}.json").write_text(text + "\n", encoding="utf-8")
    for name, (data, reason) in bad_vectors().items():
        (HERE / f"bad-{name}.bin").write_bytes(data)
        (HERE / f"bad-{name}.json").write_text(
            json.dumps({"error": reason}, ensure_ascii=False) + "\n", encoding="utf-8"
        )


if __name__ == "__main__":
    main()

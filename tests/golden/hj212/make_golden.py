# ruff: noqa: E501
"""Write the HJ 212 golden packets (run once; the files are then frozen and reviewed by hand).

Valid packets get a ``.json`` with their decoded fields; bad packets a ``.json`` with a part of
the reason the decoder must give. CRCs are computed with the standard's bitwise algorithm.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def crc(data: bytes) -> int:
    c = 0xFFFF
    for b in data:
        c = (c >> 8) ^ b
        for _ in range(8):
            lsb = c & 1
            c >>= 1
            if lsb:
                c ^= 0xA001
    return c


def frame(seg: bytes, *, length: int | None = None, tail: bytes = b"\r\n") -> bytes:
    n = len(seg) if length is None else length
    return b"##%04d%s%04X%s" % (n, seg, crc(seg), tail)


H = b"QN=20260301080000000;ST=21;CN=2011;PW=123456;MN=33010200000001;Flag=5;"
RT = (
    H
    + b"CP=&&DataTime=20260301080000;w01001-Rtd=7.21,w01001-Flag=N;w01009-Rtd=8.3,w01009-Flag=N;w21003-Rtd=0.412,w21003-Flag=M&&"
)
HOURLY = b"QN=20260301090000123;ST=21;CN=2061;PW=123456;MN=33010200000001;Flag=5;CP=&&DataTime=20260301080000;w21011-Min=0.05,w21011-Avg=0.061,w21011-Max=0.07,w21011-Flag=N&&"
ACK = b"QN=20260301090000123;ST=91;CN=9014;PW=123456;MN=33010200000001;Flag=4;CP=&&&&"
HIST = b"QN=20260302100000000;ST=21;CN=2061;PW=123456;MN=33010200000001;Flag=5;CP=&&BeginTime=20260301000000;EndTime=20260301230000&&"
SPLIT1 = b"QN=20260301090000456;ST=21;CN=2061;PW=123456;MN=33010200000001;Flag=7;PNUM=2;PNO=1;CP=&&DataTime=20260301080000;w01001-Avg=7.2,w01001-Flag=N&&"
SPLIT2 = b"QN=20260301090000456;ST=21;CN=2061;PW=123456;MN=33010200000001;Flag=7;PNUM=2;PNO=2;CP=&&DataTime=20260301080000;w21003-Avg=0.33,w21003-Flag=N&&"

VALID = {
    "vector": b"QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&",
    "realtime": RT,
    "hourly": HOURLY,
    "ack": ACK,
    "history": HIST,
    "split-1": SPLIT1,
    "split-2": SPLIT2,
}

BAD = {
    "bad-crc": (frame(RT)[:-6] + b"0000\r\n", "does not match"),
    "bad-length": (frame(RT, length=len(RT) + 1), "length field says"),
    "bad-length-digits": (b"##01a0" + frame(RT)[6:], "not 4 decimal digits"),
    "bad-too-long": (b"##1100" + b"x" * 1100 + b"0000\r\n", "above the maximum"),
    "bad-tail": (frame(RT, tail=b"\n\n"), "CR LF"),
    "bad-no-mn": (frame(RT.replace(b"MN=33010200000001;", b"")), "MN missing"),
    "bad-flag-version": (frame(RT.replace(b"Flag=5", b"Flag=1")), "version 0"),
    "bad-pnum": (frame(RT.replace(b"Flag=5;", b"Flag=5;PNUM=2;PNO=1;")), "split bit"),
    "bad-non-ascii": (frame(RT.replace(b"PW=123456", "PW=12345\u00e9".encode())), "non-ASCII"),
    "bad-datatime": (
        frame(RT.replace(b"DataTime=20260301", b"DataTime=20261301")),
        "not a valid date",
    ),
    "bad-number": (frame(RT.replace(b"Rtd=7.21", b"Rtd=abc")), "decimal number"),
    "bad-flag-letter": (frame(RT.replace(b"w01001-Flag=N", b"w01001-Flag=Z")), "data flag"),
    "bad-unknown-header": (frame(RT.replace(b"ST=21;", b"ST=21;XX=1;")), "unknown header field"),
    "bad-duplicate": (frame(RT.replace(b"ST=21;", b"ST=21;ST=21;")), "appears twice"),
    "bad-cp-end": (frame(RT[:-2]), "CP does not end"),
    "bad-qn": (frame(RT.replace(b"QN=20260301080000000", b"QN=2026030108000000")), "QN"),
}


def main() -> None:
    from sanduan.shared.hj212.cli import packet_json
    from sanduan.shared.hj212.codec import decode

    for name, seg in VALID.items():
        raw = frame(seg)
        (HERE / f"{name}.hj212").write_bytes(raw)
        obj = packet_json(decode(raw))
        (HERE / f"{name}.json").write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    for name, (raw, error) in BAD.items():
        (HERE / f"{name}.hj212").write_bytes(raw)
        (HERE / f"{name}.json").write_text(json.dumps({"error": error}) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

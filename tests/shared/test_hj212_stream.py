"""HJ 212 stream splitting: packets found in any chunking, garbage skipped and counted,
resynchronisation after bad frames, bounded buffer; and ``sanduan hj212 decode``."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sanduan.cli import app
from sanduan.shared.hj212.codec import MAX_DATA, OVERHEAD, decode
from sanduan.shared.hj212.stream import Splitter, split_bytes

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "hj212"
GOOD = [(GOLDEN / f"{n}.hj212").read_bytes() for n in ("realtime", "hourly", "ack", "history")]


def _feed_in_chunks(data: bytes, sizes: list[int]) -> tuple[Splitter, list[bytes], int]:
    s = Splitter()
    packets: list[bytes] = []
    errors = 0
    pos = 0
    i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)] if sizes else len(data)
        i += 1
        for f in s.feed(data[pos : pos + n]):
            if f.packet is not None:
                packets.append(f.raw)
            else:
                errors += 1
        pos += n
        assert s.buffered <= MAX_DATA + OVERHEAD
    return s, packets, errors


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=10))
def test_packets_found_in_any_chunking(sizes: list[int]) -> None:
    stream = b"".join(GOOD * 3)
    s, packets, errors = _feed_in_chunks(stream, sizes)
    assert packets == GOOD * 3
    assert errors == 0
    assert s.buffered == 0


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.binary(max_size=80), min_size=len(GOOD) + 1, max_size=len(GOOD) + 1),
    st.lists(st.integers(1, 500), min_size=1, max_size=5),
)
def test_garbage_between_packets_is_skipped_and_counted(
    garbage: list[bytes], sizes: list[int]
) -> None:
    # Garbage that contains '##' can swallow a following packet (it looks like the start of
    # one); keep this test about garbage that cannot.
    garbage = [g.replace(b"#", b"") for g in garbage]
    stream = b"".join(g + p for g, p in zip(garbage, [*GOOD, b""], strict=True))
    s, packets, errors = _feed_in_chunks(stream, sizes)
    assert packets == GOOD
    assert s.skipped_bytes == sum(len(g) for g in garbage)
    assert (errors > 0) == any(garbage)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), min_size=1, max_size=5))
def test_hostile_stream_never_grows_the_buffer(data: bytes, sizes: list[int]) -> None:
    s, _, _ = _feed_in_chunks(b"##" + data, sizes)
    assert s.buffered <= MAX_DATA + OVERHEAD


def test_resync_after_wrong_length_and_bad_crc() -> None:
    rt, hourly, ack, _ = GOOD
    wrong_length = b"##0999" + rt[6:]  # claims 999 data characters: swallows what follows
    bad_crc = hourly[:-6] + b"0000\r\n"
    stream = wrong_length + bad_crc + ack + b"\xff\xfe junk" + rt
    frames, left = split_bytes(stream)
    good = [f.raw for f in frames if f.packet is not None]
    assert good == [ack, rt]
    reasons = [f.error.reason for f in frames if f.error is not None]
    assert any("CR LF before the end" in r for r in reasons)
    assert any("CRC" in r for r in reasons)
    assert any("before '##'" in r for r in reasons)
    assert left == 0


def test_length_field_garbage_and_oversize() -> None:
    s = Splitter()
    frames = s.feed(b"##zzzz" + GOOD[0] + b"##9999" + b"x" * 20 + GOOD[1])
    assert [decode(f.raw) for f in frames if f.packet] == [decode(GOOD[0]), decode(GOOD[1])]
    assert s.errors == 2
    assert s.packets == 2


def test_a_trailing_hash_waits_for_the_next_chunk() -> None:
    s = Splitter()
    raw = GOOD[0]
    assert s.feed(b"junk#") != []
    assert s.buffered == 1
    frames = s.feed(raw[1:])
    assert [f.raw for f in frames if f.packet] == [raw]


def test_incomplete_tail_is_reported() -> None:
    frames, left = split_bytes(GOOD[0] + GOOD[1][:40])
    assert left == 40
    assert frames[-1].error is not None
    assert "incomplete" in frames[-1].error.reason


# --- sanduan hj212 decode ------------------------------------------------------------------

runner = CliRunner()


def test_cli_decodes_a_capture(tmp_path: Path) -> None:
    f = tmp_path / "cap.bin"
    f.write_bytes(b"".join(GOOD))
    result = runner.invoke(app, ["hj212", "decode", str(f)])
    assert result.exit_code == 0, result.output
    assert "hourly data" in result.output
    assert "w21003" in result.output
    assert "0.412" in result.output
    assert "2026-03-01 08:00:00" in result.output


def test_cli_json_from_stdin() -> None:
    result = runner.invoke(app, ["hj212", "decode", "--json", "-"], input=GOOD[2])
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert obj["CN"] == "9014"
    assert obj["CP"] == []


def test_cli_reports_bad_bytes_and_fails(tmp_path: Path) -> None:
    f = tmp_path / "bad.bin"
    f.write_bytes(GOOD[0] + b"garbage" + (GOLDEN / "bad-crc.hj212").read_bytes())
    result = runner.invoke(app, ["hj212", "decode", str(f)])
    assert result.exit_code == 1
    assert "real-time data" in result.stdout
    assert "CRC" in result.stderr
    assert "byte 202: bytes before" in result.stderr
    assert "byte 209: CRC" in result.stderr


def test_cli_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["hj212", "decode", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "nope" in result.stderr

from __future__ import annotations

from sanduan.central.core.ingest_check import check_batch, check_values
from sanduan.shared.model import Flag
from sanduan.shared.wire import Batch

T0 = 1_780_000_000_000


def _batch(value: float, flag: Flag, code: str = "w01001") -> Batch:
    return Batch.from_columns(
        "S1",
        1,
        T0,
        seq=[1, 2],
        ts_ms=[T0, T0 + 1000],
        code=[code, code],
        values=[7.0, value],
        flags=[Flag.N, flag],
    )


def test_trusted_value_out_of_physical_range_is_rejected_with_reason() -> None:
    reason = check_values(_batch(40.0, Flag.N))
    assert reason is not None
    assert "w01001" in reason and "seq 2" in reason and "physical range" in reason


def test_value_the_station_flags_invalid_is_kept_as_evidence() -> None:
    assert check_values(_batch(40.0, Flag.D)) is None
    assert check_values(_batch(40.0, Flag.S)) is not None


def test_nan_and_plausible_values_pass() -> None:
    assert check_batch(_batch(float("nan"), Flag.N), "S1") is None
    assert check_batch(_batch(8.5, Flag.N), "S1") is None
    assert check_batch(_batch(8.5, Flag.N), "S2") is not None

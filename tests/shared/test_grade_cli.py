from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sanduan.cli import app

runner = CliRunner()


def grade(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["grade", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_output_has_exactly_the_documented_shape() -> None:
    code, out, err = grade("COD=15", "DO=1.99", "pH=7", "nh3n=1.6", "TP=0.35", "temperature=20",
                           "--json")  # fmt: skip
    assert code == 0, err
    assert out.count("\n") == 1
    doc = json.loads(out)
    assert set(doc) == {"class", "meets_target", "items", "main_pollutants"}
    assert doc["class"] == 6
    assert doc["meets_target"] is None
    assert list(doc["items"]) == ["COD", "DO", "pH", "NH3-N", "TP", "temperature"]
    for item in doc["items"].values():
        assert set(item) == {"value", "class", "evaluated", "exceedance", "multiple_iii"}
    assert doc["items"]["COD"] == {"value": 15.0, "class": 1, "evaluated": True,
                                   "exceedance": -0.25, "multiple_iii": -0.25}  # fmt: skip
    assert doc["items"]["DO"]["class"] == 6
    assert doc["items"]["DO"]["exceedance"] is None
    assert doc["items"]["temperature"] == {"value": 20.0, "class": 0, "evaluated": False,
                                           "exceedance": None, "multiple_iii": None}  # fmt: skip
    assert doc["items"]["TP"]["exceedance"] == pytest.approx(0.75)
    assert doc["main_pollutants"] == ["DO", "TP", "NH3-N"]


def test_json_target_class_and_lake() -> None:
    code, out, _ = grade("TP=0.2", "COD=18", "--water-body", "lake", "--target-class", "4",
                         "--json")  # fmt: skip
    assert code == 0
    doc = json.loads(out)
    assert doc["class"] == 5
    assert doc["meets_target"] is False
    # Against the Class IV limit when a target is given.
    assert doc["items"]["TP"]["exceedance"] == pytest.approx(1.0)
    assert doc["items"]["COD"]["exceedance"] == pytest.approx(-0.4)
    code, out, _ = grade("COD=18", "--target-class", "3", "--json")
    assert json.loads(out)["meets_target"] is True


def test_table_output() -> None:
    code, out, _ = grade("COD=15", "DO=1.99", "TP=0.35", "turbidity=4", "--target-class", "3")
    assert code == 0
    for text in ("COD", "劣V", "overall class: 劣V", "target class III met: no",
                 "main pollutants: DO, TP", "exceedance vs III", "+0.75"):  # fmt: skip
        assert text in out
    row = next(line for line in out.splitlines() if "turbidity" in line)
    assert " - " in row


def test_table_output_not_graded() -> None:
    code, out, _ = grade("temperature=20", "--target-class", "2")
    assert code == 0
    assert "overall class: not graded" in out
    assert "unknown" in out
    assert "main pollutants: none" in out


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["foo=1"], "unknown parameter 'foo'"),
        (["nh3=1"], "did you mean 'NH3-N'"),
        (["COD"], "malformed pair 'COD'"),
        (["=3"], "malformed pair '=3'"),
        (["COD=abc"], "'abc' is not a number"),
        (["COD=nan"], "not a finite number"),
        (["COD=1", "codcr=2"], "duplicate parameter 'COD'"),
        (["COD=-1"], "COD=-1.0: negative value"),
        (["DO=8", "NH3-N=-0.5", "--json"], "NH3-N=-0.5"),
    ],
)
def test_errors_exit_2_with_one_line(args: list[str], text: str) -> None:
    code, out, err = grade(*args)
    assert code == 2
    assert out == ""
    assert err.startswith("sanduan grade: ")
    assert err.count("\n") == 1
    assert text in err


def test_target_class_out_of_range_is_a_usage_error() -> None:
    code, _, _ = grade("COD=1", "--target-class", "6")
    assert code == 2

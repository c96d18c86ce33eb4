from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sanduan.central.app import check_config, validate_topology
from sanduan.shared.config import load_central_config
from sanduan.shared.errors import ConfigError

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _setup(tmp_path: Path, target: str = "3") -> Path:
    county = (DEPLOY / "county.example.toml").read_text(encoding="utf-8")
    county = county.replace("target_class = 3", f"target_class = {target}", 1)
    (tmp_path / "county.toml").write_text(county, encoding="utf-8")
    shutil.copy(DEPLOY / "rules.example.toml", tmp_path / "rules.toml")
    cfg = tmp_path / "central.toml"
    cfg.write_text(
        f'[central]\nstore = "sqlite:///{tmp_path}/c.db"\ncounty = "county.toml"\n'
        'rules = "rules.toml"\n',
        encoding="utf-8",
    )
    return cfg


def test_check_config_validates_county_and_rules(tmp_path: Path) -> None:
    checks = {c.what: c for c in check_config(_setup(tmp_path))}
    assert checks["topology"].status == "ok"
    assert "sections" in checks["topology"].detail


def test_bad_county_is_reported_with_file_and_key(tmp_path: Path) -> None:
    cfg = _setup(tmp_path, target="9")
    checks = {c.what: c for c in check_config(cfg)}
    assert checks["topology"].status == "error"
    assert "county.toml" in checks["topology"].detail
    with pytest.raises(ConfigError) as info:
        validate_topology(load_central_config(cfg))
    assert info.value.file.endswith("county.toml")
    assert "target_class" in info.value.key

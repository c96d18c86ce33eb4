"""Composition of the collector process: configuration, logging, signals, the store, ingest."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from sanduan.shared.config import CentralConfig, load_central_config
from sanduan.shared.errors import ConfigError


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("paho").setLevel(logging.WARNING)


def resolve_store_url(config: Path | None, store: str | None) -> str:
    """The store URL from ``--store`` or from the config file's ``central.store``."""
    if store:
        return store
    if config is None:
        raise ConfigError("<command line>", "", "give --config central.toml or --store URL")
    return load_central_config(config).central.store


def serve(
    cfg: CentralConfig,
    *,
    store_url: str | None = None,
    client_id: str | None = None,
    migrate: bool = False,
) -> None:
    """Run the collector until SIGTERM or SIGINT."""
    from sanduan.central.ingest import Collector
    from sanduan.central.store import open_store

    url = store_url or cfg.central.store
    validate_topology(cfg)
    if migrate:
        open_store(url, migrate=True).close()
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("sanduan.central").info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    Collector(cfg, store_url=url, client_id=client_id).run(stop)


@dataclass(frozen=True, slots=True)
class ConfigCheck:
    """One line of ``check-config``: what, the value, and whether it is usable."""

    name: str
    value: str
    ok: bool
    note: str = ""


def check_config(path: Path) -> list[ConfigCheck]:
    """Validate a collector config; report the settings that matter and whether files exist."""
    from sanduan.central.store import redact_url

    cfg = load_central_config(path)
    sec, m, ing = cfg.central, cfg.mqtt, cfg.ingest
    out = [ConfigCheck("store", redact_url(sec.store), True)]
    if sec.store.startswith("sqlite:"):
        from sanduan.central.store.sqlite import sqlite_path

        p = sqlite_path(sec.store)
        if p != ":memory:":
            f = Path(p).absolute()
            exists = f.exists()
            parent_ok = f.parent.is_dir()
            note = (
                "exists"
                if exists
                else ("will be created by `sanduan central migrate`" if parent_ok else "")
            )
            out.append(
                ConfigCheck(
                    "store file",
                    str(f),
                    exists or parent_ok,
                    note or f"directory {f.parent} does not exist",
                )
            )
    out.append(ConfigCheck("broker", m.broker, True, f"protocol {m.protocol}"))
    out.append(
        ConfigCheck(
            "group",
            m.group or "-",
            True,
            "shared subscription $share/" + m.group if m.group else "one collector",
        )
    )
    out.append(ConfigCheck("client id", m.client_id or "(default)", True))
    out.extend(_topology_checks(cfg))
    out.append(
        ConfigCheck(
            "ingest",
            f"max {ing.max_message_bytes} B, gap timeout {ing.gap_timeout_s:g} s,"
            f" resend every {ing.resend_interval_s:g} s, workers {ing.workers},"
            f" stamps {ing.earliest_reading} .. now + {ing.future_margin_s:g} s,"
            f" dead letters {ing.dead_letters_per_hour}/h and"
            f" {ing.dead_letter_bytes_per_hour} B/h per station",
            True,
        )
    )
    out.append(ConfigCheck("timezone", sec.timezone, True))
    return out


def validate_topology(cfg: CentralConfig) -> tuple[int, int, int]:
    """Load the county and rules files named by the config, validated and cross-checked.

    Raises ConfigError naming the file, key and reason. Returns (sections, towns, rules), zero
    for a file that is not configured.
    """
    from sanduan.central.core.compensation import load_rules
    from sanduan.central.core.county import load_county

    sec = cfg.central
    if sec.county is None:
        return 0, 0, 0
    county = load_county(sec.county)
    n_rules = 0
    if sec.rules is not None:
        rules = load_rules(sec.rules)
        rules.check(county)
        n_rules = len(rules.rules)
    return len(county.sections), len(county.towns), n_rules


def _topology_checks(cfg: CentralConfig) -> list[ConfigCheck]:
    sec = cfg.central
    out: list[ConfigCheck] = []
    missing = False
    for name, value in (("county", sec.county), ("rules", sec.rules)):
        if value is None:
            out.append(ConfigCheck(name, "-", True, "not set"))
        elif not value.is_file():
            missing = True
            out.append(ConfigCheck(name, str(value), False, "file not found"))
        else:
            out.append(ConfigCheck(name, str(value), True, "exists"))
    if missing or sec.county is None:
        return out
    try:
        sections, towns, rules = validate_topology(cfg)
    except ConfigError as e:
        out.append(ConfigCheck("topology", "invalid", False, str(e)))
    else:
        note = f"{sections} sections, {towns} towns" + (f", {rules} rules" if sec.rules else "")
        out.append(ConfigCheck("topology", "valid", True, note))
    return out

"""Composition of the collector process: configuration, logging, signals, the store, ingest."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from sanduan.shared import preflight
from sanduan.shared.config import CentralConfig, load_central_config
from sanduan.shared.errors import ConfigError
from sanduan.shared.preflight import Check, ProbeFailed, Probes, error, ok


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
    return load_central_config(config).central.store_url()


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

    url = store_url or cfg.central.store_url()
    validate_topology(cfg)
    if migrate:
        open_store(url, migrate=True).close()
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("sanduan.central").info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    hj212 = None
    if cfg.hj212 is not None:
        from sanduan.central.hj212.server import Hj212Server

        hj212 = Hj212Server(cfg, store_url=url)
        hj212.start()
    try:
        Collector(cfg, store_url=url, client_id=client_id).run(stop)
    finally:
        if hj212 is not None:
            hj212.stop()


def with_login(
    cfg: CentralConfig, mqtt_user: str | None, mqtt_password_file: Path | None
) -> CentralConfig:
    """``cfg`` with the MQTT login of the command line (``--mqtt-user``,
    ``--mqtt-password-file``) instead of the file's."""
    login: dict[str, Any] = {}
    if mqtt_user is not None:
        login["username"] = mqtt_user
    if mqtt_password_file is not None:
        login |= {"password_file": mqtt_password_file, "password": None}
    if not login:
        return cfg
    return cfg.replace(mqtt=cfg.mqtt.replace(**login))


def check_config(
    path: Path,
    probes: Probes | None = None,
    *,
    online: bool = False,
    mqtt_user: str | None = None,
    mqtt_password_file: Path | None = None,
) -> list[Check]:
    """What ``sanduan central check-config`` prints: the settings that matter, and whether what
    ``run`` needs is there (files, directories; with ``online``, the broker and the database).
    ``mqtt_user`` and ``mqtt_password_file`` are ``run``'s overrides of the login.

    Raises ConfigError for a file that does not load at all.
    """
    from sanduan.central.store import redact_url

    cfg = with_login(load_central_config(path), mqtt_user, mqtt_password_file)
    sec, m, ing = cfg.central, cfg.mqtt, cfg.ingest
    probes = probes or Probes(database=database_probe)
    out = [ok("central.store", redact_url(sec.store))]
    out.append(ok("mqtt.broker", f"{m.broker}, protocol {m.protocol}"))
    group = f"{m.group}: shared subscription $share/{m.group}" if m.group else "-: one collector"
    out.append(ok("mqtt.group", group))
    out.append(ok("mqtt.client_id", m.client_id or "(default)"))
    out.extend(_topology_checks(cfg))
    out.append(
        ok(
            "ingest",
            f"max {ing.max_message_bytes} B, gap timeout {ing.gap_timeout_s:g} s,"
            f" resend every {ing.resend_interval_s:g} s, workers {ing.workers},"
            f" stamps {ing.earliest_reading} .. now + {ing.future_margin_s:g} s,"
            f" dead letters {ing.dead_letters_per_hour}/h and"
            f" {ing.dead_letter_bytes_per_hour} B/h per station",
        )
    )
    out.append(ok("central.timezone", sec.timezone))
    out.extend(preflight.central_checks(cfg, probes, online=online))
    return out


def database_probe(url: str) -> str:
    """Open the store at ``url`` (check-config --online): its schema version, or ProbeFailed."""
    from sanduan.central.store import open_store
    from sanduan.shared.errors import StoreError

    try:
        store = open_store(url)
    except StoreError as e:
        raise ProbeFailed(
            str(e), "start the database, check the URL and password, run `sanduan central migrate`"
        ) from None
    try:
        return f"{store.url} answers, schema version {store.schema_version()}"
    finally:
        store.close()


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


def _topology_checks(cfg: CentralConfig) -> list[Check]:
    sec = cfg.central
    out: list[Check] = []
    missing = False
    for name, value in (("county", sec.county), ("rules", sec.rules)):
        if value is None:
            out.append(ok(f"central.{name}", "not set"))
            continue
        c = preflight.check_file(f"central.{name}", value)
        missing = missing or c.status != "ok"
        out.append(c)
    if missing or sec.county is None:
        return out
    try:
        sections, towns, rules = validate_topology(cfg)
    except ConfigError as e:
        out.append(error("topology", f"invalid: {e}", "correct the file and key named"))
    else:
        note = f"{sections} sections, {towns} towns" + (f", {rules} rules" if sec.rules else "")
        out.append(ok("topology", f"valid: {note}"))
    return out

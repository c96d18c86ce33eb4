"""How tests stay apart: ``make test`` and ``make unit`` run them in parallel (pytest-xdist,
``-n``), so any two tests may run at the same time, in different processes. Every test must
therefore bring its own resources:

* **Broker**: never hard-code 127.0.0.1:1883. Use ``tests.brokers.shared_port()`` for "the
  local Mosquitto" (each xdist worker has a Mosquitto of its own on a free port; a plain serial
  run uses the one on 127.0.0.1:1883), or a ``tests.brokers.PrivateBroker`` when the test kills
  the broker, needs a quiet broker, or runs a collector (which serves every station it sees).
* **Ports**: ``tests.brokers.free_port()`` for anything a test listens on; never a fixed port.
* **PostgreSQL**: a fresh schema per test in database ``test``: the ``pg_url_factory`` /
  ``store_url`` fixtures of tests/central/conftest.py (URL ``...?options=-csearch_path%3D<s>``,
  dropped afterwards). Never write to the ``public`` schema.
* **Ids**: station, client and group ids unique to the test (``uid`` / ``station_id`` fixtures,
  or ``uuid.uuid4().hex``); a broker shared by a worker sees other tests' traffic.
* **Files**: under ``tmp_path`` (per test) or ``tmp_path_factory`` (per worker session), never
  in the working tree.
* **Timing**: no assertion on wall time or throughput (the machine is loaded); wait for a
  condition with a generous bound instead. A whole rig run (a county, the chaos run), which
  checks every reading against replies timed by the simulated devices, takes
  ``@pytest.mark.county``: ``make test`` runs those after the rest, one at a time.

Expensive data built once (the county month of tests/web) lives in ``scope="session"``
fixtures, built once per worker.
"""

from __future__ import annotations

import ctypes
import getpass
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # so that ``tests.brokers`` imports
    sys.path.insert(0, str(ROOT))

# No per-example deadline: a loaded machine (parallel workers) makes any deadline flaky.
# Tests that want more examples than the default 100 say so with ``@settings``.
settings.register_profile("sanduan", deadline=None)
settings.load_profile("sanduan")

_PR_SET_PDEATHSIG = 1
_worker_broker: list[subprocess.Popen[bytes]] = []
_worker_dir: list[tempfile.TemporaryDirectory[str]] = []


def _die_with_parent() -> None:
    """In the broker's child process: the kernel kills it when the worker ends, however the
    worker ends (xdist may end a worker without unconfiguring it)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def pytest_configure(config: pytest.Config) -> None:
    """In an xdist worker: start the worker's own Mosquitto, published through the
    environment (``SANDUAN_TEST_BROKER_PORT``, read by ``tests.brokers.shared_port``)."""
    if not os.environ.get("PYTEST_XDIST_WORKER") or not shutil.which("mosquitto"):
        return
    from tests.brokers import SHARED_PORT_ENV, free_port, wait_port

    d = tempfile.TemporaryDirectory(prefix="sanduan-broker-")
    _worker_dir.append(d)
    port = free_port()
    conf = Path(d.name) / "mosquitto.conf"
    conf.write_text(
        # ``user``: as root, mosquitto would switch to "mosquitto", and a change of user clears
        # the parent-death signal.
        f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
        "persistence false\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 (no threads yet; prctl only)
    )
    _worker_broker.append(proc)
    if not wait_port(port, proc):
        raise pytest.UsageError(f"the worker's mosquitto did not start ({conf})")
    os.environ[SHARED_PORT_ENV] = str(port)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    while _worker_broker:
        proc = _worker_broker.pop()
        proc.kill()
        proc.wait(10)
    while _worker_dir:
        _worker_dir.pop().cleanup()

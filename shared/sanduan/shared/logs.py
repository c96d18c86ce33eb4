"""Logging helpers shared by the edge agent and the collector."""

from __future__ import annotations

import collections
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

__all__ = ["RateLimitedLog", "describe_connect_error"]


class RateLimitedLog:
    """Says a recurring problem at most once per ``every_s`` (of ``now()``), with how often it
    happened in between."""

    def __init__(self, logger: logging.Logger, every_s: float, now: Callable[[], float]) -> None:
        self.logger = logger
        self.every_s = every_s
        self.now = now
        self._last: dict[str, float] = {}
        self._since: collections.Counter[str] = collections.Counter()

    def __call__(self, level: int, key: str, msg: str, *args: Any) -> bool:
        """Log ``msg`` unless ``key`` was logged less than ``every_s`` ago; True if logged."""
        t = self.now()
        last = self._last.get(key)
        if last is not None and t - last < self.every_s:
            self._since[key] += 1
            return False
        more = self._since.pop(key, 0)
        self._last[key] = t
        if more:
            msg += f" ({more} more since the last report)"
        self.logger.log(level, msg, *args)
        return True

    def reset(self, key: str) -> None:
        """Forget ``key``: its next occurrence is said at once (after a recovery)."""
        self._last.pop(key, None)
        self._since.pop(key, None)


def describe_connect_error(exc: BaseException | None) -> str:
    """A short reason for a failed TCP/TLS connection attempt: refused, timeout, TLS failure,
    unknown host, or the system's own words."""
    if exc is None:
        return "connection failed"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens there, or a firewall rejects it)"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out (host down, wrong address, or a firewall drops the packets)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS failure: certificate not accepted ({exc.verify_message or exc.reason})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failure: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__

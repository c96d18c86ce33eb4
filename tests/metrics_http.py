"""HTTP helpers for the tests of the agent's and the collector's ``/metrics`` endpoints."""

from __future__ import annotations

import http.client
import socket

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def get(port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
    """(status, Content-Type, body) of one request to 127.0.0.1:``port``."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type") or "", r.read().decode()
    finally:
        c.close()


def scrape(port: int) -> dict[str, float]:
    """The samples of ``/metrics`` by name (with labels), after checking status and type."""
    status, ctype, text = get(port, "/metrics")
    assert (status, ctype) == (200, CONTENT_TYPE)
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def raw(port: int, data: bytes) -> bytes:
    """Send ``data`` as it is and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(4096):
            out += chunk
        return out

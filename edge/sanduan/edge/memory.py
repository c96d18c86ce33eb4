"""Resident memory of the agent process (Linux): release what the grading JIT no longer needs.

numba compiles and loads kernels with LLVM (``libllvmlite.so``, ~180 MB of code and read-only
data on disk). Loading one cached kernel touches some 65 MiB of that library, which then stays
counted in the process's resident set although the agent never runs LLVM again: calling a loaded
kernel goes straight to its machine code. Those pages are clean, read-only file pages, so
dropping them from the process (``madvise(MADV_DONTNEED)``) loses nothing: should LLVM run again
(a kernel loaded later, a new signature compiled), the kernel maps them back from the page cache.

Only mappings that are not writable and hold no private (copy-on-write) page are released: the
library's relocated data stays untouched. Everything here is a no-op where ``/proc/self/smaps``
or ``madvise`` is not available.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("sanduan.edge.memory")

LLVM_LIBRARY = "libllvmlite"
_SMAPS = Path("/proc/self/smaps")
_STATUS = Path("/proc/self/status")


@dataclass(frozen=True, slots=True)
class Mapping:
    start: int
    end: int
    perms: str
    path: str
    rss_kib: int = 0
    anonymous_kib: int = 0
    private_dirty_kib: int = 0

    @property
    def releasable(self) -> bool:
        """Read-only file pages that were never written: dropping them loses nothing."""
        return (
            "w" not in self.perms
            and self.path.startswith("/")
            and self.anonymous_kib == 0
            and self.private_dirty_kib == 0
        )


def mappings(smaps: Path = _SMAPS) -> list[Mapping]:
    """The process's memory mappings with their resident sizes (empty where unsupported)."""
    try:
        text = smaps.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    out: list[Mapping] = []
    cur: dict[str, int] = {}
    head: tuple[int, int, str, str] | None = None

    def flush() -> None:
        if head is not None:
            out.append(
                Mapping(
                    *head,
                    rss_kib=cur.get("Rss", 0),
                    anonymous_kib=cur.get("Anonymous", 0),
                    private_dirty_kib=cur.get("Private_Dirty", 0),
                )
            )

    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0].endswith(":"):
            if len(parts) >= 2 and parts[1].isdigit():
                cur[parts[0][:-1]] = int(parts[1])
            continue
        flush()
        lo, _, hi = parts[0].partition("-")
        head = (int(lo, 16), int(hi, 16), parts[1], parts[5] if len(parts) > 5 else "")
        cur = {}
    flush()
    return out


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    if not hasattr(libc, "madvise"):
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    return libc


def release_library_pages(name: str = LLVM_LIBRARY) -> int:
    """Drop the resident read-only pages of the shared libraries whose path contains ``name``
    from this process. Returns the KiB released (0 where unsupported or nothing was loaded)."""
    dontneed = getattr(mmap, "MADV_DONTNEED", None)
    maps = [m for m in mappings() if name in m.path and m.releasable and m.rss_kib > 0]
    if not maps or dontneed is None:
        return 0
    libc = _libc()
    if libc is None:
        return 0
    released = 0
    for m in maps:
        if libc.madvise(m.start, m.end - m.start, dontneed) == 0:
            released += m.rss_kib
        else:
            log.debug("madvise on %s failed: errno %d", m.path, ctypes.get_errno())
    return released


def trim_heap() -> bool:
    """Give the C heap's free memory back to the system (glibc ``malloc_trim``)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))


def library_resident_kib(name: str = LLVM_LIBRARY) -> int:
    """Resident KiB of the mappings of the libraries whose path contains ``name``."""
    return sum(m.rss_kib for m in mappings() if name in m.path)


def resident_kib(status: Path = _STATUS) -> dict[str, int]:
    """``VmRSS``, ``VmHWM``, ``RssAnon`` and ``RssFile`` of this process in KiB (empty where
    unsupported)."""
    out: dict[str, int] = {}
    try:
        lines = status.read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0])
    return out

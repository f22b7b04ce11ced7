"""Same-host shared-memory buffers: pixels go through a /dev/shm segment instead of a ZeroMQ frame.

Why: a 4096x4096 layer over loopback TCP is copied twice per direction and its every byte hashed (HMAC) on both
sides; through a segment it is copied once (the writer fills it, the reader maps it) and nothing is hashed. The
header (which names the segment, its offset and size) stays signed. SPEC.md section 8 has the rules and the
threat model.

Linux only, on purpose: segments are opened as ``/dev/shm/NAME`` files (what glibc's ``shm_open`` does), which lets
the reader ``fstat`` the very descriptor it maps (owner, mode, size: no check-then-open race). We do not use
``multiprocessing.shared_memory``: in Python < 3.13 attaching to a segment registers it with the resource
tracker, which unlinks it when the *attaching* process exits and starts a tracker process inside the host
application. Elsewhere (Windows, macOS, no /dev/shm) ``available()`` is False and clients send frames inline.
Standard library only: imported inside Krita and GIMP.
"""

from __future__ import annotations

import atexit
import mmap
import os
import re
import secrets
import stat
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ErrorCode, ProtocolError

SHM_DIR = Path("/dev/shm")
CLIENT_PREFIX = "le-c"  # a client's pooled segments (inputs, and results written for it); it unlinks them
SERVER_PREFIX = "le-s"  # the backend's own results and probe; unlinked on release/eviction/stop
# le-c<pid>-<32 hex>: the pid lets a backend sweep the segments of a client that was killed.
NAME_RE = re.compile(r"^le-([cs])(\d{1,10})-([0-9a-f]{32})$")
MIN_BYTES = 256 << 10  # smaller buffers go inline: making a segment costs more than signing them
ALIGN = 64  # buffers inside one segment start on cache-line boundaries
SWEEP_MIN_AGE_S = 2.0  # a dead writer's segment is swept only when at least this old


def available() -> bool:
    """True where segments can be created and checked safely (Linux with a writable /dev/shm)."""
    return sys.platform.startswith("linux") and SHM_DIR.is_dir() and os.access(SHM_DIR, os.W_OK | os.X_OK)


def host_identity() -> dict | None:
    """What two processes compare to tell they share a machine and a user (None: no shm here)."""
    if not available():
        return None
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        # the pid namespace too: the dead-writer sweep reads the pids in segment names (a sandboxed host
        # sharing /dev/shm but not pids would have its live segments swept)
        pid_ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return {"boot_id": boot_id, "uid": os.getuid(), "pid_ns": pid_ns}


def new_name(prefix: str) -> str:
    return f"{prefix}{os.getpid()}-{secrets.token_hex(16)}"


def aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Segment:
    """A segment this process created (O_CREAT|O_EXCL, mode 0600) and is writing."""

    name: str
    size: int
    _mm: mmap.mmap | None = None

    @classmethod
    def create(cls, size: int, prefix: str) -> Segment:
        size = max(1, size)
        name = new_name(prefix)
        fd = os.open(SHM_DIR / name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask: never readable by others, exactly what readers check
            # reserve every page now: a full /dev/shm (e.g. Docker's 64 MiB default) is ENOSPC here, where it
            # falls back to inline, instead of SIGBUS when the pixels are written
            os.posix_fallocate(fd, 0, size)
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
        except BaseException:
            os.close(fd)
            _unlink(name)
            raise
        os.close(fd)  # the mapping keeps the memory; the name keeps the segment for the reader
        return cls(name, size, mm)

    def write(self, offset: int, data: Any) -> None:
        view = memoryview(data).cast("B")
        assert self._mm is not None
        self._mm[offset : offset + view.nbytes] = view

    def view(self, offset: int, size: int) -> memoryview:
        """A view of our own mapping (what an outgoing Buffer's ``data`` holds)."""
        assert self._mm is not None
        return memoryview(self._mm)[offset : offset + size]

    def close(self) -> None:
        """Drop our mapping (views still held keep it alive until they go); the name stays."""
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # exported views: the mapping goes with the last of them
                pass

    def unlink(self) -> None:
        self.close()
        _unlink(self.name)


def _unlink(name: str) -> None:
    try:
        os.unlink(SHM_DIR / name)
    except FileNotFoundError:
        pass


def exists(name: str) -> bool:
    return bool(NAME_RE.match(name)) and (SHM_DIR / name).exists()


def _bad(message: str, **details: Any) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_BUFFER, message, details)


def parse_location(loc: Any) -> tuple[str, int, int]:
    """A descriptor's ``location`` -> (name, offset, size); BAD_BUFFER when it is not well formed."""
    if not isinstance(loc, dict) or set(loc) - {"shm", "offset", "size"}:
        raise _bad('A buffer location must be {"shm": NAME, "offset": N, "size": N}.')
    name, offset, size = loc.get("shm"), loc.get("offset", 0), loc.get("size")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _bad(
            f"Shared-memory name {name!r} is not one of ours (le-c<pid>-<32 hex> / le-s<pid>-<32 hex>)."
        )
    for label, value in (("offset", offset), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _bad(f"Shared-memory {label} must be a non-negative integer, got {value!r}.")
    if offset % ALIGN:
        raise _bad(f"Shared-memory offset {offset} is not a multiple of {ALIGN} (SPEC.md 8.2).")
    return name, offset, size


def _open_checked(name: str, offset: int, size: int, writable: bool) -> tuple[int, int]:
    """Open /dev/shm/NAME (no symlinks) and check, on that very descriptor, that it is a regular file of our
    uid with no group/other bits and that [offset, offset + size) lies inside it. Returns (fd, file size)."""
    # O_NONBLOCK: a FIFO planted under one of our names must not block us until its writer appears; the
    # fstat below then refuses it (it is not a regular file). It changes nothing for a regular file.
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(SHM_DIR / name, flags)
    except FileNotFoundError:
        raise _bad(
            f"Shared-memory segment {name} does not exist (its writer closed or died); send the job again.",
            shm=name,
        ) from None
    except OSError as exc:
        raise _bad(f"Cannot open shared-memory segment {name}: {exc.strerror}.", shm=name) from None
    try:
        st = os.fstat(fd)  # of the descriptor we map: no race between the check and the use
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise _bad(
                f"Shared-memory segment {name} is not private to this user (owner uid {st.st_uid}, mode "
                f"{stat.S_IMODE(st.st_mode):04o}); refusing it. Segments must be mode 0600 and ours.",
                shm=name,
            )
        if offset + size > st.st_size:
            raise _bad(
                f"Shared-memory buffer {offset}+{size} reaches past the end of segment {name} "
                f"({st.st_size} bytes).",
                shm=name,
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _map(fd: int, offset: int, size: int, writable: bool) -> tuple[mmap.mmap, int]:
    """Map only the pages of [offset, offset + size); returns the mapping and offset's place in it."""
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    return mmap.mmap(fd, offset + size - start, flags=flags, prot=prot, offset=start), offset - start


def _checked_location(loc: Any, prefix: str) -> tuple[str, int, int]:
    if not available():
        raise _bad("This side cannot use shared memory; send the buffer inline as a frame.")
    name, offset, size = parse_location(loc)
    if not name.startswith(prefix):
        raise _bad(f"Shared-memory segment {name} has the wrong direction (expected a {prefix}* name).")
    return name, offset, size


def open_readonly(loc: Any, prefix: str, expected: int) -> memoryview:
    """Map ``loc`` read-only after checking it is a regular file of ours, mode 0600, big enough, and that
    ``size`` is exactly ``expected`` (stride x height). Every failure is BAD_BUFFER saying what to do.
    The view's ``obj`` is the mapping (weak-referenceable: a pool learns when the reader let go)."""
    name, offset, size = _checked_location(loc, prefix)
    if size != expected:
        raise _bad(f"Shared-memory size {size} does not match the descriptor (stride x height = {expected}).")
    fd, _ = _open_checked(name, offset, size, writable=False)
    try:
        if size == 0:
            return memoryview(b"")
        mm, at = _map(fd, offset, size, writable=False)
    finally:
        os.close(fd)
    return memoryview(mm)[at : at + size]


def write_into(loc: Any, prefix: str, parts: list[tuple[int, Any]]) -> None:
    """Write ``parts`` ((offset within loc, bytes)...) into a segment another process offered for them,
    after the same checks as ``open_readonly``; BAD_BUFFER when they do not fit."""
    name, offset, size = _checked_location(loc, prefix)
    need = max((off + memoryview(data).nbytes for off, data in parts), default=0)
    if need > size:
        raise _bad(f"The result needs {need} bytes; the offered segment {name} has {size}.", shm=name)
    fd, _ = _open_checked(name, offset, size, writable=True)
    try:
        mm, at = _map(fd, offset, need, writable=True)
    finally:
        os.close(fd)
    try:
        for off, data in parts:
            view = memoryview(data).cast("B")
            mm[at + off : at + off + view.nbytes] = view
    finally:
        mm.close()


@dataclass
class _Slot:
    seg: Segment
    job: str | None = None  # the job using it (input or result), None when idle
    reader: weakref.ref | None = None  # the read-only mapping a result was handed out in
    used: float = field(default_factory=time.monotonic)

    def idle(self) -> bool:
        return self.job is None and (self.reader is None or self.reader() is None)


class Pool:
    """A client's segments, reused from job to job. Fresh tmpfs pages cost ~2.5 us per 4 KiB page to
    allocate and zero (~40 ms for a 64 MiB layer, both at creation and again when freed); writing into pages a
    segment already has costs ~8 ms. A segment is reused only when its job has finished (result or error
    received) and no result view read from it is still alive. At most ``max_segments``; all unlinked by
    ``close``."""

    def __init__(self, max_segments: int = 4, keep_idle_s: float = 60.0):
        self.max_segments = max_segments
        self.keep_idle_s = keep_idle_s  # idle segments older than this are unlinked by ``trim``
        self.slots: list[_Slot] = []
        atexit.register(_close_pool, weakref.ref(self))  # an exiting host (GIMP plug-in) leaves nothing

    def take(self, size: int, job: str) -> Segment | None:
        """An idle segment of at least ``size`` bytes (a new one if needed), now owned by ``job``; None
        when every slot is busy (the caller sends inline)."""
        fits = [s for s in self.slots if s.idle() and s.seg.size >= size]
        if fits:
            slot = min(fits, key=lambda s: s.seg.size)
        else:
            idle = [s for s in self.slots if s.idle()]
            if len(self.slots) >= self.max_segments:
                if not idle:
                    return None
                self._drop(max(idle, key=lambda s: s.seg.size))
            slot = _Slot(Segment.create(aligned(size), CLIENT_PREFIX))
            self.slots.append(slot)
        slot.job, slot.reader, slot.used = job, None, time.monotonic()
        return slot.seg

    def trim(self) -> None:
        """Unlink segments idle for ``keep_idle_s``: a host that stopped editing gives the memory back."""
        now = time.monotonic()
        for slot in [s for s in self.slots if s.idle() and now - s.used > self.keep_idle_s]:
            self._drop(slot)

    def finished(self, job: str) -> None:
        for slot in self.slots:
            if slot.job == job:
                slot.job, slot.used = None, time.monotonic()

    def handed_out(self, name: str, view: memoryview) -> None:
        """A result view read from our segment ``name``: the segment stays busy while the view lives."""
        for slot in self.slots:
            if slot.seg.name == name:
                slot.reader = weakref.ref(view.obj)

    def owns(self, name: str) -> bool:
        return any(slot.seg.name == name for slot in self.slots)

    def _drop(self, slot: _Slot) -> None:
        self.slots.remove(slot)
        slot.seg.unlink()

    def close(self) -> None:
        """Unlink every segment (mappings a reader still holds stay valid)."""
        for slot in list(self.slots):
            self._drop(slot)


def _close_pool(ref: weakref.ref) -> None:
    pool = ref()
    if pool is not None:
        pool.close()


def sweep(max_age_s: float = SWEEP_MIN_AGE_S) -> list[str]:
    """Unlink our-uid segments whose writer process is gone (a killed client's pool, a crashed backend's
    results and probe). Returns the names removed."""
    if not available():
        return []
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(SHM_DIR))
    except OSError:
        return []
    for entry in entries:
        m = NAME_RE.match(entry.name)
        if not m:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if st.st_uid != os.getuid() or now - st.st_mtime < max_age_s or _pid_alive(int(m.group(2))):
            continue
        _unlink(entry.name)
        removed.append(entry.name)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    # a zombie (killed, not yet reaped) counts as gone: its memory can never be read again
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


def leftovers(pids: set[int] | None = None) -> list[str]:
    """Names of this user's protocol segments now in /dev/shm, optionally only those written by ``pids``
    (tests and diagnostics: other programs of the same user may be using the protocol too)."""
    if not available():
        return []
    out = []
    for e in os.scandir(SHM_DIR):
        m = NAME_RE.match(e.name)
        if m and (pids is None or int(m.group(2)) in pids):
            try:
                if e.stat(follow_symlinks=False).st_uid == os.getuid():
                    out.append(e.name)
            except FileNotFoundError:
                continue
    return sorted(out)

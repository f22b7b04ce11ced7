"""Keep glibc's malloc from handing torch's big activation buffers back to the kernel after every use.

A diffusion step on a CPU allocates and frees the same large activation tensors hundreds of times. With glibc's
default, dynamic thresholds, buffers above the mmap threshold are mmap'd and munmap'd each time and the heap top is
trimmed whenever it shrinks, so every step re-faults its working set: measured on SD-1.5-shaped random weights at
128 px (1 thread, docs/benchmarks/imagic.md) ~460 k page faults and ~0.9 s of system time per UNet step, 4.3 s
instead of 1.5 s. Pinning the mmap and trim thresholds high removes the faults (0 per step).

``configure()`` sets them with ``mallopt`` at process start (the same fields ``GLIBC_TUNABLES=glibc.malloc.*``
would set before exec), from ``python -m backend`` so both the server and the CLI get it. Freed memory then stays
in the process for reuse, like torch's CUDA caching allocator; the trim threshold still returns a free heap top
larger than it. ``LAYEREDIT_MALLOC=off`` keeps glibc's defaults; a ``GLIBC_TUNABLES`` that already sets malloc
fields is respected as it is. Not glibc (musl, macOS, Windows): nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

MMAP_THRESHOLD = 1 << 30  # buffers below 1 GiB come from the heap and are reused, not re-mapped
TRIM_THRESHOLD = 1 << 30  # a free heap top above 1 GiB still goes back to the system
ARENA_MAX = 1  # jobs run on worker threads: a thread arena's 64 MiB heaps would mmap bigger buffers anyway

log = logging.getLogger("layeredit.malloc")
status: dict = {"malloc": "not configured"}  # what configure() did last (the server logs it)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
            return None  # musl has no gnu_get_libc_version and ignores these fields
        return libc
    except OSError:
        return None


def configure(environ: os._Environ | dict | None = None) -> dict:
    """Pin malloc's thresholds for this process; returns what was done (logged by the server)."""
    status.clear()
    status.update(_configure(os.environ if environ is None else environ))
    return dict(status)


def _configure(env) -> dict:
    if env.get("LAYEREDIT_MALLOC", "").strip().lower() in ("off", "0", "no", "default"):
        return {"malloc": "glibc defaults (LAYEREDIT_MALLOC=off)"}
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return {"malloc": f"GLIBC_TUNABLES={env['GLIBC_TUNABLES']}"}
    libc = _libc()
    if libc is None:
        return {"malloc": "not glibc: unchanged"}
    done = {
        "mmap_threshold": bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)),
        "trim_threshold": bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)),
        "arena_max": bool(libc.mallopt(M_ARENA_MAX, ARENA_MAX)),
    }
    return {
        "malloc": "pinned" if all(done.values()) else f"partly pinned {done}",
        "mmap_threshold": MMAP_THRESHOLD,
        "trim_threshold": TRIM_THRESHOLD,
        "arena_max": ARENA_MAX,
    }


def release_free_memory() -> bool:
    """Give the heap's free pages back to the system (``malloc_trim(0)``), after a job freed a lot at once (a full
    fine-tune's gradients and Adam moments: ~10 GB on SD-1.5). The pinned thresholds keep freed memory for reuse,
    which is what the sampling steps want, not what 10 GB of optimizer state should do. False when not glibc."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


def prefault(nbytes: int) -> bool:
    """Fault ``nbytes`` of heap in now and leave them free: with the pinned thresholds they stay in the process,
    and the first big job reuses them instead of faulting its buffers in one page at a time. Measured on
    bench/erase_fill.py (a 600 px object in a 4096x4096 layer, the loaded 2-core VM): the first erase after load
    grew the heap by ~375 MiB in ~60k page faults, ~0.5 s of system time the later erases do not pay. Only when
    ``configure()`` pinned the thresholds (otherwise the free heap top would just be trimmed); False if not done.
    The memory is held from load instead of from the first big job; ``release_free_memory`` returns it."""
    libc = _libc()
    if libc is None or status.get("malloc") != "pinned" or nbytes <= 0:
        return False
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    block = libc.malloc(nbytes)
    if not block:
        return False
    ctypes.memset(block, 0, nbytes)
    libc.free(block)
    return True

"""Hand the resident pages of an idle model part back to the system, when they are clean pages of its file.

diffusers and transformers map safetensors files (private, copy-on-write mappings): a loaded fp32 model's weights
are the file's pages, resident once touched and counted in the process's RSS until the process unmaps them. A
part that is idle for a long phase (Imagic's text encoder once the prompts are encoded, the VAE encoder once the
image is, the VAE decoder while tuning) can give them back with ``madvise(MADV_DONTNEED)``: the mapping stays,
the pages stay in the OS page cache (clean file pages, shared with any other reader of the file), and the next
use faults them back in from there with the same bytes. Nothing is copied or reloaded, and no value can change,
as long as nothing writes the part while it is released (callers must not: today only the UNet is ever written).
This lowers RSS; the pages stay in the page cache and in a memory cgroup's charge, reclaimable as they were.

Only pages that are present in this process AND are file pages are released (``/proc/self/pagemap``): a page the
process has written (a copy-on-write copy: an in-place edit of a mapped weight) or anonymous memory (weights
converted at load time, e.g. fp16 files loaded as fp32 on a CPU, or tensors built in memory) is never touched,
since dropping it would lose data. Without a readable pagemap (not Linux, or restricted) nothing is released.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import mmap
import sys
from collections.abc import Iterable
from dataclasses import dataclass

MADV_DONTNEED = 4
_PRESENT = 1 << 63
_FILE_PAGE = 1 << 61  # "page is a file-page or shared-anon" (Documentation/admin-guide/mm/pagemap.rst)
_PAGE = mmap.PAGESIZE


@dataclass
class Released:
    """What ``release_file_pages`` did: bytes of clean file pages handed back, bytes of present pages kept
    (anonymous or written: not releasable), and why nothing could be done when that is the case."""

    released: int = 0
    kept: int = 0
    why: str = ""

    def __iadd__(self, other: Released) -> Released:
        self.released += other.released
        self.kept += other.kept
        self.why = self.why or other.why
        return self


def storage_ranges(modules: Iterable) -> list[tuple[int, int]]:
    """Sorted, merged [start, end) byte ranges of the CPU storages behind the modules' parameters and buffers."""
    spans = []
    seen: set[int] = set()
    for module in modules:
        if module is None:
            continue
        for t in [*module.parameters(), *module.buffers()]:
            if t.device.type != "cpu":
                continue
            storage = t.untyped_storage()
            start, size = storage.data_ptr(), storage.nbytes()
            if size and start not in seen:
                seen.add(start)
                spans.append((start, start + size))
    spans.sort()
    merged: list[list[int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _file_mappings() -> list[tuple[int, int]]:
    """[start, end) of this process's file-backed mappings (a pathname that is a file, not [heap] etc.)."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) < 6 or not parts[5].startswith("/"):
                continue
            a, b = (int(x, 16) for x in parts[0].split("-"))
            out.append((a, b))
    out.sort()
    return out


def _page_runs(pagemap, first: int, count: int) -> tuple[list[tuple[int, int]], int]:
    """Runs (first page, pages) of present file pages among ``count`` pages from page ``first``, plus the count of
    present pages that are not file pages (kept)."""
    import numpy as np

    pagemap.seek(first * 8)
    entries = np.frombuffer(pagemap.read(count * 8), dtype="<u8")
    present = (entries & np.uint64(_PRESENT)) != 0
    filepage = (entries & np.uint64(_FILE_PAGE)) != 0
    clean = present & filepage
    kept = int(np.count_nonzero(present & ~filepage))
    edges = np.flatnonzero(np.diff(np.concatenate(([0], clean.view(np.int8), [0]))))
    runs = [(first + int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    return runs, kept


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc


def release_file_pages(*modules) -> Released:
    """Release the present, clean file-backed pages under the modules' CPU weights (see the module docstring).

    Safe to call on any module: anonymous or written pages are kept, GPU tensors are skipped, and on a system
    without ``/proc/self/pagemap`` it does nothing and says why. The modules keep working: a later forward pass
    faults the pages back in from the page cache (or the file, if the system dropped them meanwhile)."""
    done = Released()
    libc = _libc()
    if libc is None:
        done.why = "not Linux"
        return done
    ranges = storage_ranges(modules)
    if not ranges:
        done.why = "no CPU weights"
        return done
    try:
        maps = _file_mappings()
        pagemap = open("/proc/self/pagemap", "rb", buffering=0)  # noqa: SIM115 (closed below)
    except OSError as exc:
        done.why = f"pagemap unreadable ({exc.strerror})"
        return done
    starts = [a for a, _ in maps]
    with pagemap:
        for lo, hi in ranges:
            # the file mappings overlapping [lo, hi): weights outside any of them are anonymous memory
            i = max(bisect.bisect_right(starts, lo) - 1, 0)
            while i < len(maps) and maps[i][0] < hi:
                a, b = max(lo, maps[i][0]), min(hi, maps[i][1])
                i += 1
                if a >= b:
                    continue
                first, last = a // _PAGE, (b + _PAGE - 1) // _PAGE
                runs, kept = _page_runs(pagemap, first, last - first)
                done.kept += kept * _PAGE
                for page, n in runs:
                    if libc.madvise(page * _PAGE, n * _PAGE, MADV_DONTNEED) == 0:
                        done.released += n * _PAGE
    if not done.released and not done.why:
        done.why = "no clean file pages resident (weights in anonymous memory, or already released)"
    return done


def resident_bytes(*modules) -> tuple[int, int]:
    """(bytes of present file pages, bytes of present anonymous pages) under the modules' CPU weights: what
    ``release_file_pages`` would release and keep. (0, 0) where pagemap cannot be read."""
    try:
        pagemap = open("/proc/self/pagemap", "rb", buffering=0)  # noqa: SIM115 (closed below)
    except OSError:
        return 0, 0
    clean = anon = 0
    with pagemap:
        for lo, hi in storage_ranges(modules):
            first, last = lo // _PAGE, (hi + _PAGE - 1) // _PAGE
            runs, kept = _page_runs(pagemap, first, last - first)
            clean += sum(n for _, n in runs) * _PAGE
            anon += kept * _PAGE
    return clean, anon


__all__ = ["Released", "release_file_pages", "resident_bytes", "storage_ranges"]

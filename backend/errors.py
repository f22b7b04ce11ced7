"""Errors every layer of the backend raises: a leaf module, so models, pipelines and ops can all import it
without importing each other (``backend/ops/base.py`` re-exports both for the ops). It also holds the one
out-of-memory mapping (``out_of_memory_guard``): every op, the model loader and the job runner use it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from protocol.errors import ErrorCode, ProtocolError


class OpError(ProtocolError):
    """A user-facing failure with a stable code (missing model, empty selection...): the host shows its message."""


class JobCancelled(Exception):
    """Raised inside an op by ``JobContext.check_cancelled`` once a cancel arrived."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for every way running out of memory surfaces: Python's MemoryError, torch's OutOfMemoryError (CUDA,
    MPS), and the RuntimeErrors of backends that only say "out of memory" in their message. torch is looked up,
    never imported: if it is not loaded, none of its errors can be in flight (and this module stays a leaf)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return not isinstance(exc, ProtocolError) and "out of memory" in str(exc).lower()


def out_of_memory_error(exc: BaseException, advice: str, **details: str) -> OpError:
    """OUT_OF_MEMORY with ``advice`` (what to lower or close) and the first line of what the library said."""
    said = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return OpError(ErrorCode.OUT_OF_MEMORY, f"{advice} ({said})", details or None)


@contextmanager
def out_of_memory_guard(advice: str) -> Iterator[None]:
    """Turn running out of memory inside the block into OUT_OF_MEMORY with ``advice``; every other error (an
    OpError with its own code included) passes through unchanged. The one OOM mapping of the ops."""
    try:
        yield
    except ProtocolError:
        raise
    except Exception as exc:  # MemoryError is an Exception too
        if is_out_of_memory(exc):
            raise out_of_memory_error(exc, advice) from exc
        raise

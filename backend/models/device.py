"""Device, dtype and memory-budget choice.

One place decides where models run so every op agrees: CUDA (fp16, or bf16 on request), Apple MPS (fp16),
else CPU (fp32, because fp16 matmuls on CPU are slow and some ops lack kernels). Users override with
arguments or ``LAYEREDIT_DEVICE`` / ``LAYEREDIT_DTYPE`` / ``LAYEREDIT_MEMORY_GB``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from protocol.errors import ErrorCode, ProtocolError

if TYPE_CHECKING:  # pragma: no cover
    import torch

_DTYPE_NAMES = {
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
}


def _config_error(message: str) -> ProtocolError:
    # Imported lazily elsewhere; OpError subclasses ProtocolError, so callers catching OpError see this too.
    from backend.errors import OpError

    return OpError(ErrorCode.BAD_PARAM, message)


def pick_device(requested: str | None = None) -> str:
    """Return a torch device string: the request (arg, then LAYEREDIT_DEVICE) or the best available."""
    import torch

    want = (requested or os.environ.get("LAYEREDIT_DEVICE") or "auto").strip().lower()
    if want == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    base = want.split(":")[0]
    if base == "cuda" and not torch.cuda.is_available():
        raise _config_error(f"Device {want!r} was requested but CUDA is not available; use 'cpu' or 'auto'.")
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise _config_error(
            f"Device {want!r} was requested but Apple MPS is not available; use 'cpu' or 'auto'."
        )
    if base not in ("cuda", "mps", "cpu"):
        raise _config_error(f"Unknown device {want!r}; use auto, cpu, cuda, cuda:N or mps.")
    return want


def pick_dtype(device: str, requested: str | torch.dtype | None = None) -> torch.dtype:
    """fp16 on CUDA/MPS, fp32 on CPU, unless the arg or LAYEREDIT_DTYPE says otherwise."""
    import torch

    if isinstance(requested, torch.dtype):
        return requested
    want = (requested or os.environ.get("LAYEREDIT_DTYPE") or "auto").strip().lower()
    if want == "auto":
        return torch.float32 if device.startswith("cpu") else torch.float16
    name = _DTYPE_NAMES.get(want)
    if name is None:
        raise _config_error(f"Unknown dtype {want!r}; use auto, fp16, bf16 or fp32.")
    return getattr(torch, name)


def default_budget_bytes(device: str, requested_gb: float | None = None) -> int:
    """How many bytes of weights may stay loaded: the request, LAYEREDIT_MEMORY_GB, or a share of the device.

    The share leaves room for activations (a 512x512 SD step needs ~1-2 GB beyond the weights)."""
    if requested_gb is None and os.environ.get("LAYEREDIT_MEMORY_GB"):
        try:
            requested_gb = float(os.environ["LAYEREDIT_MEMORY_GB"])
        except ValueError:
            raise _config_error("LAYEREDIT_MEMORY_GB must be a number of gigabytes, e.g. 8.") from None
    if requested_gb is not None:
        if requested_gb <= 0:
            raise _config_error("The memory budget must be a positive number of gigabytes.")
        return int(requested_gb * 1024**3)
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        return int(torch.cuda.get_device_properties(index).total_memory * 0.7)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        ram = 16 * 1024**3
    return int(ram * 0.5)


def torch_threads() -> int:
    """The intra-op thread count of this process's torch: the one a new thread starts with (OMP_NUM_THREADS,
    else torch's default, or what ``torch.set_num_threads`` chose), asked on a new thread because the calling
    thread's own count may have been changed under it (``pin_torch_threads``)."""
    import threading

    import torch

    found: list[int] = []
    probe = threading.Thread(target=lambda: found.append(torch.get_num_threads()), name="layeredit-threads")
    probe.start()
    probe.join()
    return found[0]


def pin_torch_threads() -> int:
    """Run this thread's torch arithmetic on the process's intra-op thread count (``torch_threads``) whatever
    ran on the thread before; returns the count.

    A CPU convolution sums in an order that depends on how many threads split it, so a seeded Replace came out
    different on a thread whose count had changed: OpenMP keeps the count per thread, torch reads it once per
    thread, and numba's OpenMP pool sets it on the thread that starts the pool (the first PatchMatch fill: the
    server's warm-up, or the worker of the first erase when that came first or the warm-up is off) to numba's
    own count (every CPU, not OMP_NUM_THREADS; torch's default is the physical cores). That worker's Replaces
    then gave a Krita user other pixels than the CLI's (tests/test_torch_threads.py)."""
    import torch

    want = torch_threads()
    if torch.get_num_threads() != want:
        torch.set_num_threads(want)
    return want

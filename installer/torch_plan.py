"""The torch choice: platform facts in, pip arguments out (pure, tested without touching the machine)."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from .errors import InstallError

MIN_PYTHON = (3, 11)


TORCH_VERSION = "2.13.0"


TORCH_CHOICES = ("auto", "cpu", "cuda", "mps")


PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


# PyPI's Windows torch wheels are CPU-only, so CUDA on Windows needs PyTorch's own index.
PYTORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"


PROBE_TIMEOUT_S = 3.0


def check_python(version_info: tuple) -> None:
    """Refuse old Pythons up front: the venv inherits this interpreter, and the backend needs 3.11+."""
    if tuple(version_info[:2]) < MIN_PYTHON:
        found = ".".join(str(part) for part in version_info[:3])
        raise InstallError(
            f"layer-edit needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer, but install.py runs on Python "
            f"{found} ({sys.executable}). The virtual environment is made with the Python that runs this script: "
            "run it with a newer one, e.g. `python3.11 install.py` (install it from python.org or your package "
            "manager first)."
        )


@dataclass(frozen=True)
class PlatformFacts:
    """What the torch choice depends on; detected once, injected in tests."""

    system: str  # platform.system(): "Linux", "Darwin", "Windows"
    machine: str  # platform.machine(), lower case: "x86_64", "arm64", "aarch64", "amd64"
    has_nvidia: bool  # nvidia-smi found and lists a GPU


@dataclass(frozen=True)
class TorchPlan:
    """How torch gets installed: the build, the arguments after `pip install`, and why (printed)."""

    build: str  # "cpu" | "cuda" | "mps"
    pip_args: tuple
    source: str


def resolve_torch_build(choice: str, facts: PlatformFacts) -> str:
    """Turn --torch (auto|cpu|cuda|mps) into a concrete build, refusing builds that do not exist for this OS."""
    if choice not in TORCH_CHOICES:
        raise InstallError("--torch must be one of {}, not {!r}.".format("|".join(TORCH_CHOICES), choice))
    if choice == "auto":
        if facts.system == "Darwin" and facts.machine in ("arm64", "aarch64"):
            return "mps"
        if facts.has_nvidia and facts.system in ("Linux", "Windows"):
            return "cuda"
        return "cpu"
    if choice == "mps" and facts.system != "Darwin":
        raise InstallError(
            f"--torch mps is for Apple-silicon Macs; on {facts.system} use --torch cpu or cuda."
        )
    if choice == "cuda" and facts.system == "Darwin":
        raise InstallError(
            "PyTorch has no CUDA build for macOS; use --torch mps (Apple silicon) or --torch cpu."
        )
    return choice


def torch_key(build: str, index_url: str | None) -> str:
    """What identifies an installed torch in the state file: version, build and explicit index (not the probe)."""
    return "torch=={} build={} index={}".format(TORCH_VERSION, build, index_url or "")


def plan_torch(
    choice: str,
    facts: PlatformFacts,
    index_url: str | None = None,
    cpu_index_reachable: Callable = lambda: False,
) -> TorchPlan:
    """Pick where torch==TORCH_VERSION comes from. `cpu_index_reachable` is only called for a CPU build on Linux.

    On Linux, PyPI's torch is the multi-GB CUDA build, so a CPU install prefers PyTorch's CPU index; when that
    index cannot be reached (offline mirrors, firewalls) plain pip is used, which takes whatever the configured
    indexes hold (a local CPU wheel on some machines, the CUDA build on PyPI proper) and says so.
    """
    build = resolve_torch_build(choice, facts)
    spec = f"torch=={TORCH_VERSION}"
    if index_url:
        return TorchPlan(build, ("--index-url", index_url, spec), f"{index_url} (from --torch-index)")
    if facts.system == "Darwin" and facts.machine not in ("arm64", "aarch64"):
        raise InstallError(
            f"PyTorch publishes no torch {TORCH_VERSION} wheels for Intel Macs. Use an Apple-silicon Mac, or pass --torch-index "
            "with an index that has a build for this machine."
        )
    if build == "mps":
        return TorchPlan(build, (spec,), "your pip indexes (PyPI's macOS wheels include MPS)")
    if build == "cuda":
        if facts.system == "Windows":
            return TorchPlan(
                build,
                ("--index-url", PYTORCH_CUDA_INDEX, spec),
                f"{PYTORCH_CUDA_INDEX} (PyPI's Windows wheels are CPU-only)",
            )
        return TorchPlan(build, (spec,), "your pip indexes (PyPI's Linux wheels are the CUDA build)")
    if facts.system == "Linux":
        if cpu_index_reachable():
            return TorchPlan(
                build,
                ("--index-url", PYTORCH_CPU_INDEX, spec),
                f"{PYTORCH_CPU_INDEX} (PyTorch's CPU-only index)",
            )
        return TorchPlan(
            build,
            (spec,),
            f"your pip indexes: {PYTORCH_CPU_INDEX} did not answer (timeout {PROBE_TIMEOUT_S:.0f} s). On PyPI proper that is the large CUDA build; "
            "pass --torch-index URL to choose another source",
        )
    return TorchPlan(build, (spec,), f"your pip indexes (PyPI's {facts.system} wheels are the CPU build)")


def probe_url(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when the URL answers at all within the timeout (used to decide whether an index is usable)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except Exception:  # any failure (DNS, TLS, proxy, HTTP error) means: do not use it
        return False


def detect_platform() -> PlatformFacts:
    return PlatformFacts(platform.system(), platform.machine().lower(), has_nvidia_gpu())


def has_nvidia_gpu() -> bool:
    """An NVIDIA GPU with a working driver: nvidia-smi exists and lists at least one GPU."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        done = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and "GPU" in done.stdout

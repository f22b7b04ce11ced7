"""Everything the installer does to the machine, collected in Tools so tests can swap it (fake pip, fake hosts)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InstallError
from .hosts import find_host, load_installer
from .selfcheck import run_self_check
from .torch_plan import PYTORCH_CPU_INDEX, PlatformFacts, detect_platform, probe_url


def run_command(
    cmd: list, what: str, capture: bool = False, cwd: Path | None = None, env: dict | None = None
) -> str:
    """Run one step; a failure becomes an InstallError naming the step, the command and what to try."""
    shown = " ".join(str(part) for part in cmd)
    print(f"    $ {shown}", flush=True)
    try:
        done = subprocess.run(
            [str(part) for part in cmd],
            cwd=str(cwd) if cwd else None,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            text=True,
        )
    except OSError as exc:
        raise InstallError(f"{what} failed: cannot run {cmd[0]} ({exc}).") from exc
    if done.returncode != 0:
        raise InstallError(
            f"{what} failed (exit status {done.returncode}) running:\n    {shown}\nRead the output above for the "
            "cause. Network or index trouble: check `pip config list` and your proxy settings; a broken venv: "
            "re-run with --recreate."
        )
    return done.stdout or ""


def dry_run_command(
    cmd: list, what: str, capture: bool = False, cwd: Path | None = None, env: dict | None = None
) -> str:
    print("    would run: {}".format(" ".join(str(part) for part in cmd)), flush=True)
    return ""


@dataclass
class Tools:
    """Everything install.py does to the machine, swappable in tests (fake pip, fake hosts)."""

    project_root: Path
    run: Callable = run_command
    facts: Callable = detect_platform
    probe: Callable = lambda: probe_url(PYTORCH_CPU_INDEX + "/torch/")
    find_host: Callable = find_host
    load_installer: Callable = load_installer
    self_check: Callable = lambda root, python: run_self_check(root, python)
    python_version: tuple = field(default_factory=lambda: tuple(sys.version_info[:3]))
    python_executable: str = sys.executable
    _facts: PlatformFacts | None = field(default=None, repr=False)

    def platform(self) -> PlatformFacts:
        """Detect once per run (nvidia-smi is not free)."""
        if self._facts is None:
            self._facts = self.facts()
        return self._facts


def phase(title: str) -> float:
    print(f"==> {title}", flush=True)
    return time.monotonic()


def phase_done(title: str, started: float) -> None:
    print(f"    {title}: {time.monotonic() - started:.1f} s", flush=True)

"""Drive a real GIMP 3 (inside the Debian 13 chroot from setup.sh) with the INSTALLED plug-in.

The backend, when a test wants one, runs OUTSIDE the chroot from the project's venv: a chroot shares the
network and PID namespaces, so the plug-in reaches tcp://127.0.0.1 and checks the backend's pid as usual. The
runtime dir (connection file) is a folder inside the chroot, given to both sides: on the host as its real
path, in GIMP as LAYEREDIT_RUNTIME_DIR=/<work>/run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[3]
DEFAULT_ROOT = Path("/var/cache/layeredit/trixie-root")
DRIVER = Path(__file__).with_name("driver.py")
GIMP = "/usr/bin/gimp-console-3.0"
GIMP_GUI = "/usr/bin/gimp-3.0"


def chroot_root() -> Path:
    return Path(os.environ.get("LAYEREDIT_TRIXIE_ROOT", DEFAULT_ROOT))


def chroot_ready(root: Path | None = None) -> bool:
    root = root or chroot_root()
    return (
        (root / GIMP.lstrip("/")).exists() and (root / ".layeredit-gimp-ready").exists() and os.geteuid() == 0
    )


@dataclass
class GimpSandbox:
    """One fresh HOME + runtime dir inside the chroot, with the plug-in installed by the real installer."""

    root: Path
    name: str

    @classmethod
    def create(cls, root: Path | None = None) -> GimpSandbox:
        box = cls(root or chroot_root(), f"layeredit-test-{uuid.uuid4().hex[:8]}")
        for sub in ("home/.config", "run", "out"):
            (box.host_path / sub).mkdir(parents=True, exist_ok=True)
        (box.host_path / "run").chmod(0o700)
        sys.path.insert(0, str(PROJECT))
        from gimp_plugin.installer import install

        box.installed = install(PROJECT, PROJECT / ".venv" / "bin" / "python", box.plugins_dir)
        return box

    @property
    def client_token(self) -> str:
        """The owner token the plug-in's backend client uses here (the backend shows a client only jobs of its
        own token): a test's ``Client(info, token=sandbox.client_token)`` sees the plug-in's jobs."""
        return self.name.replace("-", "")

    @property
    def inner(self) -> str:  # the sandbox as GIMP sees it
        return f"/tmp/{self.name}"

    @property
    def host_path(self) -> Path:
        return self.root / "tmp" / self.name

    @property
    def plugins_dir(self) -> Path:
        return self.host_path / "home" / ".config" / "GIMP" / "3.0" / "plug-ins"

    @property
    def runtime_dir(self) -> Path:
        return self.host_path / "run"

    @property
    def out_dir(self) -> Path:
        return self.host_path / "out"

    def run_driver(self, case: dict, timeout: float = 240, gui: bool = False, display: Any = None) -> dict:
        """Run driver.py in gimp-console's python-fu-eval with ``case`` (JSON); return its report.
        ``gui``: the full GIMP instead (for interactive runs: the plug-in's dialog) on ``display``, the tests'
        session Xvfb (tests/hosts/xvfb.py; reached from the chroot through its abstract socket), or one
        started just for this run when None."""
        if gui and display is None:
            from tests.hosts import xvfb

            own = xvfb.start()
            try:
                return self.run_driver(case, timeout, gui, own)
            finally:
                own.stop()
        (self.out_dir / "case.json").write_text(json.dumps(case))
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": f"{self.inner}/home",
            "XDG_CONFIG_HOME": f"{self.inner}/home/.config",
            "LAYEREDIT_RUNTIME_DIR": f"{self.inner}/run",
            "LE_OUT": f"{self.inner}/out",
            "LANG": "C.UTF-8",
            "LAYEREDIT_CLIENT_TOKEN": self.client_token,
            "LAYEREDIT_RESULT_DUMP": f"{self.inner}/out/result",  # the masks the plug-in got (plugin.py)
        }
        if gui:
            if not display.alive():
                raise RuntimeError(f"the Xvfb server {display.display} died (log: {display.log})")
            env["LAYEREDIT_DIALOG_REPORT"] = f"{self.inner}/out/dialog.json"
            env.update(display.env)
            gimp = [GIMP_GUI, "-n", "--no-splash"]
        else:
            gimp = [GIMP, "-i", "-n"]
        cmd = ["chroot", str(self.root), "env", "-i", *(f"{k}={v}" for k, v in env.items())]
        cmd += ["timeout", str(int(timeout)), *gimp, "--batch-interpreter=python-fu-eval", "-b", "-"]
        cmd += ["--quit"]
        started = time.monotonic()
        proc = subprocess.run(cmd, input=DRIVER.read_bytes(), capture_output=True, timeout=timeout + 30)
        log = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
        (self.out_dir / "gimp.log").write_text(log)
        report_path = self.out_dir / "report.json"
        if not report_path.exists():
            raise AssertionError(f"GIMP wrote no report (rc={proc.returncode}); log:\n{log[-4000:]}")
        report = json.loads(report_path.read_text())
        report["gimp_rc"] = proc.returncode
        report["wall_s"] = time.monotonic() - started
        report["log"] = log
        return report

    def read_out(self, name: str) -> bytes:
        return (self.out_dir / name).read_bytes()

    def cleanup(self) -> None:
        shutil.rmtree(self.host_path, ignore_errors=True)

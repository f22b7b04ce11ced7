"""Finding and starting the backend from inside Krita.

The installer writes ``config.json`` next to this package (project root + venv python). Starting the backend
spawns ``<venv python> -m backend serve`` detached from Krita (it outlives a Krita crash and serves GIMP too),
with its output in a log file the docker shows when starting fails. ``poll`` is called from a QTimer: nothing
here waits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from protocol import connection

PACKAGE_DIR = Path(__file__).resolve().parent
START_TIMEOUT_S = 120.0  # first start imports torch: slow on a cold disk


@dataclass
class Config:
    project_root: Path | None
    venv_python: Path | None

    @property
    def usable(self) -> bool:
        return bool(self.project_root and self.venv_python and self.venv_python.exists())


def load_config(path: Path | None = None) -> Config:
    """config.json written by the installer; LAYEREDIT_PROJECT / LAYEREDIT_PYTHON override it (tests, dev)."""
    data: dict = {}
    path = path or PACKAGE_DIR / "config.json"
    if path.exists():
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            data = {}
    root = os.environ.get("LAYEREDIT_PROJECT") or data.get("project_root")
    py = os.environ.get("LAYEREDIT_PYTHON") or data.get("venv_python")
    return Config(Path(root) if root else None, Path(py) if py else None)


def log_path() -> Path:
    return connection.runtime_dir() / "logs" / "backend-started-by-krita.log"


class Launcher:
    """Starts the backend once and tells, through ``poll``, when it is ready or why it failed."""

    def __init__(self, config: Config | None = None):
        self.config = config or load_config()
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.log = log_path()

    def start(self) -> None:
        if not self.config.usable:
            raise RuntimeError(
                "The plugin does not know where the backend is installed (config.json missing or its venv python "
                "is gone); run: python3 install.py --krita"
            )
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_file()
        kwargs: dict = {}
        if sys.platform.startswith("win"):
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS
        else:
            kwargs["start_new_session"] = True
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.config.venv_python), "-m", "backend", "serve"],
                cwd=str(self.config.project_root),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **kwargs,
            )
        self.started_at = time.monotonic()

    @staticmethod
    def _remove_stale_file() -> None:
        """A file left by a crashed backend would look like success; a live backend's file is left alone."""
        try:
            info = connection.read()
        except Exception:  # noqa: BLE001 - missing or unreadable: nothing to keep
            connection.remove()
            return
        if not connection.pid_alive(info.pid):
            connection.remove()

    def poll(self) -> str:
        """'ready' once the connection file names a live backend, 'failed' if it exited or timed out,
        else 'starting'."""
        if self.proc is None:
            return "failed"
        code = self.proc.poll()
        if code is not None:
            return "failed"
        if connection.default_path().exists():
            try:
                info = connection.read()
                if info.pid in (0, self.proc.pid) or connection.pid_alive(info.pid):
                    return "ready"
            except Exception:  # noqa: BLE001 - half-written file: try again next tick
                pass
        if time.monotonic() - self.started_at > START_TIMEOUT_S:
            return "failed"
        return "starting"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def failure_text(self) -> str:
        code = None if self.proc is None else self.proc.poll()
        head = (
            f"The backend exited with code {code}."
            if code is not None
            else "The backend did not start in time."
        )
        return f"{head} Its log ({self.log}):\n{self.log_tail()}"

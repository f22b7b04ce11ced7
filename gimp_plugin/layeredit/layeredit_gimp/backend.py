"""Finding the backend, and starting it from the installer's config when none runs.

The installer writes ``layeredit.json`` (project root + venv python) next to the plug-in; with it the plug-in
spawns ``<venv python> -m backend serve`` detached (it outlives the plug-in, so the next run is fast) and
waits for the connection file. Without it, or when starting fails, the error says what to run by hand.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from protocol import connection
from protocol.client import Client
from protocol.errors import ErrorCode, ProtocolError

CONFIG_NAME = "layeredit.json"
START_TIMEOUT_S = 120.0  # the first start imports torch: slow on a cold disk


def read_config(plugin_dir: Path) -> dict | None:
    try:
        config = json.loads((plugin_dir / CONFIG_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and config.get("venv_python") else None


def serve_command(config: dict) -> list[str]:
    return [str(config["venv_python"]), "-m", "backend", "serve"]


def connect_or_start(
    plugin_dir: Path,
    on_status: Callable[[str], None] = lambda _text: None,
    timeout: float = START_TIMEOUT_S,
) -> Client:
    """A connected client; starts the backend first when none answers and the config says how."""
    try:
        return Client.connect()
    except ProtocolError as exc:
        if exc.code != ErrorCode.NO_BACKEND:
            raise
        config = read_config(plugin_dir)
        if config is None:
            raise ProtocolError(
                ErrorCode.NO_BACKEND,
                f"{exc.message} (The plug-in has no {CONFIG_NAME}: run `python3 install.py --gimp` in the "
                "project folder to let it start the backend itself.)",
            ) from None
    on_status("Starting the backend…")
    return _start(config, timeout)


def _start(config: dict, timeout: float) -> Client:
    log_path = connection.runtime_dir() / "logs" / "backend-started-by-gimp.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cwd = config.get("project_root") or None
    connection.remove()  # nothing answered: a stale file from a crashed backend would look like success
    detach: dict = {"start_new_session": True}  # outlives the plug-in (and GIMP): the next run is fast
    if sys.platform.startswith("win"):
        detach = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS}
    with open(log_path, "ab") as log:
        try:
            process = subprocess.Popen(
                serve_command(config),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **detach,
            )
        except OSError as exc:
            raise ProtocolError(
                ErrorCode.NO_BACKEND,
                f"Could not start the backend ({exc}); check {CONFIG_NAME} or run: "
                f"{' '.join(serve_command(config))}",
            ) from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            return Client.connect()
        except ProtocolError:
            time.sleep(0.5)
    tail = _tail(log_path)
    raise ProtocolError(
        ErrorCode.NO_BACKEND,
        f"The backend did not start (see {log_path}). Run it by hand to see why: "
        f"cd {cwd} && {' '.join(serve_command(config))}" + (f"\nLast log lines:\n{tail}" if tail else ""),
    )


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text("utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""

"""Finding the backend, and starting it from the installer's config when none runs: the GIMP side of
``protocol.launcher``.

The installer writes ``layeredit.json`` (project root + venv python) next to the plug-in. The plug-in is its
own process, so it simply blocks (with a deadline) until the started backend answers; without a config, or
when starting fails, the error says what to run by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from protocol.client import Client
from protocol.errors import ErrorCode, ProtocolError
from protocol.launcher import START_TIMEOUT_S, LaunchConfig, Launcher, load_config

CONFIG_NAME = "layeredit.json"
INSTALL_HINT = "python3 install.py --gimp"


def read_config(plugin_dir: Path) -> LaunchConfig | None:
    """The installer's config, or None when there is none (or it names no venv python)."""
    config = load_config(plugin_dir / CONFIG_NAME)
    return config if config.venv_python is not None else None


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
                f"{exc.message} (The plug-in has no {CONFIG_NAME}: run `{INSTALL_HINT}` in the "
                "project folder to let it start the backend itself.)",
            ) from None
    on_status("Starting the backend…")
    launcher = Launcher(config, host="gimp", install_hint=INSTALL_HINT, timeout=timeout)
    launcher.start()
    return launcher.wait()

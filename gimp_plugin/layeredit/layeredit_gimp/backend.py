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
from protocol.hostkit import BackendChoice, choose_backend, load_choice, refused_message
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
    """A connected client through the saved backend choice; a local backend is started first when none
    answers and the config says how (a remote one never is: it is someone else's machine)."""
    choice = load_choice()
    if not choice.local:
        return connect_remote(choice)
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


def connect_remote(choice: BackendChoice) -> Client:
    """Connect and ping the chosen remote backend; silence means a wrong address or a key not yet allowed."""
    from protocol import connection

    try:
        return Client.connect(choice.connection_file)
    except ProtocolError as exc:
        if exc.code != ErrorCode.NO_BACKEND:
            raise
        info = connection.read(choice.connection_file)
        raise ProtocolError(ErrorCode.NO_BACKEND, refused_message(info)) from None


def choose(text: str) -> str:
    """Filters > AI Edit > Connect to backend…: save the choice (see ``hostkit.choose_backend``) and check that
    it answers. Returns what to tell the user; raises ProtocolError (the choice is saved all the same when it
    parsed, so allowing the key on the server is all that is left to do)."""
    choice = choose_backend(text)
    if choice.local:
        return "LayerEdit now uses the local backend (started on demand)."
    client = connect_remote(choice)
    try:
        hello = client.hello()
    finally:
        client.close()
    version = hello.get("backend_version") or "?"
    devices = ", ".join(hello.get("devices") or []) or "?"
    return f"LayerEdit now uses {choice.label}: backend {version} on {devices}."

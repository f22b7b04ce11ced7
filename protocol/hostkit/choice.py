"""Which backend this host uses: the local one (default) or an imported remote connection."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from protocol import connection
from protocol.errors import ErrorCode, ProtocolError

CHOICE_FILE = "backend-choice.json"  # in the config dir: the choice must survive a reboot, like the remotes
LOCAL_WORDS = ("", "local", "default")


@dataclass(frozen=True)
class BackendChoice:
    """``connection_file`` None means the local backend (``backend.json`` in the runtime dir, started on
    demand); otherwise the path of an imported remote connection file. Both plugins read the same file, so
    choosing in Krita also moves GIMP."""

    connection_file: str | None = None
    name: str = ""
    pending_key: str = ""  # a fresh key pair made from a pasted address: the admin still has to allow this

    @property
    def local(self) -> bool:
        return self.connection_file is None

    @property
    def label(self) -> str:
        if self.local:
            return "Local backend"
        return f"Remote: {self.name or Path(self.connection_file).stem}"


def _choice_path(config: Path | None, create: bool = True) -> Path:
    return (config or connection.config_dir(create=create)) / CHOICE_FILE


def load_choice(config: Path | None = None) -> BackendChoice:
    """The saved choice; a missing, damaged or dangling one (its connection file was deleted) means local."""
    try:
        data = json.loads(_choice_path(config, create=False).read_text("utf-8"))
        path = data.get("connection_file") if isinstance(data, dict) else None
    except (OSError, ValueError):
        return BackendChoice()
    if not isinstance(path, str) or not Path(path).is_file():
        return BackendChoice()
    return BackendChoice(path, str(data.get("name") or ""), str(data.get("pending_key") or ""))


def save_choice(choice: BackendChoice, config: Path | None = None) -> Path:
    path = _choice_path(config)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(choice), indent=2), "utf-8")
    os.replace(tmp, path)
    return path


def choose_backend(text: str, config: Path | None = None) -> BackendChoice:
    """Turn what the user typed or pasted into the saved choice: "local"; a connection string
    (``layeredit1:...``); the path of a connection file; or "ADDRESS SERVER_KEY SIGNING_KEY" (three words, or
    lines), which makes a fresh client key pair the admin must allow (``pending_key``). Raises
    ``bad_connection`` saying what to do; the previous choice then stays."""
    text = str(text).strip()
    if text.lower() in LOCAL_WORDS:
        choice = BackendChoice()
        save_choice(choice, config)
        return choice
    remotes = (config or connection.config_dir()) / "remotes"
    words = text.split()
    pending = ""
    if (
        not text.startswith(connection.STRING_PREFIX)
        and len(words) == 3
        and not Path(text).expanduser().exists()
    ):
        info = connection.from_address(*words)
        pending = info.curve_publickey or ""
        path = connection.import_connection(connection.to_string(info), directory=remotes)
    elif len(words) > 1 and not text.startswith(connection.STRING_PREFIX):
        raise ProtocolError(
            ErrorCode.BAD_CONNECTION,
            "Paste a connection string (layeredit1:...), a connection file's path, or three words: "
            "ADDRESS:PORT SERVER_KEY SIGNING_KEY (from: python -m backend keys show).",
        )
    else:
        path = connection.import_connection(text, directory=remotes)
    info = connection.read(path)
    choice = BackendChoice(str(path), info.name or info.endpoint, pending)
    save_choice(choice, config)
    return choice


def refused_message(info: connection.ConnectionInfo) -> str:
    """What to say when a remote backend does not answer: most often the server has not admitted this key."""
    who = info.name or "this-computer"
    return (
        f"The remote backend at {info.endpoint} does not answer. If the address is right, its admin must allow "
        f"this computer's key: python -m backend keys allow {info.curve_publickey} {_safe_word(who)}"
    )


def _safe_word(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text.strip())[:40] or "this-computer"

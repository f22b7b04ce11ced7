"""The connection file: where the backend listens and the per-install signing key.

It lives in a per-user runtime directory (mode 0700) as ``backend.json`` (mode 0600), so only the user who
started the backend can read the key and talk to it. Hosts find the backend through this file alone.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import ErrorCode, ProtocolError

FILE_NAME = "backend.json"


def runtime_dir(create: bool = True) -> Path:
    """$LAYEREDIT_RUNTIME_DIR, else $XDG_RUNTIME_DIR/layeredit, else ~/.cache/layeredit/run (mode 0700)."""
    if os.environ.get("LAYEREDIT_RUNTIME_DIR"):
        path = Path(os.environ["LAYEREDIT_RUNTIME_DIR"])
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "layeredit"
    else:
        path = Path.home() / ".cache" / "layeredit" / "run"
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.chmod(path, 0o700)
        except OSError:  # pragma: no cover - e.g. a directory owned by someone else
            pass
    return path


def default_path() -> Path:
    return runtime_dir(create=False) / FILE_NAME


def new_key() -> str:
    return secrets.token_hex(32)


@dataclass
class ConnectionInfo:
    endpoint: str  # e.g. "tcp://127.0.0.1:5555"
    key: str  # hex; HMAC-SHA256 signing key
    pid: int = 0  # the backend process, so a client can tell a stale file at once
    protocol: str = "1.0"
    backend_version: str = ""
    signature_scheme: str = "hmac-sha256-chunked"
    curve_serverkey: str | None = None  # Z85 public key when CurveZMQ is on (remote mode)
    extra: dict = field(default_factory=dict)

    @property
    def key_bytes(self) -> bytes:
        return self.key.encode("ascii")


def write(info: ConnectionInfo, path: Path | str | None = None) -> Path:
    """Write atomically with mode 0600 from the first byte on (never readable by others, even briefly)."""
    path = Path(path) if path else runtime_dir() / FILE_NAME
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps(asdict(info), indent=2).encode("utf-8"))
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def read(path: Path | str | None = None) -> ConnectionInfo:
    """Read the connection file; a missing or unreadable one is NO_BACKEND (start it: python -m backend serve)."""
    path = Path(path) if path else default_path()
    try:
        data = json.loads(path.read_text("utf-8"))
        known = set(ConnectionInfo.__dataclass_fields__)
        return ConnectionInfo(**{k: v for k, v in data.items() if k in known})
    except FileNotFoundError:
        raise ProtocolError(
            ErrorCode.NO_BACKEND,
            f"No backend is running (no connection file at {path}). Start it with: python -m backend serve",
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise ProtocolError(
            ErrorCode.NO_BACKEND,
            f"The connection file {path} is unreadable ({exc}); restart the backend: python -m backend serve",
        ) from None


def remove(path: Path | str | None = None, pid: int | None = None) -> None:
    """Delete the file if it is ours (same pid), so a newer backend's file is never removed by an old one."""
    path = Path(path) if path else default_path()
    try:
        if pid is not None and json.loads(path.read_text("utf-8")).get("pid") != pid:
            return
        path.unlink()
    except (OSError, ValueError):
        pass


def pid_alive(pid: int) -> bool:
    if pid <= 0 or os.name == "nt":  # unknown, or Windows (os.kill(pid, 0) would send CTRL_C): ping decides
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # pragma: no cover - e.g. Windows semantics
        return True
    return True

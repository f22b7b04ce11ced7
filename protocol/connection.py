"""The connection file: where the backend listens and the per-install signing key.

It lives in a per-user runtime directory (mode 0700) as ``backend.json`` (mode 0600), so only the user who
started the backend can read the key and talk to it. Hosts find the backend through this file alone.
"""

from __future__ import annotations

import base64
import binascii
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
    curve_publickey: str | None = None  # Z85; this client's key pair, admitted by the server (remote mode)
    curve_secretkey: str | None = None
    name: str = ""  # what the user calls this backend ("studio GPU"); remote connection files only

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
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return check(ConnectionInfo(**{k: v for k, v in data.items() if k in known}))
    except FileNotFoundError:
        raise ProtocolError(
            ErrorCode.NO_BACKEND,
            f"No backend is running (no connection file at {path}). Start it with: python -m backend serve",
        ) from None
    except (OSError, ValueError, TypeError, ProtocolError) as exc:
        reason = exc.message if isinstance(exc, ProtocolError) else exc
        raise ProtocolError(
            ErrorCode.NO_BACKEND,
            f"The connection file {path} is unreadable ({reason}); restart the backend: python -m backend serve",
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
    return not _process_dead(pid)


def _process_dead(pid: int) -> bool:
    """Linux: a killed child that nobody reaped yet is a zombie that os.kill(pid, 0) still finds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text("ascii", "replace")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"])


# -- remote backends: connection strings and imported connection files ------------------------------
STRING_PREFIX = "layeredit1:"
_Z85_LEN = 40  # a 32-byte CurveZMQ key in Z85


def config_dir(create: bool = True) -> Path:
    """$LAYEREDIT_CONFIG_DIR, else $XDG_CONFIG_HOME/layeredit, else ~/.config/layeredit (mode 0700).
    Remote connections live here, not in the runtime dir, because they must survive a reboot."""
    if os.environ.get("LAYEREDIT_CONFIG_DIR"):
        path = Path(os.environ["LAYEREDIT_CONFIG_DIR"])
    elif os.environ.get("XDG_CONFIG_HOME"):
        path = Path(os.environ["XDG_CONFIG_HOME"]) / "layeredit"
    else:
        path = Path.home() / ".config" / "layeredit"
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _bad(what: str) -> ProtocolError:
    return ProtocolError(
        ErrorCode.BAD_CONNECTION,
        f"{what} Ask the backend's admin for a new one: python -m backend keys client-new NAME",
    )


def check(info: ConnectionInfo) -> ConnectionInfo:
    """Reject a connection whose fields cannot work (a corrupted or hand-edited file), saying which field."""
    if not isinstance(info.endpoint, str) or not info.endpoint.startswith(("tcp://", "ipc://")):
        raise _bad(f"The connection's endpoint {info.endpoint!r} is not tcp://HOST:PORT.")
    if not isinstance(info.key, str) or not info.key or not info.key.isascii():
        raise _bad("The connection's signing key is missing or not text.")
    if isinstance(info.pid, bool) or not isinstance(info.pid, int):
        raise _bad(f"The connection's pid {info.pid!r} is not a number.")
    for name in ("curve_serverkey", "curve_publickey", "curve_secretkey"):
        value = getattr(info, name)
        if value is not None and (not isinstance(value, str) or len(value) != _Z85_LEN):
            raise _bad(f"The connection's {name} is not a {_Z85_LEN}-character Z85 key.")
    if (info.curve_publickey is None) != (info.curve_secretkey is None):
        raise _bad("The connection has only half of the client key pair.")
    if not isinstance(info.extra, dict) or not isinstance(info.name, str):
        raise _bad("The connection's extra/name fields have the wrong type.")
    return info


def to_string(info: ConnectionInfo) -> str:
    """One pasteable line holding everything a host needs to reach a remote backend (keep it secret:
    it carries the client's secret key and the signing key)."""
    data = {
        "e": info.endpoint,
        "k": info.key,
        "s": info.curve_serverkey,
        "p": info.curve_publickey,
        "c": info.curve_secretkey,
        "n": info.name,
    }
    raw = json.dumps({k: v for k, v in data.items() if v}, separators=(",", ":")).encode("utf-8")
    return STRING_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def parse_string(text: str) -> ConnectionInfo:
    """A connection string (``layeredit1:...``) -> ConnectionInfo; BAD_CONNECTION says what is wrong."""
    text = "".join(str(text).split())  # pasted text may be wrapped over lines
    if not text.startswith(STRING_PREFIX):
        raise _bad(f"A connection string starts with {STRING_PREFIX!r}; this one does not.")
    body = text[len(STRING_PREFIX) :]
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, binascii.Error):
        raise _bad("The connection string is damaged (cut short or mistyped?).") from None
    if not isinstance(data, dict) or not data.get("e") or not data.get("k"):
        raise _bad("The connection string lacks the address or the signing key.")
    info = ConnectionInfo(
        endpoint=data["e"],
        key=data["k"],
        curve_serverkey=data.get("s"),
        curve_publickey=data.get("p"),
        curve_secretkey=data.get("c"),
        name=data.get("n") or "",
    )
    return check(info)


def from_address(address: str, server_key: str, key: str, name: str = "") -> ConnectionInfo:
    """For hosts where the user pastes an address, the server's public key and the signing key: makes a
    fresh client key pair; its public key (``info.curve_publickey``) must then be admitted on the server
    with ``python -m backend keys allow PUBKEY NAME``."""
    import zmq

    address = address.strip()
    if "://" not in address:
        address = "tcp://" + address
    host, _, port = address[len("tcp://") :].rpartition(":")
    if not address.startswith("tcp://") or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad(f"The address {address!r} is not HOST:PORT.")
    public, secret = zmq.curve_keypair()
    info = ConnectionInfo(
        endpoint=address,
        key=key.strip(),
        curve_serverkey=server_key.strip(),
        curve_publickey=public.decode("ascii"),
        curve_secretkey=secret.decode("ascii"),
        name=name,
    )
    return check(info)


def load_any(source: str | Path) -> ConnectionInfo:
    """A connection string, or the path of a connection file (JSON) -> ConnectionInfo."""
    text = str(source).strip()
    if text.startswith(STRING_PREFIX):
        return parse_string(text)
    path = Path(text).expanduser()
    if not path.is_file():
        raise _bad(f"{text[:60]!r} is neither a connection string nor an existing connection file.")
    try:
        content = path.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(f"Cannot read the connection file {path} ({exc}).") from None
    if content.startswith(STRING_PREFIX):
        return parse_string(content)
    try:
        return read(path)
    except ProtocolError as exc:
        raise _bad(f"The connection file {path} is damaged ({exc.message}).") from None


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in name.strip()).strip(".-")
    return cleaned[:64] or "remote"


def import_connection(source: str | Path, name: str | None = None, directory: Path | None = None) -> Path:
    """Store a remote connection (string or file) as ``<config dir>/remotes/<name>.json`` (mode 0600) and
    return its path, which hosts keep and pass to ``Client.connect``. Hosts call this from their
    "Import connection..." / "Paste connection string" actions."""
    info = load_any(source)
    if not info.curve_serverkey or not info.curve_publickey:
        raise _bad(
            "This is a local connection (no server key); remote connections come from keys client-new."
        )
    info.pid = 0  # a remote process: liveness is decided by heartbeats, never by a local pid
    if name:
        info.name = name
    folder = directory or (config_dir() / "remotes")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return write(info, folder / f"{_safe_name(info.name or info.endpoint)}.json")


def list_imported(directory: Path | None = None) -> list[tuple[Path, ConnectionInfo]]:
    """The imported remote connections (damaged files are skipped), for a host's backend chooser."""
    folder = directory or (config_dir(create=False) / "remotes")
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append((path, read(path)))
        except ProtocolError:
            continue
    return out


def is_remote(info: ConnectionInfo) -> bool:
    """Remote backends are judged by heartbeats; local ones by their pid as well."""
    return info.pid <= 0

"""Remote mode: the server's key pair, the authorized client keys, and the CurveZMQ admission check.

Everything lives in one private directory (``keys_dir()``, mode 0700): ``server.json`` (the server's
CurveZMQ key pair and the HMAC signing key, 0600) and ``authorized_keys`` (one ``PUBKEY NAME`` line per
admitted client, 0600). The file is re-read when it changes, so ``keys allow`` / ``keys revoke`` act on a
running server: a revoked key can neither connect again nor send another message on an open connection.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import zmq

from protocol import connection

log = logging.getLogger("layeredit.remote")

SERVER_FILE = "server.json"
AUTHORIZED_FILE = "authorized_keys"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
Z85_RE = re.compile(r"^[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


class KeysError(Exception):
    """A key-management step cannot be done (the message says how to fix it)."""


def keys_dir(create: bool = True) -> Path:
    """$LAYEREDIT_KEYS_DIR, else <config dir>/server (mode 0700)."""
    env = os.environ.get("LAYEREDIT_KEYS_DIR")
    path = Path(env) if env else connection.config_dir(create) / "server"
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    return path


def _write_private(path: Path, text: str) -> None:
    """Atomic, mode 0600 from the first byte (a key file is never readable by others, even briefly)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass
class ServerKeys:
    public: str  # Z85 CurveZMQ public key: clients pin it (a different server cannot pose as this one)
    secret: str  # Z85 CurveZMQ secret key: never leaves server.json
    hmac_key: str  # hex; signs every message as in local mode (shared with admitted clients)


def init_server(directory: Path | None = None, force: bool = False) -> ServerKeys:
    """Create the server's key pair and signing key (refuses to overwrite unless ``force``: every client
    connection string would stop working)."""
    directory = directory or keys_dir()
    path = directory / SERVER_FILE
    if path.exists() and not force:
        raise KeysError(
            f"{path} exists already; keep it, or pass --force to replace it (clients must re-import)."
        )
    public, secret = zmq.curve_keypair()
    keys = ServerKeys(public.decode("ascii"), secret.decode("ascii"), connection.new_key())
    _write_private(path, json.dumps(asdict(keys), indent=2))
    return keys


def load_server(directory: Path | None = None) -> ServerKeys:
    path = (directory or keys_dir(create=False)) / SERVER_FILE
    try:
        data = json.loads(path.read_text("utf-8"))
        keys = ServerKeys(**{k: data[k] for k in ("public", "secret", "hmac_key")})
    except FileNotFoundError:
        raise KeysError(
            f"No server keys at {path}; create them with: python -m backend keys server-init"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeysError(
            f"The server keys file {path} is damaged ({exc}); recreate it with: python -m backend keys "
            "server-init --force (clients must then re-import their connection strings)"
        ) from None
    if zmq.curve_public(keys.secret.encode("ascii")).decode("ascii") != keys.public:
        raise KeysError(
            f"{path}: the public key does not match the secret key; run keys server-init --force."
        )
    return keys


class AuthorizedKeys:
    """The admitted clients, ``PUBKEY NAME`` per line; doubles as pyzmq's CURVE credentials provider."""

    def __init__(self, path: Path, extra: dict[str, str] | None = None):
        self.path = Path(path)
        self.extra = dict(extra or {})  # in-memory keys (the server's own local client), never written
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._keys: dict[str, str] = {}  # public -> name

    def _file_keys(self) -> dict[str, str]:
        """Re-read the file when its mtime/size changed; a missing file admits no one."""
        try:
            st = self.path.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)  # every save is a new inode (atomic replace)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._keys = self._parse() if stamp else {}
                self._stamp = stamp
            return dict(self._keys)

    def _parse(self) -> dict[str, str]:
        keys: dict[str, str] = {}
        try:
            lines = self.path.read_text("utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            log.error("cannot read %s (%s): no remote client is admitted", self.path, exc)
            return {}
        for n, line in enumerate(lines, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#") and len(parts[0]) != 40:  # Z85 keys may contain '#'
                continue
            if len(parts) != 2 or not Z85_RE.match(parts[0]):
                log.warning("%s line %d ignored: expected 'PUBKEY NAME'", self.path, n)
                continue
            keys[parts[0]] = parts[1]
        return keys

    def entries(self) -> dict[str, str]:
        """name -> public key, from the file."""
        return {name: key for key, name in self._file_keys().items()}

    def name_of(self, public: str) -> str | None:
        if public in self.extra:
            return self.extra[public]
        return self._file_keys().get(public)

    def allowed(self, public: str) -> bool:
        return self.name_of(public) is not None

    def callback(self, domain: str, key: bytes) -> bool:
        """pyzmq ZAP hook: ``key`` is the client's Z85 public key."""
        public = key.decode("ascii", "replace")
        ok = self.allowed(public)
        log.info("%s remote client key %s", "admitted" if ok else "refused", public[:8] + "...")
        return ok

    # -- editing (the keys command) -------------------------------------------------------------
    def _save(self, by_name: dict[str, str]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = "# LayerEdit admitted clients: PUBKEY NAME (python -m backend keys ...)\n"
        text += "".join(f"{key} {name}\n" for name, key in sorted(by_name.items()))
        _write_private(self.path, text)

    def allow(self, public: str, name: str) -> None:
        public = public.strip()
        if not Z85_RE.match(public):
            raise KeysError(f"{public!r} is not a CurveZMQ public key (40 Z85 characters).")
        if not NAME_RE.match(name):
            raise KeysError(f"{name!r} is not a usable name: letters, digits and ._@- (at most 64).")
        by_name = {n: k for n, k in self.entries().items() if k != public}
        by_name[name] = public
        self._save(by_name)

    def revoke(self, name: str) -> bool:
        by_name = self.entries()
        if name not in by_name:
            return False
        del by_name[name]
        self._save(by_name)
        return True


def client_new(name: str, endpoint: str, directory: Path | None = None) -> connection.ConnectionInfo:
    """A fresh client key pair, admitted under ``name``; returns the connection the client imports."""
    directory = directory or keys_dir()
    server = load_server(directory)
    public, secret = zmq.curve_keypair()
    AuthorizedKeys(directory / AUTHORIZED_FILE).allow(public.decode("ascii"), name)
    info = connection.ConnectionInfo(
        endpoint=endpoint,
        key=server.hmac_key,
        curve_serverkey=server.public,
        curve_publickey=public.decode("ascii"),
        curve_secretkey=secret.decode("ascii"),
        name=name,
    )
    return connection.check(info)


def parse_listen(address: str) -> tuple[str, int]:
    """``HOST:PORT``, ``tcp://HOST:PORT`` or ``[v6]:PORT`` -> (host, port)."""
    text = address.strip()
    if text.startswith("tcp://"):
        text = text[len("tcp://") :]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536 or not host:
        raise KeysError(f"--listen {address!r}: give HOST:PORT, e.g. 0.0.0.0:5555")
    return host.strip("[]"), int(port)

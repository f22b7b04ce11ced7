"""The job server: one ROUTER socket, message dispatch, limits (``python -m backend serve``).

Only the socket thread touches the ROUTER. Workers hand signed frames to it through a queue plus a
one-byte wake-up on a socketpair the poller watches (thread-safe, unlike sharing a zmq socket). Every incoming message is verified first: a bad or missing signature is logged and dropped
(no reply: an unauthenticated peer learns nothing). Anything malformed, truncated, oversized or unsupported
gets an ``error`` reply with a stable code, and the server keeps serving.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import queue
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from backend.guard import MODEL_NAME_RE, PeerGuard, SeenIds, scrub_error
from backend.jobs import DONE, FINISHED, Job, JobManager, ModelsFactory, admit, default_models
from backend.ops import Registry, product_registry
from backend.remote import AuthorizedKeys
from protocol import connection, shm, wire
from protocol.errors import ErrorCode, ProtocolError
from protocol.wire import Message

log = logging.getLogger("layeredit.server")

BACKEND_VERSION = "0.1.0"
SUBMIT_ROLES = ("image", "selection")
# A client-chosen routing id that claims a token (SPEC.md 1): t:<token>:<random>, letters and digits only.
ROUTING_TOKEN_RE = re.compile(rb"^t:([A-Za-z0-9]{1,64}):[A-Za-z0-9]{1,64}$")


class ConfigError(Exception):
    """The server cannot start as configured (the message says how to fix it)."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    devices: tuple[str, ...] = ("cpu",)
    max_pixels: int = 100_000_000  # per buffer; a 10000x10000 layer
    max_message_bytes: int | None = (
        None  # ZMQ_MAXMSGSIZE (bigger drops the connection); None: from max_pixels
    )
    recv_hwm: int = 2  # ZMQ_RCVHWM: messages ZeroMQ queues per connection before it stops reading it
    # connections that have not sent a signed message yet: past max_unproven_peers the ones that sent a bad
    # signature or had burst_grace_s to sign and did not are shut down (and the guard is wary, the small cap
    # for all, for proof_deadline_s); ones still within the grace (a burst of hosts connecting at once) only
    # past max_unproven_burst, or biggest first past max_unproven_peers x max_message_bytes received
    # (backend/guard.py)
    max_unproven_peers: int = 8
    max_unproven_burst: int = 64
    proof_deadline_s: float = 15.0
    burst_grace_s: float = 2.0
    max_bad_signatures: int = 4  # an unproven connection is dropped after this many unsigned messages
    max_result_bytes: int = 1 << 30  # finished results kept for fetch, oldest evicted first
    max_queue: int = 64
    max_queued_per_client: int | None = None  # quota_exceeded past it; None: 3/4 of max_queue
    max_result_bytes_per_client: int | None = None  # stored unfetched results; None: half of max_result_bytes
    connection_file: Path | None = None  # default: <runtime dir>/backend.json
    key: str | None = None  # default: a fresh random key per start
    curve_secret_key: str | None = None  # Z85; required to bind a non-loopback address
    report_models: bool = True  # hello lists which model kinds are installed
    authorized_keys: Path | None = None  # remote mode: admitted client keys (required off loopback)
    result_ttl_s: float | None = 3600.0  # unfetched results are dropped after this (None: kept)
    abandon_after_s: float | None = None  # cancel jobs of clients silent this long (None: let them finish)
    shm: bool = True  # offer the same-host shared-memory path (SPEC.md section 8) where the OS allows it
    max_shm_bytes: int = 1 << 30  # result segments alive at once; past it results go inline


@dataclass(frozen=True)
class Peer:
    """Who sent the message being handled: the owner its jobs are filed under, and how far it is trusted."""

    client: str  # "key:<curve key>" (remote), "token:<t>" or "conn:<routing id hex>" (local key holders)
    remote: bool  # an admitted remote CurveZMQ key, not this machine's connection file
    loopback: bool  # its TCP connection comes from this machine

    @property
    def local(self) -> bool:
        """The local owner: holds the connection file's key and talks over loopback. Only it may use shared
        memory (a remote key holder must never name a local client's segment) or shut the backend down."""
        return not self.remote and self.loopback


def message_limit(max_pixels: int) -> int:
    """The largest message a legitimate submit needs: an image of ``max_pixels`` at the widest sample type
    (f32 RGBA, 16 bytes a pixel) plus a selection as large (f32 gray, 4 bytes), plus the largest header."""
    return max_pixels * 20 + wire.MAX_HEADER_BYTES + (64 << 10)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Server:
    def __init__(
        self,
        config: ServerConfig | None = None,
        registry: Registry | None = None,
        models_factory: ModelsFactory | None = default_models,
    ):
        self.config = config or ServerConfig()
        remote_ok = self.config.curve_secret_key and self.config.authorized_keys is not None
        if not is_loopback(self.config.host) and not remote_ok:
            raise ConfigError(
                f"Refusing to listen on {self.config.host}: only loopback (127.0.0.1) is allowed without "
                "CurveZMQ and an authorized-keys file. For remote use run: python -m backend keys server-init, "
                "then: python -m backend serve --listen HOST:PORT"
            )
        self.registry = registry if registry is not None else product_registry()
        self.max_message_bytes = self.config.max_message_bytes or message_limit(self.config.max_pixels)
        self.guard = PeerGuard(
            self.config.max_unproven_peers,
            self.config.max_bad_signatures,
            max_burst=self.config.max_unproven_burst,
            proof_deadline_s=self.config.proof_deadline_s,
            burst_grace_s=self.config.burst_grace_s,
            # past the cap, young connections together may hold what max_unproven_peers could before
            max_pending_bytes=self.config.max_unproven_peers * self.max_message_bytes,
        )
        self.seen_ids = SeenIds(self.config.result_ttl_s or 3600.0)
        self._monitor: zmq.Socket | None = None
        self._locator: Any = None  # the model folders, for remote clients' model names
        self._model_names_cache: tuple[float, list[str]] | None = None
        self.key = (self.config.key or connection.new_key()).encode("ascii")
        self._ctx = zmq.Context()
        self._outbox: queue.Queue[tuple[Job | None, list[bytes] | None, list[Any]]] = queue.Queue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.jobs = JobManager(
            self.registry,
            self.key,
            self._emit,
            devices=tuple(self.config.devices),
            max_result_bytes=self.config.max_result_bytes,
            max_queue=self.config.max_queue,
            models_factory=models_factory,
            result_ttl_s=self.config.result_ttl_s,
            abandon_after_s=self.config.abandon_after_s,
            max_shm_bytes=self.config.max_shm_bytes,
            max_queued_per_client=self.config.max_queued_per_client,
            max_result_bytes_per_client=self.config.max_result_bytes_per_client,
        )
        self._probe: shm.Segment | None = None  # proves to a client that it sees our /dev/shm
        self._probe_token = ""
        self._next_sweep = 0.0
        self._authorized: AuthorizedKeys | None = None  # remote mode: who may connect and send
        self._authenticator: Any = None
        self._local_keys: tuple[str, str] | None = None  # this machine's hosts, admitted in memory
        self._current_client = ""  # owner of the message being handled (socket thread only)
        self._current_peer = Peer("", remote=False, loopback=False)  # and who sent it (socket thread only)
        self._next_jobs_sweep = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._report: dict | None = None  # models and resolved devices, built off the socket thread
        self._report_lock = threading.Lock()
        self._pending_hellos: list[tuple[list[bytes], str, bool]] = []
        self.endpoint = ""
        self.connection_file: Path | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def bind(self) -> str:
        """Bind the ROUTER and the wake-up socket, write the connection file; returns the endpoint."""
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        self._router.setsockopt(zmq.RCVHWM, self.config.recv_hwm)
        curve_public = None
        if self.config.curve_secret_key:
            self._start_auth()
            secret = self.config.curve_secret_key.encode("ascii")
            self._router.curve_secretkey = secret
            self._router.curve_server = True
            curve_public = zmq.curve_public(secret).decode("ascii")
        host = "127.0.0.1" if self.config.host == "localhost" else self.config.host
        host_ep = f"[{host}]" if ":" in host else host
        if ":" in host:
            self._router.setsockopt(zmq.IPV6, 1)
        try:
            if self.config.port:
                self._router.bind(f"tcp://{host_ep}:{self.config.port}")
                port = self.config.port
            else:
                port = self._router.bind_to_random_port(f"tcp://{host_ep}")
        except zmq.ZMQError as exc:
            self._router.close(linger=0)
            self._ctx.term()
            self._wake_r.close()
            self._wake_w.close()
            raise ConfigError(
                f"Cannot listen on {host}:{self.config.port or 'a free port'} ({exc}). Another backend may be "
                "running there: use it, stop it, or leave --port out to take a free port."
            ) from None
        self.endpoint = f"tcp://{host_ep}:{port}"
        info = connection.ConnectionInfo(
            endpoint=self.endpoint,
            key=self.key.decode("ascii"),
            pid=os.getpid(),
            protocol=wire.PROTOCOL_VERSION,
            backend_version=BACKEND_VERSION,
            curve_serverkey=curve_public,
            curve_publickey=self._local_keys[0] if self._local_keys else None,
            curve_secretkey=self._local_keys[1] if self._local_keys else None,
        )
        self._start_shm()
        try:
            self.connection_file = connection.write(info, self.config.connection_file)
        except OSError as exc:  # read-only or full runtime dir: say where, and how to point elsewhere
            if self._probe is not None:  # nothing may be left in /dev/shm by a start that failed
                self._probe.unlink()
                self._probe = None
            self._router.close(linger=0)
            if self._authenticator is not None:
                self._authenticator.stop()
            self._ctx.term()
            raise ConfigError(
                f"Cannot write the connection file {self.config.connection_file or connection.default_path()} "
                f"({exc.strerror or exc}). Free some disk space, or set LAYEREDIT_RUNTIME_DIR (or "
                "--connection-file) to a writable directory."
            ) from None
        # which TCP connections exist (their fds), for PeerGuard: ZMQ_SRCFD tells which one a message came by
        self._monitor = self._router.get_monitor_socket(
            zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
        )
        log.info("listening on %s; connection file %s", self.endpoint, self.connection_file)
        return self.endpoint

    def _start_shm(self) -> None:
        """Sweep segments of dead writers (a crashed backend, killed clients) and create the probe segment
        whose name and token ``hello`` advertises; without it the shm path is off."""
        if not (self.config.shm and shm.available()):
            return
        shm.sweep()
        try:
            self._probe_token = os.urandom(16).hex()
            probe = shm.Segment.create(32, shm.SERVER_PREFIX)
            probe.write(0, self._probe_token.encode("ascii"))
            probe.close()
            self._probe = probe
        except OSError as exc:
            log.warning("shared memory unavailable (%s): buffers go inline", exc)

    def sweep_shm(self, max_age_s: float = shm.SWEEP_MIN_AGE_S) -> list[str]:
        """Unlink segments whose writer died (clients killed before we mapped their input). Also run every
        few seconds from the socket loop."""
        removed = shm.sweep(max_age_s)
        if removed:
            log.info("swept %d shared-memory segments of dead processes", len(removed))
        return removed

    def _start_auth(self) -> None:
        """Remote mode: a ZAP handler admits only keys in the authorized-keys file, plus a key made for this
        start and written to the (0600) local connection file so this machine's hosts connect as before."""
        if self.config.authorized_keys is None:  # loopback CurveZMQ without a keys file: encryption only
            return
        from zmq.auth.thread import ThreadAuthenticator

        public, secret = zmq.curve_keypair()
        self._local_keys = (public.decode("ascii"), secret.decode("ascii"))
        self._authorized = AuthorizedKeys(self.config.authorized_keys, extra={self._local_keys[0]: "local"})
        self._authenticator = ThreadAuthenticator(self._ctx, log=logging.getLogger("layeredit.zap"))
        self._authenticator.start()
        self._authenticator.configure_curve_callback("*", credentials_provider=self._authorized)

    def _peer_of(self, rid: bytes, first_frame: Any) -> Peer | None:
        """Who sent this message and owns what it asks about: the CurveZMQ key for remote clients (None once
        revoked), the token in the routing id for local ones, else the connection itself. ``rid`` is the
        routing id ZeroMQ added (the only frame allowed before the delimiter)."""
        peer_address = _frame_property(first_frame, "Peer-Address")
        loopback = is_loopback(peer_address)
        if self._authorized is not None and self._local_keys is not None:
            user = _frame_property(first_frame, "User-Id")
            if user and user != self._local_keys[0]:
                if not self._authorized.allowed(user):
                    return None
                return Peer(f"key:{user}", remote=True, loopback=loopback)
        if rid.startswith(b"t:"):
            m = ROUTING_TOKEN_RE.match(rid)
            if m is None:
                raise ProtocolError(
                    ErrorCode.MALFORMED,
                    "A routing id starting with 't:' must be t:<token>:<random> (letters and digits, 1-64 "
                    "each; SPEC.md 1).",
                )
            return Peer("token:" + m.group(1).decode("ascii"), remote=False, loopback=loopback)
        return Peer("conn:" + rid.hex(), remote=False, loopback=loopback)

    def start(self) -> Server:
        """Bind and serve on a background thread (tests, embedding)."""
        self.bind()
        self._start_report()
        self.jobs.start()
        self._thread = threading.Thread(target=self._loop, name="layeredit-router", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.bind()
        self._start_report()
        self.jobs.start()
        self._loop()

    def stop(self) -> None:
        self._stop.set()
        self._poke()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    # -- worker -> socket thread ----------------------------------------------------------------
    def _emit(self, job: Job, frames: list[Any]) -> None:
        self._outbox.put((job, None, frames))
        self._poke()

    def _poke(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a wake-up is pending anyway) or closed: the loop also polls with a timeout
            pass

    def _flush_outbox(self) -> None:
        while True:
            try:
                job, identity, frames = self._outbox.get_nowait()
            except queue.Empty:
                return
            if identity is None and job is not None:
                identity = job.owner  # read now: a fetch may have re-attached the job meanwhile
            if identity is not None:
                self._send_frames(identity, frames)

    def _send_frames(self, identity: list[bytes], frames: list[Any]) -> None:
        try:
            self._router.send_multipart([*identity, *frames], copy=False)
        except zmq.ZMQError as exc:  # e.g. the peer's queue is full: never die of one client
            log.warning("could not send to a client: %s", exc)

    # -- the socket thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        # registered by its fd, which is how pyzmq names a ready plain socket: testing for the socket object
        # missed every wake-up, left the byte unread and the poll returning at once for ever (the idle server
        # spun a whole core, and a job shared the CPU with it)
        wake = self._wake_r.fileno()
        poller.register(wake, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                # past the unproven cap, a flood's bytes arrive with no message to wake us: look often
                ready = dict(poller.poll(10 if self.guard.watching() else 500))
                if wake in ready:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
                self._flush_outbox()
                if self._probe is not None and time.monotonic() >= self._next_sweep:
                    self._next_sweep = time.monotonic() + 5.0
                    self.sweep_shm()
                if time.monotonic() >= self._next_jobs_sweep:
                    self._next_jobs_sweep = time.monotonic() + 1.0
                    self.jobs.sweep()
                    self.seen_ids.expire()
                self._drain_monitor()
                backlog = False
                if self._router in ready:
                    backlog = True
                    for _ in range(64):  # fairness with the outbox
                        try:
                            frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            backlog = False
                            break
                        self._drain_monitor()  # know a connection before judging its messages
                        self._handle(frames)
                        self._flush_outbox()
                # after reading what was waiting: a connection whose signed first message was there is
                # proven now, never cut for arriving in a burst (nor past its grace while messages wait)
                self.guard.enforce(backlog=backlog)
        finally:
            self._shutdown()

    def _drain_monitor(self) -> None:
        """Connections accepted and closed, in order, for PeerGuard (socket thread only)."""
        if self._monitor is None:
            return
        while self._monitor.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                frames = self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                event = parse_monitor_message(frames)
            except (ValueError, IndexError):
                continue
            if event["event"] == zmq.EVENT_ACCEPTED:
                self.guard.accepted(int(event["value"]))
            elif event["event"] in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED):
                self.guard.closed(int(event["value"]))

    def _shutdown(self) -> None:
        self.jobs.stop()  # also unlinks the stored results' segments
        self._flush_outbox()
        if self._monitor is not None:
            self._router.disable_monitor()
            self._monitor.close(linger=0)
        if self._probe is not None:
            self._probe.unlink()
        if self.connection_file is not None:
            connection.remove(self.connection_file, pid=os.getpid())
        self._router.close(linger=0)
        if self._authenticator is not None:
            self._authenticator.stop()
        self._ctx.term()
        self._wake_r.close()
        self._wake_w.close()
        log.info("stopped")

    def _reply(self, identity: list[bytes], msg: Message) -> None:
        self._send_frames(identity, wire.encode(msg, self.key))

    def _handle(self, frames: list[Any]) -> None:
        fd = _frame_fd(frames[0])
        if not self.guard.admit(fd):
            return  # what a dropped connection had queued: not even read
        try:
            identity, body = wire.split_identities(frames)
        except ProtocolError:
            log.warning("dropped a message without a delimiter frame (%d frames)", len(frames))
            self.guard.bad_signature(fd)
            return
        try:
            wire.verify(body, self.key)
        except wire.SignatureError as exc:
            log.warning("dropped an unauthenticated message: %s", exc)
            self.guard.bad_signature(fd)
            return
        self.guard.proven(fd)
        # replies go to the routing id ZeroMQ added, never to frames a client put before the delimiter
        identity = identity[:1]
        self._current_peer = Peer("", remote=True, loopback=False)  # trusted with nothing until known
        parent = job = None
        try:
            if len(frames) - len(body) != 1:
                raise ProtocolError(
                    ErrorCode.MALFORMED,
                    "Frames before the delimiter: a message starts with the delimiter frame (SPEC.md 3).",
                )
            header = wire.decode_header(wire._view(body[2]))
            parent, job = header["id"], header["job"]
            peer = self._peer_of(identity[0], frames[0])
            if peer is None:
                raise ProtocolError(
                    ErrorCode.NOT_ALLOWED,
                    "This client's key was revoked; ask the backend's admin for a new one.",
                )
            self._current_client, self._current_peer = peer.client, peer
            if not self.seen_ids.check_and_add(header["id"], peer.client):
                raise ProtocolError(
                    ErrorCode.MALFORMED,
                    f"Message id {header['id']!r} was already used; every message needs a fresh id (a "
                    "resent message is refused, not run again).",
                )
            self.jobs.seen(peer.client)
            msg = wire.decode(body, None, self._resolve_input)  # verified above
            self._dispatch(identity, msg, frames[0])
        except ProtocolError as exc:
            if parent is None:  # the header was refused: still name the request when its id is readable
                parent, job = wire.header_ids(body[2])
            log.info("error reply to %s: %s", parent, exc)
            self._reply_error(identity, exc, parent, job)
        except Exception as exc:  # a bug in dispatch must not kill the server
            log.exception("internal error handling %s", parent)
            err = ProtocolError(ErrorCode.INTERNAL, f"Internal error: {type(exc).__name__}: {exc}")
            self._reply_error(identity, err, parent, job)

    def _reply_error(
        self, identity: list[bytes], exc: ProtocolError, parent: str | None, job: str | None
    ) -> None:
        """An ``error`` reply; a peer that is not the local owner never reads server paths in it."""
        content = exc.to_json() if self._current_peer.local else scrub_error(exc.to_json())
        self._reply(identity, Message(wire.ERROR, job=job, parent=parent, content=content))

    def _resolve_input(self, location: Any, expected: int) -> memoryview:
        """Map a client's input segment read-only (checked: ours, 0600, in bounds). The client owns it (and
        reuses it once the job's result or error reached it); our mapping lives as long as the job's input."""
        if self._probe is None:
            raise ProtocolError(
                ErrorCode.BAD_BUFFER, "This backend does not accept shared memory; send buffers inline."
            )
        if not self._current_peer.local:  # a remote key holder must never name a local client's segment
            raise ProtocolError(
                ErrorCode.BAD_BUFFER,
                "Shared memory is only for local clients of this backend's connection file; send buffers "
                "inline as frames.",
            )
        return shm.open_readonly(location, shm.CLIENT_PREFIX, expected)

    def _dispatch(self, identity: list[bytes], msg: Message, first_frame: Any) -> None:
        handler = {
            wire.PING: self._on_ping,
            wire.HELLO: self._on_hello,
            wire.SUBMIT: self._on_submit,
            wire.CANCEL: self._on_cancel,
            wire.STATUS: self._on_status,
            wire.LIST: self._on_list,
            wire.FETCH: self._on_fetch,
            wire.RELEASE: self._on_release,
        }.get(msg.type)
        if msg.type == wire.SHUTDOWN:
            self._on_shutdown(identity, msg, first_frame)
        elif handler is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_TYPE,
                f"Unknown message type {msg.type!r}; this backend speaks protocol {wire.PROTOCOL_VERSION}.",
            )
        else:
            handler(identity, msg)

    # -- handlers -------------------------------------------------------------------------------
    def _on_ping(self, identity: list[bytes], msg: Message) -> None:
        self._reply(identity, Message(wire.PONG, parent=msg.id))

    def _on_hello(self, identity: list[bytes], msg: Message) -> None:
        with self._report_lock:
            if self._report is None:  # answered by the report thread once it is done (torch imports slowly)
                self._pending_hellos.append((identity, msg.id, self._current_peer.local))
                return
        content = self.capabilities(local=self._current_peer.local)
        self._reply(identity, Message(wire.CAPABILITIES, parent=msg.id, content=content))

    def capabilities(self, local: bool = True) -> dict:
        """What ``hello`` answers; ``local``: the peer may use shared memory (else ``shm`` is null)."""
        report = self._report or {}
        return {
            "backend_version": BACKEND_VERSION,
            "protocol": wire.PROTOCOL_VERSION,
            "devices": report.get("devices", list(self.config.devices)),
            "ops": [spec.to_json() for spec in self.registry.specs()],
            "models": report.get("models", {}),
            "presets": report.get("presets"),  # None: not checked (--no-model-report)
            "limits": {
                "max_pixels": self.config.max_pixels,
                "max_message_bytes": self.max_message_bytes,
                "max_buffers": wire.MAX_BUFFERS,
                "max_queue": self.config.max_queue,
                "max_queued_per_client": self.jobs.max_queued_per_client,
                "max_result_bytes_per_client": self.jobs.max_result_bytes_per_client,
            },
            "sample_types": list(wire.SAMPLE_BYTES),
            "channel_orders": list(wire.ORDER_CHANNELS),
            "shm": self._shm_capability() if local else None,
            "model_names": self._model_names(),
        }

    def _model_locator(self) -> Any:
        """The model folders' locator (no torch, no Hugging Face: file checks only); None without backend.models."""
        if self._locator is None:
            try:
                from backend.models.locate import Locator, extra_model_dirs
                from backend.models.presets import default_models_dir
            except ImportError:
                return None
            self._locator = Locator(default_models_dir(), extra_model_dirs(), None)
        return self._locator

    def _model_names(self) -> list[str]:
        """What a remote client may pass as a ``model`` parameter: install preset names and the models in the
        server's model folders, by name (SPEC.md 4.1)."""
        now = time.monotonic()
        if self._model_names_cache is not None and now - self._model_names_cache[0] < 5.0:
            return self._model_names_cache[1]  # hello may be asked often (a prober, many hosts)
        locator = self._model_locator()
        if locator is None:
            return []
        from backend.models.presets import PRESETS

        names = sorted({*PRESETS, *locator.names()})
        self._model_names_cache = (now, names)
        return names

    def _check_model_names(self, params: dict) -> None:
        """A remote peer's ``model`` (or ``*_model``) parameters must be "" or a name the server lists: it never
        names, or learns anything about, paths on the server. Local owners keep passing paths."""
        for name, value in params.items():
            if not (name == "model" or name.endswith("_model")) or not isinstance(value, str) or not value:
                continue
            locator = self._model_locator()
            from backend.models.presets import PRESETS

            ok = MODEL_NAME_RE.match(value) is not None and locator is not None
            if ok and value not in PRESETS and locator.find_by_name(value) is None:
                ok = False
            if not ok:
                raise ProtocolError(
                    ErrorCode.BAD_PARAM,
                    f"Parameter '{name}': this backend offers no model named {value!r}. A remote client names a "
                    "model from the list hello sends (capabilities.model_names), never a path; leave it empty "
                    "for the default.",
                    {"param": name},
                )

    def _shm_capability(self) -> dict | None:
        ident = shm.host_identity() if self._probe is not None else None
        if ident is None or self._probe is None:
            return None
        limit = self.config.max_shm_bytes
        return {**ident, "probe": self._probe.name, "token": self._probe_token, "max_bytes": limit}

    def _start_report(self) -> None:
        if not self.config.report_models:
            self._report = {}
            return
        threading.Thread(target=self._build_report, name="layeredit-report", daemon=True).start()

    def _build_report(self) -> None:
        """Which model kinds are installed and what the devices resolve to (file checks, no weights loaded);
        then answer the hellos that waited for it, through the outbox like the workers do."""
        report: dict = {}
        try:
            from backend.models import ModelManager
            from backend.models.device import pick_device

            report["devices"] = [pick_device(d) for d in self.config.devices]
            manager = ModelManager(device="cpu")
            report["models"] = manager.available()
            report["presets"] = manager.installed_presets()
        except Exception as exc:  # advisory only: ops raise MODEL_MISSING themselves
            log.info("model report incomplete: %s", exc)
        with self._report_lock:
            self._report = report
            pending, self._pending_hellos = self._pending_hellos, []
        for identity, parent, local in pending:
            msg = Message(wire.CAPABILITIES, parent=parent, content=self.capabilities(local=local))
            self._outbox.put((None, identity, wire.encode(msg, self.key)))
        self._poke()

    def _on_submit(self, identity: list[bytes], msg: Message) -> None:
        if not msg.op:
            raise ProtocolError(ErrorCode.MALFORMED, "A submit needs 'op' (see the ops listed by hello).")
        spec = self.registry.get(msg.op).spec
        for b in msg.buffers:
            if b.width * b.height > self.config.max_pixels:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE,
                    f"The {b.role} is {b.width}x{b.height} = {b.width * b.height} pixels; this backend takes at "
                    f"most {self.config.max_pixels}. Crop or scale it, or restart with a larger --max-pixels.",
                    {"role": b.role},
                )
        roles = [b.role for b in msg.buffers]
        for role in roles:
            if role not in SUBMIT_ROLES or roles.count(role) > 1:
                raise ProtocolError(
                    ErrorCode.BAD_BUFFER,
                    f"A submit carries at most one 'image' and one 'selection' buffer; got {roles}.",
                    {"role": role},
                )
        image, selection = msg.buffer("image"), msg.buffer("selection")
        params = admit(
            spec, msg.params, image, selection
        )  # the one door: params and buffers, before accepted
        if not self._current_peer.local:
            self._check_model_names(params)
        job_id = wire.new_id() if msg.job is None else msg.job  # "" is not "none": it is refused
        if not 1 <= len(job_id) <= wire.MAX_ID_CHARS or not job_id.isprintable():
            raise ProtocolError(
                ErrorCode.MALFORMED,
                f"A job id must be 1 to {wire.MAX_ID_CHARS} printable characters (or null: the server picks).",
            )
        job = Job(job_id, msg.op, params, image, selection, identity, submit_id=msg.id)
        job.client, job.local = self._current_client, self._current_peer.local
        job.shm_results = (
            bool(msg.content.get("shm_results")) and self._probe is not None and self._current_peer.local
        )
        space = msg.content.get("shm_result")
        if space is not None and not self._current_peer.local:
            raise ProtocolError(
                ErrorCode.BAD_BUFFER,
                "Shared memory is only for local clients of this backend's connection file; leave "
                "'shm_result' out and take the result inline.",
            )
        if space is not None:  # well formed now; gone or too small is found when the result is written
            name, _, _ = shm.parse_location(space)
            if not name.startswith(shm.CLIENT_PREFIX):
                raise ProtocolError(
                    ErrorCode.BAD_BUFFER, f"'shm_result' must name a {shm.CLIENT_PREFIX}* segment."
                )
        job.result_space = space if self._probe is not None else None
        position = self.jobs.submit(job)
        log.info("job %s (%s) accepted, queue position %d", job_id, msg.op, position)
        self._reply(
            identity, Message(wire.ACCEPTED, job=job_id, parent=msg.id, content={"queue_position": position})
        )

    def _on_cancel(self, identity: list[bytes], msg: Message) -> None:
        job = self.jobs.cancel(msg.job, self._current_client)
        self._reply(identity, Message(wire.JOB_STATUS, job=job.id, parent=msg.id, content=job.describe()))

    def _on_status(self, identity: list[bytes], msg: Message) -> None:
        job = self.jobs.get(msg.job, self._current_client)
        self._reply(identity, Message(wire.JOB_STATUS, job=job.id, parent=msg.id, content=job.describe()))

    def _on_list(self, identity: list[bytes], msg: Message) -> None:
        jobs = self.jobs.list(self._current_client)
        self._reply(identity, Message(wire.JOBS, parent=msg.id, content={"jobs": jobs}))

    def _on_fetch(self, identity: list[bytes], msg: Message) -> None:
        job = self.jobs.fetch(msg.job, identity, self._current_client, reply_to=msg.id)
        final = self.jobs.final_frames(job, parent=msg.id) if job.state in FINISHED else None
        if final is not None:
            self._send_frames(identity, final)  # the stored result (or error), as a fresh reply to this fetch
        else:  # still queued or running: progress and the result now come to this client
            self._reply(identity, Message(wire.JOB_STATUS, job=job.id, parent=msg.id, content=job.describe()))

    def _on_release(self, identity: list[bytes], msg: Message) -> None:
        try:  # fire and forget: never answered, not even for an unknown job
            job = self.jobs.get(msg.job, self._current_client)
        except ProtocolError:
            return
        if job.state == DONE:
            self.jobs.release(job.id, self._current_client)

    def _on_shutdown(self, identity: list[bytes], msg: Message, first_frame: Any) -> None:
        if not self._current_peer.local:  # a remote key, or the local key from another machine
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                "Only the backend's owner on its own computer may shut it down (the connection file's key, "
                "over loopback); ask the admin of the shared backend.",
            )
        self._reply(identity, Message(wire.BYE, parent=msg.id))
        log.info("shutdown requested")
        self._stop.set()


def _frame_property(frame: Any, name: str) -> str:
    """A ZeroMQ message property (``Peer-Address``, ``User-Id``), "" when the transport does not set it."""
    try:
        return str(frame.get(name) or "")
    except (AttributeError, zmq.ZMQError):
        return ""


def _frame_fd(frame: Any) -> int | None:
    """The TCP socket a message came by (ZMQ_SRCFD), None where the transport does not say."""
    try:
        fd = frame.get(zmq.SRCFD)
    except (AttributeError, zmq.ZMQError):
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None

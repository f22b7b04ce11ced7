"""One client for the backend, two ways to drive it.

Blocking (GIMP plug-ins are their own process)::

    client = Client.connect()
    result = client.run("erase", {"snap": True}, image=buf, selection=sel, on_progress=print)

Non-blocking (Krita's Qt loop): watch ``client.fd`` with a QSocketNotifier(Read) and call ``client.pump()``
when it fires, right after every ``submit``/``cancel``/``fetch`` call (ZMQ_FD is edge-triggered and a send
can consume the edge), and from a ~250 ms QTimer (liveness: a dead backend is reported within 2 s as an
``error`` event with code ``backend_gone``). ``pump()`` never blocks and returns a list of ``Event``.

Liveness: the client pings after 0.5 s of silence. A LOCAL backend (the connection file names its pid) whose
process is gone is ``BACKEND_GONE`` at once (within 2 s of the kill); one that is alive but slow to answer
(a heavily loaded machine) gets ``local_grace_s`` (15 s) first. A REMOTE backend has no pid to check: it is
gone after ``heartbeat_timeout_s`` (30 s, or $LAYEREDIT_HEARTBEAT_TIMEOUT) without any answer. While jobs
run the client also pings every ``KEEPALIVE_S`` so the backend knows it is still there. No backend at all
is ``NO_BACKEND``.

Ownership: the backend shows each client only its own jobs. Remote clients are told apart by their CurveZMQ
key; local ones by a token carried in the socket's routing id: one per process by default (inherited by
child processes through $LAYEREDIT_CLIENT_TOKEN, so a helper process can cancel the plug-in's job), or
``Client(info, token=...)``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from . import connection, greeting, shm, wire
from .errors import ErrorCode, ProtocolError
from .shm import Pool as SegmentPool
from .wire import Buffer, Message

log = logging.getLogger("layeredit.client")

PING_AFTER_S = 0.5
DEAD_AFTER_S = 1.4  # kept for callers; connect() waits PING_AFTER_S + DEAD_AFTER_S for a dead-pid backend
LOCAL_GRACE_S = 15.0  # a local backend whose process is alive but does not answer (machine under load)
REMOTE_TIMEOUT_S = 30.0  # a remote backend silent this long is gone (no pid to check over a network)
# connect's ping, local: a live backend that listens gets the grace (nothing listening: it fails after 1 s)
CHECK_TIMEOUT_S = LOCAL_GRACE_S
SEND_TIMEOUT_MS = 5000  # a send with no connection at all (e.g. our key was refused) gives up after this
KEEPALIVE_S = 5.0  # while jobs run, ping at least this often so the backend knows we are still here
TOKEN_ENV = "LAYEREDIT_CLIENT_TOKEN"
_FINAL = (wire.RESULT, wire.ERROR)
_WAITED = (wire.ACCEPTED, wire.JOB_STATUS, wire.PROGRESS, *_FINAL)
SHM_MIN_BYTES = shm.MIN_BYTES  # smaller buffers go inline
# a connection's ZMTP handshake done (libzmq >= 4.3; an older host's pyzmq: None, remote hellos resent on time)
_HANDSHAKE_EVENT: int | None = getattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED", None)


@dataclass
class Progress:
    job: str
    stage: str
    step: int
    total: int
    preview: Buffer | None = None


@dataclass
class Result:
    """A finished job. ``image`` is in the format the host sent; ``mask`` is gray u8 (the region the op
    changed, or the snapped selection); ``object_mask`` is the snapped object when the op also sends it (erase:
    ``meta["masks"] == ["region", "object"]``); ``candidates`` are extra images (e.g. Imagic's eta variants)."""

    job: str
    image: Buffer | None
    mask: Buffer | None = None
    candidates: list[Buffer] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    buffers: list[Buffer] = field(default_factory=list)
    object_mask: Buffer | None = None

    @property
    def selection_mask(self) -> Buffer | None:
        """What "select the snapped object" selects: the object itself when the op sent it (erase), not the
        grown and feathered region it repainted; for ops with one mask (snap, replace), that mask."""
        return self.object_mask if self.object_mask is not None else self.mask

    def named_masks(self) -> dict[str, Buffer]:
        """The mask buffers by the names ``meta["masks"]`` gives them (erase: region, object); a lone mask
        without names is ``"mask"``."""
        masks = [b for b in self.buffers if b.role == "mask"]
        names = self.meta.get("masks")
        if isinstance(names, list) and len(names) == len(masks) and all(isinstance(n, str) for n in names):
            return dict(zip(names, masks, strict=True))
        return {"mask": self.mask} if self.mask is not None else {}

    @classmethod
    def from_message(cls, msg: Message) -> Result:
        meta = dict(msg.content.get("meta") or {})
        masks = [b for b in msg.buffers if b.role == "mask"]
        names = meta.get("masks")
        ok = isinstance(names, list) and all(isinstance(n, str) for n in names)
        named = dict(zip(names, masks, strict=False)) if ok else {}
        return cls(
            job=msg.job or "",
            image=msg.buffer("image"),
            mask=masks[0] if masks else None,
            candidates=[b for b in msg.buffers if b.role == "candidate"],
            meta=meta,
            buffers=list(msg.buffers),
            object_mask=named.get("object"),
        )


@dataclass
class Event:
    """What ``pump()`` returns. ``type`` is a server message type (accepted, progress, result, error,
    job_status, jobs, capabilities, pong, bye); a dead backend is ``error`` with code ``backend_gone``."""

    type: str
    job: str | None
    message: Message | None = None
    progress: Progress | None = None
    result: Result | None = None
    error: ProtocolError | None = None

    @property
    def content(self) -> dict:
        return self.message.content if self.message else {}


def _error_of(msg: Message) -> ProtocolError:
    code = msg.content.get("code", ErrorCode.INTERNAL.value)
    try:
        code = ErrorCode(code)
    except ValueError:
        code = ErrorCode.INTERNAL
    return ProtocolError(code, str(msg.content.get("message", "")), msg.content.get("details") or {})


def default_token() -> str:
    """This process's owner token: $LAYEREDIT_CLIENT_TOKEN, else a fresh one put there for child processes."""
    token = "".join(c for c in os.environ.get(TOKEN_ENV, "") if c.isalnum())[:64]
    if not token:
        token = secrets.token_hex(16)
        os.environ[TOKEN_ENV] = token
    return token


def _routing_id(token: str) -> bytes:
    """``t:<token>:<random>``: the backend keys ownership on the token; the random tail keeps two sockets of
    one process apart (a ROUTER refuses a second peer with an identity already in use)."""
    clean = "".join(c for c in token if c.isalnum())[:64]
    if not clean:
        raise ValueError("a client token needs letters or digits")
    return f"t:{clean}:{secrets.token_hex(6)}".encode("ascii")


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class Client:
    """A DEALER socket to the backend's ROUTER, signing every message with the install key."""

    def __init__(
        self,
        info: connection.ConnectionInfo,
        context: zmq.Context | None = None,
        *,
        token: str | None = None,
        local_grace_s: float = LOCAL_GRACE_S,
        heartbeat_timeout_s: float | None = None,
        shm: str = "auto",
    ):
        if shm not in ("auto", "off"):  # auto: shared memory when hello proves the same host (SPEC.md 8)
            raise ValueError("shm must be 'auto' or 'off'")
        self.shm_mode = shm
        self.shm_active = False  # decided by hello()
        self.shm_min_bytes = SHM_MIN_BYTES
        self._pool = SegmentPool()  # our segments, reused from job to job (inputs and offered result space)
        self._unanswered: set[str] = set()  # submits whose inputs are in the pool and not yet mapped
        self.info = info
        self._key = info.key_bytes
        self._ctx = context or zmq.Context.instance()
        self.token = token or default_token()
        self.remote = connection.is_remote(info)
        self.local_grace_s = local_grace_s
        self.heartbeat_timeout_s = heartbeat_timeout_s or _env_float(
            "LAYEREDIT_HEARTBEAT_TIMEOUT", REMOTE_TIMEOUT_S
        )
        self._curve: tuple[bytes, bytes] | None = None  # (public, secret): the same on every fresh socket
        if info.curve_serverkey:
            if info.curve_publickey and info.curve_secretkey:  # admitted by the server's authorized keys
                self._curve = (info.curve_publickey.encode("ascii"), info.curve_secretkey.encode("ascii"))
            else:
                self._curve = zmq.curve_keypair()
        self._monitor: zmq.Socket | None = None  # remote: this socket's connections (``first_lost``)
        self._handshaken = self._lost = self._proven = False
        self._sock = self._open_socket()
        self._inbox: list[Message] = []
        self._active: set[str] = set()  # jobs submitted or fetched that have not finished
        self._last_heard = time.monotonic()
        self._ping_sent: float | None = None
        self._last_ping = 0.0
        self._gone = False
        self._sent = 0  # messages sent (pings excluded) ...
        self._read_upto = (
            0  # ... of which the backend has certainly read this many (a later ping was answered)
        )
        self._pings: dict[str, int] = {}  # ping id -> _sent when it left
        self.capabilities: dict = {}

    def _open_socket(self) -> zmq.Socket:
        """A DEALER connected to the backend, with a fresh routing id (same owner token)."""
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)  # no peer at all (key refused): never hang
        sock.setsockopt(zmq.ROUTING_ID, _routing_id(self.token))
        if self._curve is not None:
            sock.curve_serverkey = (self.info.curve_serverkey or "").encode("ascii")
            sock.curve_publickey, sock.curve_secretkey = self._curve
        self._handshaken = self._lost = self._proven = False
        if self.remote and _HANDSHAKE_EVENT is not None:  # watched before connecting: no event is missed
            self._monitor = sock.get_monitor_socket(_HANDSHAKE_EVENT | zmq.EVENT_DISCONNECTED)
        sock.connect(self.info.endpoint)
        return sock

    @property
    def watches_first(self) -> bool:
        """Whether ``first_lost`` can tell (a remote socket and a libzmq that reports handshakes): without it a
        remote first message is resent on the local schedule."""
        return self._monitor is not None

    def first_lost(self) -> bool:
        """Whether the message a remote ``greet`` is waiting on (a hello or ping) can no longer be answered: a
        connection finished its handshake, so ZeroMQ sent the message on it, and then closed (the backend's
        guard cut it, or the network dropped it). Before a handshake succeeds ZeroMQ keeps the message and
        sends it on the connection it makes next, so a slow handshake is not a loss (protocol/greeting.py).
        Watched for the socket's whole life (``_watch_next`` starts each greet afresh): a later greet on an
        answered socket is lost only if the network dropped that connection and the guard then cut the
        unproven one ZeroMQ made in its place. Remote sockets only; False otherwise."""
        while self._monitor is not None and not self._lost and self._next_event():
            pass
        return self._lost

    def _next_event(self) -> bool:
        """Read one monitor event (False: none waiting)."""
        assert self._monitor is not None
        try:
            event = parse_monitor_message(self._monitor.recv_multipart(zmq.NOBLOCK))["event"]
        except zmq.Again:
            return False
        except (ValueError, IndexError):
            return True
        if event == _HANDSHAKE_EVENT:
            self._handshaken = True
        elif event == zmq.EVENT_DISCONNECTED and self._handshaken:
            self._lost, self._handshaken = True, False  # the next connection must shake hands again
        return True

    def _watch_next(self) -> None:
        """Before a greet's message goes out: read what happened to earlier connections, then count only a
        loss of the one that carries it."""
        while self._monitor is not None and self._next_event():
            pass
        self._lost = False

    def _unwatch(self) -> None:
        """Stop watching this socket's connections (the socket goes)."""
        if self._monitor is None:
            return
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:  # the socket is already closed
            pass
        self._monitor.close(linger=0)
        self._monitor = None

    def reopen(self) -> None:
        """Replace the socket with a fresh one (a new connection, a new peer to the backend's guard), for a
        first message that went unanswered. Only while nothing else travels on it: jobs in flight would lose
        their answers (the backend sends them to the old socket's routing id). ``fd`` changes."""
        if self._active or self._unanswered:
            raise RuntimeError("reopen() with jobs in flight")
        self._unwatch()
        self._sock.close(linger=0)
        self._sock = self._open_socket()
        self._last_heard = time.monotonic()
        self._ping_sent = None
        self._sent = self._read_upto = 0
        self._pings.clear()

    # -- connecting -------------------------------------------------------------------------------
    @classmethod
    def connect(
        cls,
        connection_file: str | Path | None = None,
        *,
        check: bool = True,
        shm: str = "auto",
        check_limit: float | None = None,
    ) -> Client:
        """Read the connection file and connect; with ``check``, ping it (``greet``: resent on a fresh
        connection while unanswered). A local backend that never answers is NO_BACKEND when its process is gone
        or nothing listens at its address (start one), TIMEOUT when it runs and listens (busy or refusing:
        starting another would not help); a remote one is NO_BACKEND (wrong address, or a key not allowed).
        The ping waits ``CHECK_TIMEOUT_S`` (local) or the heartbeat timeout (remote), at most ``check_limit``: what
        is left of a caller's own deadline (``launcher.hello_check``'s ``--wait``, ``Launcher.wait``)."""
        info = connection.read(connection_file)
        if not connection.pid_alive(info.pid):
            raise ProtocolError(
                ErrorCode.NO_BACKEND,
                f"The backend (pid {info.pid}) is not running; start it with: python -m backend serve",
            )
        client = cls(info, shm=shm)
        if check:
            try:
                default = client.heartbeat_timeout_s if client.remote else CHECK_TIMEOUT_S
                client.greet(
                    lambda: Message(wire.PING), default if check_limit is None else min(default, check_limit)
                )
            except ProtocolError as exc:
                client.close(linger_ms=0)
                if not client.remote:
                    raise
                raise ProtocolError(
                    ErrorCode.NO_BACKEND,
                    f"Nothing answers at {info.endpoint}; check the address and that its admin has allowed "
                    "this connection's key (python -m backend keys list)",
                ) from exc
        return client

    def greet(self, make: Callable[[], Message], timeout: float) -> Message:
        """Send a connection's first request (``make()``: hello, or connect's ping) and return its reply; while
        it goes unanswered it is sent again on a fresh socket (``reopen``), on ``greeting.Tries``' schedule:
        the backend's guard may cut a connection before reading its first message (protocol/greeting.py); a
        remote one only once it was lost (``first_lost``), so a slow handshake is not restarted.
        With jobs in flight on this socket there is one try, as ``request``; likewise once this socket was
        answered (``_proven``: the backend read a signed message from it, so its guard cannot cut the connection
        unread), except that a remote one is still resent when seen lost (its connection dropped, and the
        guard cut the unproven one ZeroMQ made in its place). An error reply raises; no answer
        within ``timeout`` raises ``greeting.unanswered`` for a local backend (what is true of it), TIMEOUT for
        a remote one."""
        self._watch_next()
        tries = greeting.Tries(timeout, time.monotonic(), remote=self.watches_first)
        # an answered socket's connection is proven (6bbcc59: a later greet was resent at 1/3/7 s)
        resend_ok = not self._proven or self.watches_first
        msg = self.send(make())
        while True:
            now = time.monotonic()
            fresh_ok = resend_ok and not (self._active or self._unanswered)
            wait = tries.wait_s(now) if fresh_ok else max(0.0, tries.started + timeout - now)
            try:
                reply = self._wait(lambda m, sent=msg: m.parent == sent.id, wait)
            except ProtocolError as exc:
                if exc.code not in (ErrorCode.TIMEOUT, ErrorCode.BACKEND_GONE):
                    raise
                now = time.monotonic()
                if exc.code == ErrorCode.TIMEOUT and not tries.expired(now):
                    if fresh_ok and tries.due(now, lost=self.first_lost()):
                        if not self.remote and greeting.listening(self.info.endpoint) is False:
                            raise greeting.unanswered(self.info, tries.count, now - tries.started) from None
                        log.info(
                            "no answer to %s on try %d: resending on a new connection", msg.type, tries.count
                        )
                        self.reopen()
                        tries.resent(now)
                        msg = self.send(make())
                    continue
                if self.remote and exc.code == ErrorCode.TIMEOUT:
                    raise ProtocolError(
                        exc.code, f"No answer within {timeout:g} s ({greeting.tries_words(tries.count)})."
                    ) from None
                if self.remote:
                    raise
                raise greeting.unanswered(self.info, tries.count, now - tries.started) from exc
            if reply.type == wire.ERROR:
                raise _error_of(reply)
            return reply

    def close(self, linger_ms: int = 1000) -> None:
        """Close the socket; messages already sent (e.g. a submit, a release) still get ``linger_ms`` to be
        read. The backend reads only a few messages ahead per connection (SPEC.md 1), and ZeroMQ discards
        what it has not read when the connection goes, so close first waits for a ping sent after them."""
        self._await_submits(linger_ms / 1000)
        self._await_read(linger_ms / 1000)
        self._unwatch()
        self._sock.close(linger=linger_ms)
        self._pool.close()  # the backend keeps its own mappings of inputs it is still using

    def _await_read(self, timeout: float) -> None:
        if self._gone or self._read_upto >= self._sent or timeout <= 0:
            return
        try:
            self.ping(timeout=timeout)
        except ProtocolError:  # gone or too slow: close anyway, as before
            pass

    def _await_submits(self, timeout: float) -> None:
        """Before closing, give submits whose input is in shared memory time to be answered (the backend maps
        the segment before it replies), so unlinking our pool cannot pull an input from under a submit."""
        deadline = time.monotonic() + timeout
        while self._unanswered and not self._gone and time.monotonic() < deadline:
            if self._sock.poll(20, zmq.POLLIN):
                while (msg := self._recv_ready()) is not None:
                    self._keep(msg)

    # -- shared memory (SPEC.md section 8) ----------------------------------------------------------
    def _check_shm(self, caps: dict) -> bool:
        """Same machine, same user, same /dev/shm: the backend's identity matches ours and we can read the
        probe segment it advertises, holding the token its signed hello carries."""
        info = caps.get("shm")
        ours = shm.host_identity()
        if self.shm_mode == "off" or not isinstance(info, dict) or ours is None:
            return False
        if any(info.get(k) != v for k, v in ours.items()):  # boot id, uid, pid namespace
            return False
        token = str(info.get("token", ""))
        probe = {"shm": info.get("probe"), "offset": 0, "size": 32}
        try:
            view = shm.open_readonly(probe, shm.SERVER_PREFIX, 32)
        except ProtocolError as exc:
            log.info("shared memory not usable with this backend (%s): buffers go inline", exc)
            return False
        return bool(token) and bytes(view[: len(token)]) == token.encode("ascii")

    def _send_submit(self, msg: Message) -> None:
        """Send a submit; with shm active its big buffers go through a pooled segment (one copy, no hashing)
        and a second pooled segment is offered for the result (image + mask fit)."""
        job = msg.job or ""
        if self.shm_active:
            msg.content["shm_results"] = True
            self._to_shm(msg, job)
            self._offer_result_space(msg, job)
        try:
            self.send(msg)
        except BaseException:
            self._pool.finished(job)
            raise
        if any(b.location is not None for b in msg.buffers):
            self._unanswered.add(msg.id)
        msg.buffers = []  # our views of the pool

    def _to_shm(self, msg: Message, job: str) -> None:
        big = [i for i, b in enumerate(msg.buffers) if b.location is None and b.nbytes >= self.shm_min_bytes]
        if not big:
            return
        offsets, total = [], 0
        for i in big:
            offsets.append(total)
            total = shm.aligned(total + msg.buffers[i].nbytes)
        try:
            seg = self._pool.take(total, job)
        except OSError as exc:
            log.info("cannot create a shared-memory segment (%s): buffers go inline", exc)
            return
        if seg is None:  # every pooled segment is busy (results still held): inline this time
            return
        for i, off in zip(big, offsets, strict=True):
            b = msg.buffers[i]
            seg.write(off, b.data)
            loc = {"shm": seg.name, "offset": off, "size": b.nbytes}
            msg.buffers[i] = dataclasses.replace(b, data=seg.view(off, b.nbytes), location=loc)

    def _offer_result_space(self, msg: Message, job: str) -> None:
        """A same-size result (image, plus up to two u8 masks: erase sends its edited region and the snapped
        object) is written by the backend straight into our segment: pages it already has, so no fresh shared
        memory is allocated per job on either side."""
        image = msg.buffer("image")
        if image is None or image.nbytes < self.shm_min_bytes:
            return
        try:
            seg = self._pool.take(
                shm.aligned(image.nbytes) + 2 * shm.aligned(image.width * image.height), job
            )
        except OSError:
            return
        if seg is not None:
            msg.content["shm_result"] = {"shm": seg.name, "offset": 0, "size": seg.size}

    def _resolve_result(self, location: Any, expected: int) -> memoryview:
        """Map a result read-only (checked: ours, 0600, in bounds): in the backend's own segment (unlinked when
        we release the job) or in the space we offered (busy in our pool while the view lives). Not copied."""
        name = location.get("shm") if isinstance(location, dict) else None
        if isinstance(name, str) and name.startswith(shm.CLIENT_PREFIX):
            view = shm.open_readonly(location, shm.CLIENT_PREFIX, expected)
            self._pool.handed_out(name, view)
            return view
        return shm.open_readonly(location, shm.SERVER_PREFIX, expected)

    def _undecodable(self, frames: Any, exc: ProtocolError) -> Message | None:
        """A signed result whose segment is gone (evicted before we mapped it) becomes an error for its job,
        so a waiting caller does not wait forever; anything else is dropped and logged."""
        log.warning("dropped an undecodable message from the backend: %s", exc)
        try:
            header = wire.decode_header(wire._view(frames[2]))
        except ProtocolError:
            return None
        self._unanswered.discard(header["parent"])
        if header["type"] != wire.RESULT or not header["job"]:
            return None
        self._pool.finished(header["job"])
        err = ProtocolError(
            ErrorCode.RESULT_EXPIRED,
            f"The result of job {header['job']} could not be read ({exc}); run it again.",
        )
        return Message(wire.ERROR, job=header["job"], parent=header["parent"], content=err.to_json())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending and receiving --------------------------------------------------------------------
    def send(self, msg: Message) -> Message:
        """Sign and send ``msg`` (buffers without copies). NO_BACKEND when there is no connection to queue it
        on (a remote server that refused this client's key drops the connection for good)."""
        try:
            self._sock.send_multipart(wire.encode(msg, self._key), copy=False)
            if msg.type == wire.PING:
                self._pings[msg.id] = self._sent
                if len(self._pings) > 64:  # unanswered pings of a vanished backend: keep the newest
                    self._pings.pop(next(iter(self._pings)))
            else:
                self._sent += 1
        except zmq.Again:
            raise ProtocolError(
                ErrorCode.NO_BACKEND,
                f"Cannot reach the backend at {self.info.endpoint} (no connection). Check that it runs; for a "
                "remote backend, that its admin has admitted this connection's key (python -m backend keys list).",
            ) from None
        return msg

    def _recv_ready(self) -> Message | None:
        """Receive one message if one is waiting (never blocks); bad signatures are dropped and logged."""
        try:
            frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        self._heard()
        try:
            msg = wire.decode(frames, self._key, self._resolve_result)
            self._proven = True  # the backend answers only a peer whose signed message it has read
            if msg.type == wire.PONG and msg.parent in self._pings:  # everything sent before it was read
                self._read_upto = max(self._read_upto, self._pings.pop(msg.parent))
            self._unanswered.discard(msg.parent or "")  # answered: its input is mapped, or never will be
            if msg.type in _FINAL and msg.job:  # the backend is done with the job's pooled segments
                self._pool.finished(msg.job)
            return msg
        except wire.SignatureError as exc:
            log.warning("dropped a message from the backend: %s", exc)
        except ProtocolError as exc:
            return self._undecodable(frames, exc)
        return None

    def _heard(self) -> None:
        self._last_heard = time.monotonic()
        self._ping_sent = None

    def _check_alive(self) -> None:
        """Ping after silence (and every KEEPALIVE_S while jobs run); raise BACKEND_GONE when a local
        backend's process has died, or when the backend stays silent past its grace/heartbeat timeout."""
        now = time.monotonic()
        if self._ping_sent is not None:
            waited = now - self._ping_sent
            if self.remote and waited > self.heartbeat_timeout_s:
                self._declare_gone(
                    f"The backend at {self.info.endpoint} has not answered for {waited:.0f} s (network down, "
                    "or the backend stopped). Check the connection and the backend, then reconnect."
                )
            if not self.remote and not connection.pid_alive(self.info.pid):
                self._declare_gone(
                    f"The backend (pid {self.info.pid}) has stopped (killed or crashed). "
                    "Restart it with: python -m backend serve"
                )
            if not self.remote and waited > self.local_grace_s:
                self._declare_gone(
                    f"The backend (pid {self.info.pid}) is running but has not answered for {waited:.0f} s. "
                    "Restart it with: python -m backend serve"
                )
            return
        if now - self._last_heard > PING_AFTER_S:
            self._send_ping(now)
        else:
            self._keepalive()

    def _keepalive(self) -> None:
        """While jobs run, ping every KEEPALIVE_S even when progress keeps arriving, so the backend can tell
        a client that went away (its jobs may be cancelled after ``--abandon-after``) from a busy one."""
        now = time.monotonic()
        if self._active and self._ping_sent is None and now - self._last_ping > KEEPALIVE_S:
            self._send_ping(now)

    def _send_ping(self, now: float) -> None:
        self._ping_sent = self._last_ping = now
        try:
            self.send(Message(wire.PING))
        except ProtocolError:  # unsent counts as unanswered: the timeouts above decide
            pass

    def _declare_gone(self, message: str) -> None:
        self._gone = True
        raise ProtocolError(ErrorCode.BACKEND_GONE, message)

    def _wait(self, match: Callable[[Message], bool], timeout: float | None) -> Message:
        """Block until a message matching ``match`` arrives; others are kept for ``pump``/later waits."""
        self._keepalive()
        for i, m in enumerate(self._inbox):
            if match(m):
                return self._inbox.pop(i)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._last_heard = max(self._last_heard, time.monotonic() - PING_AFTER_S)
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ProtocolError(ErrorCode.TIMEOUT, f"No answer within {timeout:g} s.")
            poll_ms = 100 if remaining is None else max(1, min(100, int(remaining * 1000)))
            if self._sock.poll(poll_ms, zmq.POLLIN):
                while (msg := self._recv_ready()) is not None or self._sock.getsockopt(
                    zmq.EVENTS
                ) & zmq.POLLIN:
                    if msg is None:
                        continue
                    if match(msg):
                        return msg
                    self._keep(msg)
            self._check_alive()

    def _keep(self, msg: Message) -> None:
        if msg.type in (wire.PONG,):
            return
        self._inbox.append(msg)
        if len(self._inbox) > 10_000:  # a blocking caller never pumps: keep finals, drop old progress
            self._inbox = [m for m in self._inbox if m.type != wire.PROGRESS][-10_000:]

    def request(self, msg: Message, timeout: float | None = 10.0) -> Message:
        """Send and wait for the reply (``parent`` == our id); an ``error`` reply raises ProtocolError."""
        self.send(msg)
        reply = self._wait(lambda m: m.parent == msg.id, timeout)
        if reply.type == wire.ERROR:
            raise _error_of(reply)
        return reply

    # -- the API the host plugins use -------------------------------------------------------------
    def ping(self, timeout: float = 2.0) -> None:
        self.request(Message(wire.PING), timeout)

    def hello(self, timeout: float = 60.0) -> dict:
        """Capabilities: backend/protocol versions, devices, ops (OpSpec.to_json), models, limits. Resent on a
        fresh connection while unanswered (``greet``)."""
        reply = self.greet(lambda: Message(wire.HELLO, content={"client": "layeredit-protocol"}), timeout)
        self.accept_capabilities(reply.content)
        return reply.content

    def accept_capabilities(self, caps: dict) -> None:
        """Take the backend's answer to our hello, however it arrived: through ``hello()``, or as a
        ``capabilities`` event from ``pump()`` (a host's event loop, e.g. Krita's, must not block on hello).
        Sets the limits checked before each submit and decides shared memory (``_check_shm``): a host that only
        stored the capabilities sent every layer inline, every byte signed, ~0.7 s more per 4096^2 erase."""
        self.capabilities = caps
        self.shm_active = self._check_shm(caps)

    def submit(
        self,
        op: str,
        params: dict | None = None,
        image: Buffer | None = None,
        selection: Buffer | None = None,
        extra: list[Buffer] | None = None,
    ) -> str:
        """Queue a job and return its id at once (the client picks the id; ``accepted`` follows as an event)."""
        buffers: list[Buffer] = []
        if image is not None:
            image.role = "image"
            buffers.append(image)
        if selection is not None:
            selection.role = "selection"
            buffers.append(selection)
        buffers.extend(extra or [])
        self._check_limits(buffers)
        job = wire.new_id()
        msg = Message(wire.SUBMIT, job=job, op=op, params=dict(params or {}), buffers=list(buffers))
        self._send_submit(msg)
        self._active.add(job)
        return job

    def _check_limits(self, buffers: list[Buffer]) -> None:
        limits = self.capabilities.get("limits") or {}
        max_pixels = limits.get("max_pixels")
        max_bytes = limits.get("max_message_bytes")
        for b in buffers:
            if max_bytes and b.nbytes > max_bytes:  # the backend's ZMQ_MAXMSGSIZE would drop the connection
                raise ProtocolError(
                    ErrorCode.TOO_LARGE,
                    f"The {b.role} buffer is {b.nbytes} bytes; this backend takes at most {max_bytes} per "
                    "buffer. Send a smaller region, or start the backend with a larger --max-message-mb.",
                )
            if max_pixels and b.width * b.height > max_pixels:
                raise ProtocolError(
                    ErrorCode.TOO_LARGE,
                    f"The {b.role} is {b.width}x{b.height} pixels; this backend takes at most {max_pixels}. "
                    "Crop or scale it down, or start the backend with a larger --max-pixels.",
                )

    def cancel(self, job_id: str) -> None:
        """Ask to stop a job; it ends with an ``error`` whose code is ``cancelled`` (fire and forget)."""
        self.send(Message(wire.CANCEL, job=job_id))

    def status(self, job_id: str, timeout: float = 10.0) -> dict:
        return self.request(Message(wire.STATUS, job=job_id), timeout).content

    def jobs(self, timeout: float = 10.0) -> list[dict]:
        return list(self.request(Message(wire.LIST), timeout).content.get("jobs", []))

    def release(self, job_id: str) -> None:
        """Tell the backend we have the result, so it frees the memory (fire and forget)."""
        self.send(Message(wire.RELEASE, job=job_id))

    def shutdown(self, timeout: float = 10.0) -> None:
        self.request(Message(wire.SHUTDOWN), timeout)

    def run(
        self,
        op: str,
        params: dict | None = None,
        image: Buffer | None = None,
        selection: Buffer | None = None,
        on_progress: Callable[[Progress], Any] | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Submit and block until the result; progress goes to ``on_progress``. On timeout or an exception
        in the callback the job is cancelled and the exception raised."""
        job = self.submit(op, params, image=image, selection=selection)
        return self.wait(job, on_progress=on_progress, timeout=timeout)

    def fetch(
        self, job_id: str, on_progress: Callable[[Progress], Any] | None = None, timeout: float | None = None
    ) -> Result:
        """Get a job's result by id, from any client (e.g. after a reconnect). A job still running is
        re-attached to this client: its progress and result come here; this call waits for them."""
        self.attach(job_id)
        return self.wait(job_id, on_progress=on_progress, timeout=timeout)

    def attach(self, job_id: str) -> None:
        """``fetch`` without waiting (Qt): the job's progress and its result or error arrive through ``pump``,
        and its liveness is checked like a job submitted here."""
        self.send(Message(wire.FETCH, job=job_id))
        self._active.add(job_id)

    def wait(
        self, job_id: str, on_progress: Callable[[Progress], Any] | None = None, timeout: float | None = None
    ) -> Result:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                msg = self._wait(lambda m: m.job == job_id and m.type in _WAITED, remaining)
                if msg.type in (wire.ACCEPTED, wire.JOB_STATUS):  # consumed so they do not pile up
                    continue
                if msg.type == wire.PROGRESS:
                    if on_progress is not None:
                        on_progress(self._progress(msg))
                    continue
                self._active.discard(job_id)
                if msg.type == wire.ERROR:
                    raise _error_of(msg)
                self.release(job_id)
                return Result.from_message(msg)
        except ProtocolError as exc:
            if exc.code == ErrorCode.TIMEOUT:
                self.cancel(job_id)
            raise
        except BaseException:
            if not self._gone:
                self.cancel(job_id)
            raise

    @staticmethod
    def _progress(msg: Message) -> Progress:
        c = msg.content
        return Progress(
            msg.job or "",
            str(c.get("stage", "")),
            int(c.get("step", 0)),
            int(c.get("total", 0)),
            msg.buffer("preview"),
        )

    # -- non-blocking (Qt) ------------------------------------------------------------------------
    @property
    def fd(self) -> int:
        """The file descriptor for a QSocketNotifier (Read). Edge-triggered: always drain with ``pump``."""
        return self._sock.getsockopt(zmq.FD)

    def pump(self) -> list[Event]:
        """Drain every waiting message into events; never blocks. Also checks liveness while jobs run."""
        messages, self._inbox = self._inbox, []
        self._pool.trim()
        while self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            msg = self._recv_ready()
            if msg is not None and msg.type != wire.PONG:
                messages.append(msg)
        events = [self._event(m) for m in messages]
        if self._active and not messages:
            try:
                self._check_alive()
            except ProtocolError as exc:
                events.extend(Event(wire.ERROR, job, error=exc) for job in sorted(self._active))
                self._active.clear()
        elif self._active:
            self._keepalive()
        return events

    def _event(self, msg: Message) -> Event:
        if msg.type in _FINAL and msg.job:
            self._active.discard(msg.job)
        if msg.type == wire.PROGRESS:
            return Event(msg.type, msg.job, msg, progress=self._progress(msg))
        if msg.type == wire.RESULT:
            if msg.job:
                self.release(msg.job)
            return Event(msg.type, msg.job, msg, result=Result.from_message(msg))
        if msg.type == wire.ERROR:
            return Event(msg.type, msg.job, msg, error=_error_of(msg))
        return Event(msg.type, msg.job, msg)

"""One client for the backend, two ways to drive it.

Blocking (GIMP plug-ins are their own process)::

    client = Client.connect()
    result = client.run("erase", {"snap": True}, image=buf, selection=sel, on_progress=print)

Non-blocking (Krita's Qt loop): watch ``client.fd`` with a QSocketNotifier(Read) and call ``client.pump()``
when it fires, right after every ``submit``/``cancel``/``fetch`` call (ZMQ_FD is edge-triggered and a send
can consume the edge), and from a ~250 ms QTimer (liveness: a dead backend is reported within 2 s as an
``error`` event with code ``backend_gone``). ``pump()`` never blocks and returns a list of ``Event``.

A dead backend (killed, crashed) is noticed within 2 s while waiting: the client pings after 0.5 s of
silence and gives up 1.5 s after an unanswered ping (``BACKEND_GONE``). No backend at all is ``NO_BACKEND``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from . import connection, wire
from .errors import ErrorCode, ProtocolError
from .wire import Buffer, Message

log = logging.getLogger("layeredit.client")

PING_AFTER_S = 0.5
DEAD_AFTER_S = 1.4  # after an unanswered ping: PING_AFTER_S + DEAD_AFTER_S + a 0.1 s poll < 2 s
_FINAL = (wire.RESULT, wire.ERROR)
_WAITED = (wire.ACCEPTED, wire.JOB_STATUS, wire.PROGRESS, *_FINAL)


@dataclass
class Progress:
    job: str
    stage: str
    step: int
    total: int
    preview: Buffer | None = None


@dataclass
class Result:
    """A finished job. ``image`` is in the format the host sent; ``mask`` is gray u8 (e.g. the snapped
    selection); ``candidates`` are extra images (e.g. Imagic's eta variants)."""

    job: str
    image: Buffer | None
    mask: Buffer | None = None
    candidates: list[Buffer] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    buffers: list[Buffer] = field(default_factory=list)

    @classmethod
    def from_message(cls, msg: Message) -> Result:
        return cls(
            job=msg.job or "",
            image=msg.buffer("image"),
            mask=msg.buffer("mask"),
            candidates=[b for b in msg.buffers if b.role == "candidate"],
            meta=dict(msg.content.get("meta") or {}),
            buffers=list(msg.buffers),
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


class Client:
    """A DEALER socket to the backend's ROUTER, signing every message with the install key."""

    def __init__(self, info: connection.ConnectionInfo, context: zmq.Context | None = None):
        self.info = info
        self._key = info.key_bytes
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if info.curve_serverkey:
            public, secret = zmq.curve_keypair()
            self._sock.curve_serverkey = info.curve_serverkey.encode("ascii")
            self._sock.curve_publickey, self._sock.curve_secretkey = public, secret
        self._sock.connect(info.endpoint)
        self._inbox: list[Message] = []
        self._active: set[str] = set()  # jobs submitted or fetched that have not finished
        self._last_heard = time.monotonic()
        self._ping_sent: float | None = None
        self._gone = False
        self.capabilities: dict = {}

    # -- connecting -------------------------------------------------------------------------------
    @classmethod
    def connect(cls, connection_file: str | Path | None = None, *, check: bool = True) -> Client:
        """Read the connection file and connect; with ``check``, ping it (NO_BACKEND if nothing answers)."""
        info = connection.read(connection_file)
        if not connection.pid_alive(info.pid):
            raise ProtocolError(
                ErrorCode.NO_BACKEND,
                f"The backend (pid {info.pid}) is not running; start it with: python -m backend serve",
            )
        client = cls(info)
        if check:
            try:
                client.ping(timeout=PING_AFTER_S + DEAD_AFTER_S)
            except ProtocolError as exc:
                client.close(linger_ms=0)
                raise ProtocolError(
                    ErrorCode.NO_BACKEND,
                    f"Nothing answers at {info.endpoint}; start the backend with: python -m backend serve",
                ) from exc
        return client

    def close(self, linger_ms: int = 1000) -> None:
        """Close the socket; messages already sent (e.g. a submit) still get ``linger_ms`` to leave."""
        self._sock.close(linger=linger_ms)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending and receiving --------------------------------------------------------------------
    def send(self, msg: Message) -> Message:
        """Sign and send ``msg`` (buffers without copies)."""
        self._sock.send_multipart(wire.encode(msg, self._key), copy=False)
        return msg

    def _recv_ready(self) -> Message | None:
        """Receive one message if one is waiting (never blocks); bad signatures are dropped and logged."""
        try:
            frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        self._heard()
        try:
            return wire.decode(frames, self._key)
        except wire.SignatureError as exc:
            log.warning("dropped a message from the backend: %s", exc)
        except ProtocolError as exc:
            log.warning("dropped an undecodable message from the backend: %s", exc)
        return None

    def _heard(self) -> None:
        self._last_heard = time.monotonic()
        self._ping_sent = None

    def _check_alive(self) -> None:
        """Ping after silence; raise BACKEND_GONE once a ping stays unanswered too long."""
        now = time.monotonic()
        if self._ping_sent is not None and now - self._ping_sent > DEAD_AFTER_S:
            self._gone = True
            raise ProtocolError(
                ErrorCode.BACKEND_GONE,
                "The backend stopped answering (killed or crashed). Restart it with: python -m backend serve",
            )
        if self._ping_sent is None and now - self._last_heard > PING_AFTER_S:
            self.send(Message(wire.PING))
            self._ping_sent = now

    def _wait(self, match: Callable[[Message], bool], timeout: float | None) -> Message:
        """Block until a message matching ``match`` arrives; others are kept for ``pump``/later waits."""
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
        """Capabilities: backend/protocol versions, devices, ops (OpSpec.to_json), models, limits."""
        reply = self.request(Message(wire.HELLO, content={"client": "layeredit-protocol"}), timeout)
        self.capabilities = reply.content
        return reply.content

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
        self.send(Message(wire.SUBMIT, job=job, op=op, params=dict(params or {}), buffers=buffers))
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
        self.send(Message(wire.FETCH, job=job_id))
        self._active.add(job_id)
        return self.wait(job_id, on_progress=on_progress, timeout=timeout)

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

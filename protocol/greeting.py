"""A host's first message to the backend (hello, or connect's ping): resent on a fresh connection when it goes
unanswered, and what to say when no try was answered.

Why: the backend's PeerGuard (backend/guard.py) may cut a connection whose signed first message it has not
read yet (past 64 unproven connections at once, or while a flood makes it wary). ZeroMQ reconnects on its own,
but the message written to the cut connection is gone, so the host waited its whole timeout (60 s for a live
local backend) and then told the user to start a backend that was running. A fresh socket (a new routing id
and TCP connection) is a new peer to the guard, so the message is simply sent again on one: the first resend
after ``FIRST_GAP_S``, the gaps doubling (a flood gets time to pass), and none in the second half of the overall
timeout, so the last try keeps at least half of it (a backend that is only slow still has time to answer).

A REMOTE first message is resent only when it cannot have been answered: the connection that carried it
finished its ZMTP handshake (so the message went out on it) and was then closed (the guard's cut, or the network
dropping it) with no answer. Until the handshake succeeds ZeroMQ holds the message in the socket and sends it
on whatever connection it makes next, so a CurveZMQ handshake slower than ``FIRST_GAP_S`` (a GPU box over a
slow network) is waited for, not restarted; and once it went out on a connection that is still up the answer
can only be slow. The client learns both from the socket's monitor (``Client.first_lost``).

Only a FIRST message is resent: once the backend answered a socket (its signed message was read: the guard never
cuts a proven connection), a later hello or ping on it is sent once and waited for (``Client.greet``); a remote
one is still resent if its monitor sees the connection that carried it lost (the network dropped the proven one
and the guard cut the unproven one in its place).

Stdlib only: the Krita plugin's widget-free logic imports it without pyzmq.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from . import connection
from .errors import ErrorCode, ProtocolError

# a local backend answers a hello within milliseconds; a cut is seen within the guard's pass
FIRST_GAP_S = 1.0
# a remote try is looked at this often for a closed connection once a resend may be due
LOST_POLL_S = 0.25


@dataclass
class Tries:
    """When to resend the first message on a fresh connection, within ``timeout_s`` from ``started``."""

    timeout_s: float
    started: float
    first_gap_s: float = FIRST_GAP_S
    count: int = 1  # tries sent so far (the first goes out with the connection)
    remote: bool = False  # resend only a try that was lost (``lost`` in ``due``), not on the clock alone
    next_at: float = field(init=False)

    def __post_init__(self) -> None:
        self.next_at = self.started + self.first_gap_s

    @property
    def last_start(self) -> float:
        """No try starts later than this: the last one keeps at least half the timeout."""
        return self.started + self.timeout_s / 2

    def due(self, now: float, lost: bool = False) -> bool:
        """Resend now (on a fresh connection). Local: on the schedule. Remote: only a try that was ``lost`` (its
        connection closed after the handshake, unanswered), and no sooner than the schedule (a flood gets time
        to pass); then even in the second half of the timeout, as waiting on could never be answered."""
        if self.expired(now) or self.next_at > now:
            return False
        if self.remote:
            return lost
        return self.next_at <= self.last_start

    def resent(self, now: float) -> None:
        self.count += 1
        self.next_at = now + self.first_gap_s * 2 ** (self.count - 1)

    def expired(self, now: float) -> bool:
        return now - self.started >= self.timeout_s

    def wait_s(self, now: float) -> float:
        """How long to wait for an answer before the next resend or the end (0: act now). Remote: at most
        ``LOST_POLL_S`` once a resend may be due, to look whether the try was lost."""
        end = self.started + self.timeout_s
        if self.remote:
            upto = min(end, max(self.next_at, now + LOST_POLL_S))
        else:
            upto = self.next_at if self.next_at <= self.last_start else end
        return max(0.0, min(upto, end) - now)


def listening(endpoint: str, timeout: float = 1.0) -> bool | None:
    """Whether something accepts connections at ``endpoint`` (None: cannot tell: another transport, or no Unix
    sockets here). Tells a backend that is busy or refusing (it accepts, never answers) from a connection file
    whose pid was reused by another program (nothing listens there). ``ipc://`` (which connection.py accepts) is
    a Unix socket: a path, or ``@name`` in Linux's abstract namespace, as ZeroMQ reads it."""
    if endpoint.startswith("ipc://"):
        return _unix_listening(endpoint[len("ipc://") :], timeout)
    if not endpoint.startswith("tcp://"):
        return None
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _unix_listening(path: str, timeout: float) -> bool | None:
    """``listening`` for an ipc:// endpoint's Unix socket (None where this Python has no Unix sockets)."""
    family = getattr(socket, "AF_UNIX", None)
    if family is None or not path:
        return None
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            return True
    except (OSError, ValueError):  # no such file, a stale socket file (refused), not a socket
        return False


def tries_words(tries: int) -> str:
    return "1 try" if tries == 1 else f"{tries} tries, each on a new connection"


def unanswered(info: connection.ConnectionInfo, tries: int, waited: float) -> ProtocolError:
    """The error when a LOCAL backend answered none of ``tries`` first messages in ``waited`` seconds, saying
    what is true: its process is gone or nothing listens at its address (NO_BACKEND: start one), or it runs and
    accepts connections but never answered (TIMEOUT: it is busy or refusing; starting another would not help)."""
    said = tries_words(tries)
    if not connection.pid_alive(info.pid):
        return ProtocolError(
            ErrorCode.NO_BACKEND,
            f"The backend (pid {info.pid}) has stopped; start it with: python -m backend serve",
        )
    if listening(info.endpoint) is False:
        return ProtocolError(
            ErrorCode.NO_BACKEND,
            f"Nothing listens at {info.endpoint} ({said}, {waited:.0f} s; the connection file is stale): "
            "start the backend with: python -m backend serve",
        )
    who = f"The backend (pid {info.pid})" if info.pid > 0 else f"The backend at {info.endpoint}"
    return ProtocolError(
        ErrorCode.TIMEOUT,
        f"{who} is running but did not answer in {waited:.0f} s ({said}): it is busy (still starting, or the "
        "machine is overloaded) or refusing new connections (too many at once). Wait a little and reconnect; "
        "if it stays silent, restart it: python -m backend serve",
    )

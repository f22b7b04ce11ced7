"""What a peer can make the server hold before it proves the key, and replayed message ids (issue 13).

ZeroMQ reads a whole message into memory before the server sees a byte of it, so a peer without the key can
still make the backend hold memory: up to ``ZMQ_MAXMSGSIZE`` per message, ``ZMQ_RCVHWM`` queued messages per
connection, for as many connections as it opens. ``PeerGuard`` bounds the last two factors: connections that
have not yet sent one correctly signed message ("unproven") are capped, and an unproven connection is dropped
after a few bad signatures. The cap is enforced after the server has read what is waiting, not when a
connection is accepted, so a burst of honest clients connecting at once (each signs its first message at once)
is not cut: past the small cap a connection gets ``burst_grace_s`` (2 s) to prove the key, up to the larger
``max_burst`` while the server is calm, and while what those young connections have sent stays within
``max_pending_bytes`` (the server's: what the small cap's connections could hold, 8 x ``ZMQ_MAXMSGSIZE``). One
that outlives the grace past the cap, or the biggest past that byte allowance, is cut, and the guard is then
wary for ``proof_deadline_s``: the small cap for all. Before (session 12) the 9th connection accepted in one
instant shut the oldest down with its signed hello still unread: that host's request was lost, never answered.
Guard13 (057d81e) gave young connections the whole ``proof_deadline_s`` (15 s) instead of the grace: a peer
that sends most of a big message and never finishes it, reconnecting before 15 s, was never read, never
stale, and held 64 connections' partial messages for ever (review13: +1 GiB RSS a cycle). Dropping is a
``shutdown()`` of the TCP socket ZeroMQ owns (its fd comes from the monitor's ``ACCEPTED`` event and the
message's ``ZMQ_SRCFD``): ZeroMQ then sees the peer hang up, closes the connection and frees what it buffered
for it. Proven connections (holders of the key) are never dropped here; quotas bound them.

``SeenIds`` remembers message ids for a window (the result TTL) so a signed message sent again, from any
socket, is refused instead of run again. Ids are stored per owner, and each owner's list is capped, so one
key holder flooding ids can only push out its own.
"""

from __future__ import annotations

import logging
import re
import socket
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("layeredit.guard")

# An absolute (or home-relative) server path inside a message: /x/y, ~/x, C:\x. Not "a/b", not URLs.
_PATH_RE = re.compile(r"(?<![\w:/.\\])(?:~?/|[A-Za-z]:\\)[\w.+@-][^\s'\",;()\[\]]*")
# A model a remote client may name: a plain name (no separators, not . or ..), looked up in the model folders.
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def scrub_paths(text: str) -> str:
    """``text`` with server paths replaced: what a remote peer may read of an error (it must not learn the
    server's file layout)."""
    return _PATH_RE.sub("<server path>", text)


def scrub_error(error: dict) -> dict:
    """An error's JSON (``code``, ``message``, ``details``) with server paths scrubbed from every string."""
    out = dict(error)
    out["message"] = scrub_paths(str(out.get("message", "")))
    if isinstance(out.get("details"), dict):
        out["details"] = {k: scrub_paths(v) if isinstance(v, str) else v for k, v in out["details"].items()}
    return out


@dataclass
class _Conn:
    since: float = 0.0  # when accepted (the guard's clock)
    proven: bool = False
    bad: int = 0
    dropped: bool = False
    peer: tuple | None = None  # getpeername() when first seen: a reused fd is never shut down by mistake


class PeerGuard:
    """Per-connection bookkeeping, socket thread only. fds are ZeroMQ's TCP sockets.

    Unproven connections past ``max_unproven`` are dropped by ``enforce`` (oldest first): first those that
    sent a bad signature, then those that had ``burst_grace_s`` to prove the key and did not ("overdue"; an
    honest client's signed hello is small and sent at once); connections still within their grace (their
    first message may not have been read yet) only past ``max_burst`` in all. That allowance is for a calm
    server: for ``proof_deadline_s`` after an unproven connection sent a bad signature or was overdue past the
    cap (an unauthenticated flood, a peer that connects and says nothing or never finishes its message), young
    ones are cut at ``max_unproven`` too. Young connections past the cap are also cut, biggest first, while
    together they have received more than ``max_pending_bytes`` (``TCP_INFO``'s bytes received, where the
    OS gives it): ZeroMQ holds a partial message whole, so a flood's connections fill up long before the
    grace ends (review13: 64 x 16 MiB in 0.6 s on loopback), while an honest burst's first messages are small
    hellos. So past ``max_unproven`` a flood holds connections only for the grace and that many bytes, once
    per wary period (plus what arrives between two read passes: the server polls every 10 ms while past the
    cap). While the server's last read pass left messages waiting (``enforce(backlog=True)``: a young
    connection's signed hello may be among them) the grace is ``proof_deadline_s`` instead.
    """

    def __init__(
        self,
        max_unproven: int = 8,
        max_bad_signatures: int = 4,
        *,
        max_burst: int = 64,
        proof_deadline_s: float = 15.0,
        burst_grace_s: float = 2.0,
        max_pending_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_unproven = max_unproven
        self.max_bad_signatures = max_bad_signatures
        self.max_burst = max(max_burst, max_unproven)
        self.proof_deadline_s = proof_deadline_s
        self.burst_grace_s = min(burst_grace_s, proof_deadline_s)
        self.max_pending_bytes = max_pending_bytes
        self._clock = clock
        self._wary_until = float("-inf")  # until then, no burst allowance (see the class)
        self._conns: OrderedDict[int, _Conn] = OrderedDict()  # accept order: oldest first
        self.dropped_total = 0

    # -- monitor events -------------------------------------------------------------------------
    def accepted(self, fd: int) -> None:
        """Only recorded: its first message may already be waiting, so the cap is applied by ``enforce``
        once the server has read what is there (a signed one proves it)."""
        self._conns.pop(fd, None)  # a reused fd is a new connection
        self._conns[fd] = _Conn(since=self._clock(), peer=_peername(fd))

    def enforce(self, backlog: bool = False) -> None:
        """Drop unproven connections past the caps (see the class). Called after every read pass;
        ``backlog``: that pass stopped with messages still waiting."""
        unproven = [(f, c) for f, c in self._conns.items() if not c.proven and not c.dropped]
        excess = len(unproven) - self.max_unproven
        if excess <= 0:
            return
        now = self._clock()
        horizon = now - (self.proof_deadline_s if backlog else self.burst_grace_s)
        bad = [f for f, c in unproven if c.bad]
        overdue = [f for f, c in unproven if not c.bad and c.since <= horizon]
        young = [f for f, c in unproven if not c.bad and c.since > horizon]
        heavy = self._heavy(young)
        if overdue or heavy:
            self._wary_until = now + self.proof_deadline_s
        burst = self.max_burst if now >= self._wary_until else self.max_unproven
        victims = (bad + overdue)[:excess] + heavy
        young = [f for f in young if f not in heavy]
        over_burst = len(unproven) - len(victims) - burst
        if over_burst > 0:
            victims += young[:over_burst]
        if victims:
            log.warning(
                "%d connections have not proved the key (%d sent bad signatures, %d for over %g s, "
                "%d past the bytes allowed to young ones): dropping %d",
                len(unproven),
                len(bad),
                len(overdue),
                now - horizon,
                len(heavy),
                len(victims),
            )
        for fd in victims:
            self._drop(fd)

    def _heavy(self, young: list[int]) -> list[int]:
        """Young connections to cut, biggest first, until what they have sent is within
        ``max_pending_bytes`` (an honest burst's first messages are small signed hellos; a flood's partial
        messages are held whole by ZeroMQ long before their grace ends)."""
        if self.max_pending_bytes is None or not young:
            return []
        sizes = sorted(((_bytes_received(f), f) for f in young), reverse=True)
        total = sum(n for n, _f in sizes)
        heavy = []
        for n, f in sizes:
            if total <= self.max_pending_bytes:
                break
            heavy.append(f)
            total -= n
        return heavy

    def watching(self) -> bool:
        """More unproven connections than ``max_unproven``: ``enforce`` should run often (the bytes a
        young connection receives arrive between read passes, with no message to wake the server)."""
        return self.unproven() > self.max_unproven

    def closed(self, fd: int) -> None:
        self._conns.pop(fd, None)

    # -- messages -------------------------------------------------------------------------------
    def admit(self, fd: int | None) -> bool:
        """False for a message from a connection already dropped: discard it without reading it."""
        if fd is None:
            return True
        conn = self._conns.get(fd)
        return conn is None or not conn.dropped

    def proven(self, fd: int | None) -> None:
        if fd is None:
            return
        conn = self._conns.setdefault(fd, _Conn(since=self._clock(), peer=_peername(fd)))
        conn.proven = True

    def bad_signature(self, fd: int | None) -> None:
        if fd is None:
            return
        conn = self._conns.setdefault(fd, _Conn(since=self._clock(), peer=_peername(fd)))
        if conn.proven:
            return  # a holder of the key sending a bad message is a bug, not an attack
        conn.bad += 1
        self._wary_until = self._clock() + self.proof_deadline_s
        if conn.bad >= self.max_bad_signatures:
            log.warning("dropping a connection after %d messages without a valid signature", conn.bad)
            self._drop(fd)

    def unproven(self) -> int:
        return sum(1 for c in self._conns.values() if not c.proven and not c.dropped)

    def _drop(self, fd: int) -> None:
        conn = self._conns.get(fd)
        if conn is None or conn.dropped:
            return
        conn.dropped = True
        if conn.peer is None or _peername(fd) != conn.peer:
            return  # not the connection we meant (closed meanwhile): leave whatever has that fd now alone
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)  # ZeroMQ sees the hang-up and closes its side
            self.dropped_total += 1
        except OSError:
            pass
        finally:
            sock.detach()  # the fd stays ZeroMQ's


def _bytes_received(fd: int) -> int:
    """Bytes the kernel received on this TCP socket (``tcpi_bytes_received``, Linux 4.1+; 0 where it is
    not known; a u64 at offset 128 in native byte order): for an unproven connection, about what ZeroMQ holds of
    its unread messages."""
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None:
        return 0
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 256)
    except OSError:
        return 0
    finally:
        sock.detach()
    return struct.unpack_from("=Q", info, 128)[0] if len(info) >= 136 else 0


def _peername(fd: int) -> tuple | None:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        return tuple(sock.getpeername())
    except OSError:
        return None
    finally:
        sock.detach()


@dataclass
class _Owner:
    ids: deque[tuple[float, str]] = field(default_factory=deque)


class SeenIds:
    """Message ids seen within ``window_s``; at most ``per_owner`` remembered per owner (oldest go first)."""

    def __init__(self, window_s: float = 3600.0, per_owner: int = 100_000):
        self.window_s = window_s
        self.per_owner = per_owner
        self._where: dict[str, str] = {}  # id -> owner that sent it
        self._owners: dict[str, _Owner] = {}

    def check_and_add(self, msg_id: str, owner: str, now: float | None = None) -> bool:
        """True for a fresh id (now remembered); False for one already seen, from any owner."""
        now = time.monotonic() if now is None else now
        if msg_id in self._where:
            return False
        entry = self._owners.setdefault(owner, _Owner())
        entry.ids.append((now, msg_id))
        self._where[msg_id] = owner
        while len(entry.ids) > self.per_owner:
            self._forget(entry.ids.popleft()[1])
        return True

    def expire(self, now: float | None = None) -> None:
        """Forget ids older than the window (called every second from the socket loop)."""
        now = time.monotonic() if now is None else now
        horizon = now - self.window_s
        for owner in list(self._owners):
            entry = self._owners[owner]
            while entry.ids and entry.ids[0][0] < horizon:
                self._forget(entry.ids.popleft()[1])
            if not entry.ids:
                del self._owners[owner]

    def _forget(self, msg_id: str) -> None:
        self._where.pop(msg_id, None)

    def __len__(self) -> int:
        return len(self._where)

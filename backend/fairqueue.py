"""A job queue that is fair across clients: strict round-robin over owners, FIFO within one owner.

One client's batch of fifty jobs must not make another client's single job wait behind more than the job
that is running: each ``get`` takes the oldest job of the client served least recently (a client never
served yet goes first, in arrival order). ``None`` (the stop sentinel) jumps the queue.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Owned(Protocol):
    client: str


T = TypeVar("T", bound=Owned)


class FairQueue(Generic[T]):
    """Thread-safe; ``put``/``get`` like ``queue.Queue`` (``get`` blocks), ``len`` counts waiting items."""

    def __init__(self) -> None:
        self._lanes: dict[str, deque[T]] = {}  # client -> its waiting items, oldest first
        self._served: dict[str, int] = {}  # client -> turn it was last served at (absent: never, or long ago)
        self._arrived: dict[str, int] = {}  # client -> when its lane last became non-empty (ties)
        self._turn = itertools.count(1)
        self._stops = 0
        self._cond = threading.Condition()

    def put(self, item: T | None) -> None:
        with self._cond:
            if item is None:
                self._stops += 1
            else:
                lane = self._lanes.setdefault(item.client, deque())
                if not lane:
                    self._arrived[item.client] = next(self._turn)
                lane.append(item)
            self._cond.notify()

    def _next_client(self) -> str:
        """The waiting client served least recently (never served: first), ties by arrival. Lock held."""
        return min(self._lanes, key=lambda c: (self._served.get(c, 0), self._arrived[c]))

    def get(self) -> T | None:
        with self._cond:
            while not self._stops and not self._lanes:
                self._cond.wait()
            if self._stops:
                self._stops -= 1
                return None
            client = self._next_client()
            lane = self._lanes[client]
            item = lane.popleft()
            if not lane:
                del self._lanes[client]
                del self._arrived[client]
            self._served[client] = next(self._turn)
            if len(self._served) > 4096:  # forget clients served long ago (they count as "never": first)
                for old in sorted(self._served, key=self._served.__getitem__)[:2048]:
                    if old not in self._lanes:
                        del self._served[old]
            return item

    def position(self, item: T, skip: Callable[[T], bool] | None = None) -> int:
        """How many waiting items ``get`` hands out before ``item`` (0: it is next; also 0 when it was taken
        already), if nothing else arrives. Items for which ``skip`` is true (e.g. cancelled) are not counted.

        Strict round robin serves the waiting lanes in a fixed cycle (least recently served first), so the
        item at place k of its lane comes after k items of every other lane, plus one more of each lane ahead
        of its own in the cycle."""
        with self._cond:
            lane = self._lanes.get(item.client)
            k = next((i for i, x in enumerate(lane or ()) if x is item), None)  # by identity, not ==
            if lane is None or k is None:
                return 0  # not waiting any more: a worker took it
            order = sorted(self._lanes, key=lambda c: (self._served.get(c, 0), self._arrived[c]))
            rank = order.index(item.client)
            ahead = list(itertools.islice(lane, k))
            for i, client in enumerate(order):
                if client != item.client:
                    ahead.extend(itertools.islice(self._lanes[client], k + (1 if i < rank else 0)))
        return sum(1 for other in ahead if skip is None or not skip(other))

    def __len__(self) -> int:
        with self._cond:
            return sum(len(lane) for lane in self._lanes.values())

"""A job queue that is fair across clients: round-robin over owners, FIFO within one owner.

One client's batch of fifty jobs must not make another client's single job wait behind all fifty: each
``get`` takes the oldest job of the next client in turn. ``None`` (the stop sentinel) jumps the queue.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Generic, Protocol, TypeVar


class Owned(Protocol):
    client: str


T = TypeVar("T", bound=Owned)


class FairQueue(Generic[T]):
    """Thread-safe; ``put``/``get`` like ``queue.Queue`` (``get`` blocks), ``len`` counts waiting items."""

    def __init__(self) -> None:
        self._lanes: OrderedDict[str, deque[T]] = OrderedDict()  # rotation order: next client first
        self._stops = 0
        self._cond = threading.Condition()

    def put(self, item: T | None) -> None:
        with self._cond:
            if item is None:
                self._stops += 1
            else:
                self._lanes.setdefault(item.client, deque()).append(item)
            self._cond.notify()

    def get(self) -> T | None:
        with self._cond:
            while not self._stops and not self._lanes:
                self._cond.wait()
            if self._stops:
                self._stops -= 1
                return None
            client, lane = next(iter(self._lanes.items()))
            item = lane.popleft()
            del self._lanes[client]
            if lane:  # back of the rotation: every other waiting client goes first
                self._lanes[client] = lane
            return item

    def __len__(self) -> int:
        with self._cond:
            return sum(len(lane) for lane in self._lanes.values())

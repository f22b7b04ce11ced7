"""Rectangles, and which rectangle of the image to send for a mode and a selection."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.errors import ErrorCode, ProtocolError
from protocol.hostkit.modes import Mode, no_selection_message


@dataclass(frozen=True)
class Rect:
    """An axis-aligned pixel rectangle in document coordinates; width/height 0 means empty."""

    x: int
    y: int
    w: int
    h: int

    @classmethod
    def from_corners(cls, x0: int, y0: int, x1: int, y1: int) -> Rect:
        return cls(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    @property
    def empty(self) -> bool:
        return self.w <= 0 or self.h <= 0

    @property
    def area(self) -> int:
        return 0 if self.empty else self.w * self.h

    def intersect(self, other: Rect) -> Rect:
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1, y1 = min(self.right, other.right), min(self.bottom, other.bottom)
        return Rect.from_corners(x0, y0, max(x0, x1), max(y0, y1))

    def grow(self, dx: int, dy: int | None = None) -> Rect:
        dy = dx if dy is None else dy
        return Rect(self.x - dx, self.y - dy, self.w + 2 * dx, self.h + 2 * dy)

    def contains(self, other: Rect) -> bool:
        return other.empty or (
            self.x <= other.x
            and self.y <= other.y
            and other.right <= self.right
            and other.bottom <= self.bottom
        )

    def translated(self, dx: int, dy: int) -> Rect:
        return Rect(self.x + dx, self.y + dy, self.w, self.h)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


@dataclass(frozen=True)
class RegionPlan:
    """What to read from the host and send: ``region`` in document coordinates, and whether a selection mask
    goes with it (``selection`` is the selection's bounds clipped to the region, or None)."""

    region: Rect
    selection: Rect | None


CONTEXT_FRACTION = 0.5  # context sent around the selection, as a fraction of its larger side
CONTEXT_MIN = 32  # ...but at least this many pixels: the snapper and the fill need surroundings

# How far past the selection's bounds the backend's ops read the layer. A host must send at least this much:
# the backend cannot see what it was not sent, and a crop cut short (or slid inward at the edge of what was sent
# rather than at the layer's edge) gives another result than the CLI, which sends the whole file. On
# examples/coffee.png hosts sent 2 px less than erase's fill crop, and PatchMatch repainted ~5,000 pixels
# differently. The figures mirror the backend's defaults and crop plans (cited at each use); the tests
# (tests/test_hostkit_region.py) run a host-built request against the CLI, so a backend change that reads
# further fails there.
SNAP_MARGIN = 24  # the ops' default ``margin`` (backend/params/snap.py): the snapped object stays this close
DEFAULT_GROW = {"erase": 6, "replace": 8}  # the ops' default ``grow`` (backend/params/erase.py, replace.py)
ERASE_MIN_CROP = 512  # a learned erase filler's smallest crop (backend/erase/fill_learned.py NATIVE_SIDE)


def op_reach(op: str, long_side: int, params: Mapping[str, Any] | None = None) -> int:
    """Pixels past a ``long_side`` selection's bounds that op ``op`` may read with ``params`` (the op's wire
    parameters; missing ones take the defaults); 0 for an op it does not know.

    - imagic: the selection's box plus max(16, 0.25 x its long side) (``ImagicPipeline``; no snap).
    - snap: ``SnapPipeline`` crops the selection plus max(margin + 8, 0.15 x its long side).
    - replace: the snapped object (within ``margin``) grown by ``grow``, plus 0.25 x that box's long side
      (at least 16 px; ``ReplaceParams.context``), cut at the layer's edge.
    - erase: the snapped object grown by ``grow``, plus ``pad`` = up to 1 x that box's long side (the classical
      fillers' ``EraseParams.context``; PatchMatch and the learned ones take 0.5), or what makes the crop
      ``ERASE_MIN_CROP`` long (learned fillers): at most max(long side, 256). Near the layer's edge that crop
      slides inward (``plan_crop(keep_size=True)``): ``plan_region`` slides the region with it (``SLIDING_OPS``).
    """
    if op == "imagic":
        return max(16, math.ceil(0.25 * long_side))
    margin = _px(params, "margin", SNAP_MARGIN)
    snap = max(margin + 8, 16, math.ceil(0.15 * long_side)) + 1
    if op == "snap":
        return snap
    if op not in DEFAULT_GROW:
        return 0
    near = margin + _px(params, "grow", DEFAULT_GROW[op])  # the edited region's reach past the selection
    box = long_side + 2 * near  # the edited region's long side, at most
    if op == "replace":
        return max(snap, near + max(16, math.ceil(0.25 * box)) + 2)
    return max(snap, near + max(box, ERASE_MIN_CROP // 2) + 2)


SLIDING_OPS = frozenset({"erase"})  # ops whose crop keeps its size at the layer's edge by sliding inward


def _slide(rect: Rect, within: Rect) -> Rect:
    """``rect`` moved inside ``within`` along each axis where it sticks out on one side, keeping its size where it
    fits (then cut): what the backend's ``plan_crop(keep_size=True)`` does to a crop at the layer's edge."""

    def axis(lo: int, hi: int, start: int, end: int) -> tuple[int, int]:
        if lo < start:
            lo, hi = start, hi + start - lo
        if hi > end:
            lo, hi = max(start, lo - (hi - end)), end
        return lo, hi

    x0, x1 = axis(rect.x, rect.right, within.x, within.right)
    y0, y1 = axis(rect.y, rect.bottom, within.y, within.bottom)
    return Rect.from_corners(x0, y0, x1, y1)


REACH_PARAMS = ("margin", "grow")  # the parameters ``op_reach`` reads: a host passes their chosen values


def _px(params: Mapping[str, Any] | None, name: str, default: int) -> int:
    """A pixel parameter's chosen value; the default when it is missing or not a whole number (the backend
    refuses such a value anyway, and a host reads them before any backend is asked)."""
    value = (params or {}).get(name, default)
    return max(0, value) if isinstance(value, int) and not isinstance(value, bool) else default


def plan_region(
    mode: Mode,
    source: Rect,
    canvas: Rect,
    selection: Rect | None,
    *,
    params: Mapping[str, Any] | None = None,
    context_fraction: float = CONTEXT_FRACTION,
    context_min: int = CONTEXT_MIN,
) -> RegionPlan:
    """Pick the rectangle to send. ``source`` is the layer's extent (or the canvas for the visible image); only
    what lies on the canvas is sent (the user sees nothing else). With a selection the region is its bounds plus
    context: at least what the op reads (``op_reach`` with the job's ``params``; None: the defaults), so the
    host's edit is the one the CLI makes from the same pixels, and a small object on a huge canvas does not ship
    the whole canvas.
    Raises ``no_selection`` when the mode needs a selection and there is none (or it misses the layer)."""
    usable = source.intersect(canvas)
    if usable.empty:
        raise ProtocolError(
            ErrorCode.MISSING_INPUT,
            "The layer is empty where the canvas is: paint something on it or pick another layer.",
        )
    sel = None if selection is None or selection.empty else selection.intersect(usable)
    if selection is not None and not selection.empty and (sel is None or sel.empty):
        raise ProtocolError(
            ErrorCode.NO_SELECTION,
            "The selection does not overlap the layer's pixels: select on the layer you want to edit "
            "(or choose 'Visible image' as the source).",
        )
    if sel is None:
        if mode.needs_selection:
            raise ProtocolError(ErrorCode.NO_SELECTION, no_selection_message(mode))
        return RegionPlan(usable, None)
    long_side = max(sel.w, sel.h)
    region = sel.grow(max(context_min, math.ceil(context_fraction * long_side))).intersect(usable)
    reads = sel.grow(op_reach(mode.op, long_side, params))
    reads = _slide(reads, usable) if mode.op in SLIDING_OPS else reads.intersect(usable)
    return RegionPlan(_union(region, reads), sel)


def _union(a: Rect, b: Rect) -> Rect:
    """The smallest rectangle holding both (neither empty)."""
    return Rect.from_corners(min(a.x, b.x), min(a.y, b.y), max(a.right, b.right), max(a.bottom, b.bottom))

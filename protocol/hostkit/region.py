"""Rectangles, and which rectangle of the image to send for a mode and a selection."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def plan_region(
    mode: Mode,
    source: Rect,
    canvas: Rect,
    selection: Rect | None,
    *,
    context_fraction: float = CONTEXT_FRACTION,
    context_min: int = CONTEXT_MIN,
) -> RegionPlan:
    """Pick the rectangle to send. ``source`` is the layer's extent (or the canvas for the visible image); only
    what lies on the canvas is sent (the user sees nothing else). With a selection the region is its bounds plus
    context, so a small object on a huge canvas does not ship the whole canvas; the backend crops further.
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
    margin = max(context_min, math.ceil(context_fraction * max(sel.w, sel.h)))
    return RegionPlan(sel.grow(margin).intersect(usable), sel)

"""Selection-mask maths on row-major 8-bit masks (plain bytes: the hosts' Python may have no numpy)."""

from __future__ import annotations

from protocol.errors import ErrorCode, ProtocolError
from protocol.hostkit.modes import Mode
from protocol.hostkit.region import Rect


def mask_coverage(mask: bytes | bytearray | memoryview) -> int:
    """Number of selected (non-zero) samples in an 8-bit mask: an all-zero selection counts as none."""
    data = bytes(mask)
    return len(data) - data.count(0)


def selection_to_send(mode: Mode, mask: bytes | None) -> bytes | None:
    """The selection read over the region, as a job sends it; ``no_selection`` before anything is sent when a
    selection was planned but nothing in it is selected (its bounds reach the layer, its pixels do not), for
    every mode: the region was already cropped to that selection, so even a mode that can run without one
    (Imagic) would edit an unmasked patch the user never chose; the backend refuses it too. Any sample type:
    an all-zero selection is all-zero bytes."""
    if mask is None or mask_coverage(mask):
        return mask
    verb = "select again" if mode.needs_selection else "select again, or deselect to edit the whole layer"
    raise ProtocolError(ErrorCode.NO_SELECTION, f"The selection is empty on this layer: {verb}.")


def mask_bounds(mask: bytes | bytearray | memoryview, width: int, height: int) -> Rect | None:
    """Tight bounds of the non-zero samples of a row-major 8-bit mask (relative to the mask), None if empty."""
    data = bytes(mask)
    if len(data) != width * height:
        raise ProtocolError(ErrorCode.BAD_BUFFER, f"mask has {len(data)} bytes, expected {width}x{height}.")
    rows = [y for y in range(height) if data[y * width : (y + 1) * width].count(0) != width]
    if not rows:
        return None
    x0, x1 = width, 0
    for y in rows:
        row = data[y * width : (y + 1) * width]
        first = next(i for i, v in enumerate(row) if v)
        last = width - next(i for i, v in enumerate(reversed(row)) if v)
        x0, x1 = min(x0, first), max(x1, last)
    return Rect.from_corners(x0, rows[0], x1, rows[-1] + 1)


_NONZERO = bytes([0] + [1] * 255)  # bytes.translate table: selected (any value > 0) -> 1


def mask_runs(row: bytes) -> list[tuple[int, int]]:
    """[start, end) of the selected (non-zero) runs of one mask row."""
    bits, runs, x = row.translate(_NONZERO), [], 0
    while (start := bits.find(1, x)) >= 0:
        end = bits.find(0, start)
        end = len(bits) if end < 0 else end
        runs.append((start, end))
        x = end
    return runs


def outline_rects(
    mask: bytes | bytearray | memoryview, width: int, height: int
) -> list[tuple[int, int, int, int]]:
    """Rectangles (x, y, w, h) whose union is exactly the selected pixels of a row-major 8-bit mask: each row's
    runs, plus a two-row bridge wherever runs of neighbouring rows overlap. The bridges make neighbouring rows
    overlap instead of merely touching, so a path union of the rectangles has no seams between rows (Krita
    builds its marching-ants outline that way from ``Selection.select`` calls)."""
    data = bytes(mask)
    if len(data) != width * height:
        raise ProtocolError(ErrorCode.BAD_BUFFER, f"mask has {len(data)} bytes, expected {width}x{height}.")
    rects: list[tuple[int, int, int, int]] = []
    above: list[tuple[int, int]] = []
    for y in range(height):
        runs = mask_runs(data[y * width : (y + 1) * width])
        rects.extend((x0, y, x1 - x0, 1) for x0, x1 in runs)
        for a0, a1 in above:
            for b0, b1 in runs:
                lo, hi = max(a0, b0), min(a1, b1)
                if lo < hi:
                    rects.append((lo, y - 1, hi - lo, 2))
        above = runs
    return rects

"""Mask helpers. Selections are float32 HxW in [0, 1]; soft values are meaningful (painted feathering)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1; exclusive end


def mask_to_float(mask: np.ndarray) -> np.ndarray:
    """float32 HxW in [0, 1] from bool, uint8 (0..255), uint16 or float masks; HxWx1 is squeezed.
    NaN counts as 0 and values outside [0, 1] are clipped."""
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[:, :, 0]
    if m.ndim != 2:
        raise ValueError(f"a mask is HxW, got shape {m.shape}")
    if m.dtype == np.bool_:
        return m.astype(np.float32)
    if m.dtype == np.uint8:
        return m.astype(np.float32) / 255.0
    if m.dtype == np.uint16:
        return m.astype(np.float32) / 65535.0
    f = m.astype(np.float32, copy=False)
    if f.size and (f.min() < 0.0 or f.max() > 1.0 or not np.isfinite(f).all()):
        f = np.clip(np.nan_to_num(f), 0.0, 1.0)
    return f  # may be the input itself when it already was float32 in [0, 1]: treat it as read-only


def mask_to_u8(mask: np.ndarray) -> np.ndarray:
    """uint8 HxW (0..255), the form ``OpResult.mask`` and PNG files use."""
    f = mask_to_float(mask)
    return cv2.convertScaleAbs(np.ascontiguousarray(f), alpha=255.0)  # rounds and saturates, SIMD-fast


def binarize(mask: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """bool HxW: True where the mask is at least ``threshold``."""
    return mask_to_float(mask) >= threshold


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), exclusive end, of the nonzero pixels; None for an empty mask."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[:, :, 0]
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def bbox_positive(mask: np.ndarray) -> Box | None:
    """``bbox(mask > 0)`` without a full-size temporary: the rows are compared a band at a time (about 1 Mpx),
    and only the rows that hold a positive value are looked at for the columns. A 4096x4096 selection costs
    1 MiB of scratch instead of a 16 MiB bool copy."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[:, :, 0]
    h, w = m.shape
    band = max(1, (1 << 20) // max(1, w))
    rows = np.zeros(h, bool)
    for y in range(0, h, band):
        np.any(m[y : y + band] > 0, axis=1, out=rows[y : y + band])
    found = np.flatnonzero(rows)
    if found.size == 0:
        return None
    y0, y1 = int(found[0]), int(found[-1]) + 1
    cols = np.zeros(w, bool)
    for y in range(y0, y1, band):
        cols |= (m[y : min(y + band, y1)] > 0).any(axis=0)
    found = np.flatnonzero(cols)
    return int(found[0]), y0, int(found[-1]) + 1, y1


@dataclass(frozen=True)
class MaskWindow:
    """A layer-sized mask held as its values inside ``box`` and zero outside it.

    An edit around a 600 px object in a 4096x4096 layer needs a few Mpx of mask, not a 64 MiB float32 copy of
    the layer per mask (and the page faults of filling them): the erase pipeline and the snap keep their masks
    this way and build a full-size array only for what leaves the backend (``to_u8``) or who asks (``full``).
    ``data`` may be a whole layer's own array (``whole``): it is read, never written."""

    data: np.ndarray  # HxW values inside ``box`` (h = y1 - y0, w = x1 - x0)
    box: Box
    shape: tuple[int, int]  # the layer's (H, W)

    @classmethod
    def whole(cls, mask: np.ndarray) -> MaskWindow:
        """A full-size mask as it is (no copy)."""
        h, w = mask.shape[:2]
        return cls(mask, (0, 0, w, h), (h, w))

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype=np.float32) -> MaskWindow:
        """A mask that is zero everywhere."""
        return cls(np.zeros((0, 0), dtype), (0, 0, 0, 0), (int(shape[0]), int(shape[1])))

    def positive_box(self) -> Box | None:
        """``bbox(full() > 0)``, in the layer's coordinates."""
        found = bbox_positive(self.data) if self.data.size else None
        if found is None:
            return None
        x0, y0 = self.box[:2]
        return found[0] + x0, found[1] + y0, found[2] + x0, found[3] + y0

    def crop(self, box: Box) -> np.ndarray:
        """The mask's values in ``box`` (layer coordinates): a view of ``data`` when ``box`` lies inside the
        window (read it, do not write it), else a copy that is zero outside the window."""
        x0, y0, x1, y1 = box
        wx0, wy0, wx1, wy1 = self.box
        if wx0 <= x0 and wy0 <= y0 and x1 <= wx1 and y1 <= wy1:
            return self.data[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]
        out = np.zeros((y1 - y0, x1 - x0, *self.data.shape[2:]), self.data.dtype)
        ix0, iy0, ix1, iy1 = max(x0, wx0), max(y0, wy0), min(x1, wx1), min(y1, wy1)
        if ix0 < ix1 and iy0 < iy1:
            out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = self.data[
                iy0 - wy0 : iy1 - wy0, ix0 - wx0 : ix1 - wx0
            ]
        return out

    def full(self) -> np.ndarray:
        """The full-size mask (a new array)."""
        if self.box == (0, 0, self.shape[1], self.shape[0]):
            return self.data.copy()
        out = np.zeros((*self.shape, *self.data.shape[2:]), self.data.dtype)
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = self.data
        return out

    def to_u8(self) -> np.ndarray:
        """``mask_to_u8(full())`` without the full-size float copy."""
        if self.box == (0, 0, self.shape[1], self.shape[0]):
            return mask_to_u8(self.data)
        out = np.zeros(self.shape, np.uint8)
        x0, y0, x1, y1 = self.box
        if self.data.size:
            out[y0:y1, x0:x1] = mask_to_u8(self.data)
        return out

    def maximum(self, other: MaskWindow) -> MaskWindow:
        """The pixelwise maximum of two masks of one layer, over the union of their windows."""
        if self.box == other.box:
            return MaskWindow(np.maximum(self.data, other.data), self.box, self.shape)
        if not other.data.size:
            return self
        if not self.data.size:
            return other
        box = (
            min(self.box[0], other.box[0]),
            min(self.box[1], other.box[1]),
            max(self.box[2], other.box[2]),
            max(self.box[3], other.box[3]),
        )
        return MaskWindow(np.maximum(self.crop(box), other.crop(box)), box, self.shape)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def grow(mask: np.ndarray, px: int) -> np.ndarray:
    """Dilate by ``px`` pixels with a disk (a max filter, so soft values stay soft). Returns float32."""
    m = mask_to_float(mask)
    if px <= 0:
        return m.copy()
    if px > 4 and _is_binary(m):
        # a distance transform costs the same for any radius; a disk kernel grows with px^2
        outside = (m == 0).astype(np.uint8)
        return (cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= px).astype(np.float32)
    return cv2.dilate(m, _disk(int(px)), borderType=cv2.BORDER_CONSTANT, borderValue=0)


def _is_binary(m: np.ndarray) -> bool:
    return bool(((m == 0) | (m == 1)).all())


def shrink(mask: np.ndarray, px: int) -> np.ndarray:
    """Erode by ``px`` pixels with a disk (a min filter). The image border is not an edge: a selection that
    touches it is not eaten from there. Returns float32."""
    m = mask_to_float(mask)
    if px <= 0:
        return m.copy()
    return cv2.erode(m, _disk(int(px)), borderType=cv2.BORDER_REPLICATE)


def rim_residual(rgb: np.ndarray, mask: np.ndarray, width: int = 12) -> float:
    """RMS (8-bit levels) of the colours on a ``width``-px rim around the hole after fitting one quadratic colour
    surface to them: small when the background is a smooth gradient (sky, wall, studio backdrop), large when
    the rim crosses texture or several regions (a cup, a saucer and a table)."""
    hole = np.asarray(mask, bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    rim = (cv2.dilate(hole.astype(np.uint8), kernel) > 0) & ~hole
    ys, xs = np.nonzero(rim)
    if ys.size < 12:
        return float("inf")
    span = float(max(np.ptp(ys), np.ptp(xs), 1))
    y, x = (ys - ys.mean()) / span, (xs - xs.mean()) / span
    basis = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)
    values = rgb[rim][:, :3].astype(np.float64)
    coef, *_ = np.linalg.lstsq(basis, values, rcond=None)
    return float(np.sqrt(((basis @ coef - values) ** 2).mean()))

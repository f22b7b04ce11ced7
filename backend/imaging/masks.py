"""Mask helpers. Selections are float32 HxW in [0, 1]; soft values are meaningful (painted feathering)."""

from __future__ import annotations

import cv2
import numpy as np


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

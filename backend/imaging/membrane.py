"""Membrane (Laplace) interpolation: fill unknown pixels smoothly from the known ones.

Shared by the erase fill's smooth-surround low-pass (backend/erase/patchmatch.py) and its soft-shadow shading
(backend/erase/shading.py), which must not import each other.
"""

from __future__ import annotations

import cv2
import numpy as np


def membrane(values: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """``values`` with its ``unknown`` pixels replaced by a membrane (Laplace) interpolation of the known ones,
    solved coarse to fine: each level starts from the coarser solution enlarged, Jacobi sweeps refine it (many
    on small levels, a few or none on big ones: what it interpolates here is smooth, and this keeps a 1200 px
    crop cheap)."""
    h, w = unknown.shape
    out = values.copy()
    if not unknown.any():
        return out
    if unknown.all():
        out[:] = 0
        return out
    if min(h, w) > 8:
        size = ((w + 1) // 2, (h + 1) // 2)
        known = (~unknown).astype(np.float32)
        num = cv2.resize(values * known[:, :, None], size, interpolation=cv2.INTER_AREA)
        den = cv2.resize(known, size, interpolation=cv2.INTER_AREA)
        small = membrane(num / np.maximum(den, 1e-6)[:, :, None], den <= 0.0)
        out[unknown] = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)[unknown]
    else:
        out[unknown] = values[~unknown].mean(axis=0)
    kernel = np.array([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]], np.float32)
    for _ in range(30 if max(h, w) <= 128 else 4 if max(h, w) <= 256 else 0):
        out[unknown] = cv2.filter2D(out, -1, kernel, borderType=cv2.BORDER_REPLICATE)[unknown]
    return out

"""A fill's grain raised toward the grain of the known pixels around it (day 10 shading, day 11 grain11).

A patch fill copies real sources, but the sources the search settles on are often flatter than the ring around
the hole (the empty sky between stars, the smooth side of gravel): the fill then reads as a smooth patch. Its
detail (the image minus a low-pass) is scaled up toward the ring's robust grain, at most ``gain`` x, and
saturates at ``clip`` x that grain, so a step larger than grain (a seam between copies, a region's edge) is not
amplified: only what the clip leaves below it is raised."""

from __future__ import annotations

import cv2
import numpy as np

ROBUST = 1.4826  # median absolute deviation -> sigma


def raised(
    detail: np.ndarray, target: np.ndarray | float, have: np.ndarray, gain: float, clip: float
) -> np.ndarray:
    """``detail`` (HxWx3) scaled by ``target / have`` (at least 1, at most ``gain``) and clipped at ``clip`` x
    ``target``: the one rule the soft shading (shading.py) and the patch fill's grain gain share."""
    return np.clip(detail * np.clip(target / have, 1.0, gain), -clip * target, clip * target)


def local_rms(detail: np.ndarray, where: np.ndarray | None, window: float) -> np.ndarray:
    """RMS of ``detail`` (HxWx3, mean over channels) over a Gaussian ``window``, over ``where``'s pixels only
    (all when None): HxWx1, + 1e-3 so it can divide."""
    energy = (detail**2).mean(axis=2)
    if where is None:
        return np.sqrt(cv2.GaussianBlur(energy, (0, 0), window))[:, :, None] + 1e-3
    w = where.astype(np.float32)
    num = cv2.GaussianBlur(energy * w, (0, 0), window)
    den = np.maximum(cv2.GaussianBlur(w, (0, 0), window), 1e-6)
    return np.sqrt(np.maximum(num / den, 0.0))[:, :, None] + 1e-3


def _coherence(gray: np.ndarray, window: float) -> np.ndarray:
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    jxx = cv2.GaussianBlur(gx * gx, (0, 0), window)
    jyy = cv2.GaussianBlur(gy * gy, (0, 0), window)
    jxy = cv2.GaussianBlur(gx * gy, (0, 0), window)
    return np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / np.maximum(jxx + jyy, 1e-6)


def raise_grain(
    img: np.ndarray,
    free: np.ndarray,
    gain: float,
    clip: float = 1.5,
    sigma: float = 1.5,
    reach: float = 21.0,
    window: float = 6.0,
    labels: np.ndarray | None = None,
    min_ring: int = 200,
    smooth: float = 1.0,
    edge: float = 0.5,
    calm: float = 1.0,
) -> np.ndarray:
    """``img`` (HxWx3 uint8, the hole ``free`` already filled) with the fill's grain raised toward its ring's.

    The ring: known pixels within ``reach`` px of the hole whose structure tensor's coherence is below ``edge``
    (grain and stars, not edges, as ``patchmatch._detail_floor`` counts them); its grain is the robust sigma of
    the detail (image minus a ``sigma`` px Gaussian). With ``labels`` (the structure path's), each label in the
    hole takes the grain of its own part of the ring when that part has ``min_ring`` pixels. Where the ring's
    grain is below ``smooth`` levels the fill is left alone. Within the hole, the fill's grain is the local RMS
    (``window``) of its detail clipped at ``clip`` x the target (steps do not count as grain); the detail is
    raised by target / that, 1 to ``gain`` x, and saturates at ``clip`` x the target: a step keeps its size."""
    if gain <= 1.0 or not free.any() or free.all():
        return img
    f = img.astype(np.float32)
    detail = f - cv2.GaussianBlur(f, (0, 0), sigma)
    mag = np.abs(detail).mean(axis=2)
    dist = cv2.distanceTransform((~free).astype(np.uint8), cv2.DIST_L2, 3)
    ring = ~free & (dist <= reach)
    coherent = _coherence(f.mean(axis=2), 2.0) >= edge if edge < 1.0 else np.zeros(free.shape, bool)
    ring &= ~coherent
    if np.count_nonzero(ring) < min_ring:
        return img
    target = np.zeros(free.shape, np.float32)
    target[free] = ROBUST * float(np.median(mag[ring]))
    if labels is not None:
        for k in np.unique(labels[free]):
            own = labels == k
            if k >= 0 and np.count_nonzero(ring & own) >= min_ring:
                target[free & own] = ROBUST * float(np.median(mag[ring & own]))
    target = np.where(target >= smooth, target, 0.0).astype(np.float32)
    if not target.any():
        return img
    t3 = target[:, :, None]
    capped = np.clip(detail, -clip * t3, clip * t3)
    have = local_rms(capped, free, window)
    extra = raised(detail, t3, have, gain, clip) - capped
    if calm > 0:
        # beside a step (an edge or a seam between copies: larger than the clip, one orientation) the detail is
        # the step's own blurred flank, and raising it would draw a halo along it: no gain within ``calm`` x
        # ``sigma`` px of one (stars and specks, with no orientation, keep theirs)
        step = (mag > clip * target) & coherent & free
        if step.any():
            r = max(1, int(round(calm * sigma)))
            near = cv2.dilate(
                step.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)
            )
            extra *= (1.0 - np.clip(cv2.GaussianBlur(near.astype(np.float32), (0, 0), 1.0), 0.0, 1.0))[
                :, :, None
            ]
    out = f.copy()
    out[free] += extra[free]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)

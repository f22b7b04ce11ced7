"""How wide a strip's shade ramps where it enters the hole: a soft shadow's penumbra or a band of a third colour.

Both the structure step (which leaves a penumbra to the soft-edge rule instead of continuing it as a band) and
the shading (which rebuilds the penumbra's low-pass at the measured width) ask this, so it lives below both."""

from __future__ import annotations

import cv2
import numpy as np

PLATEAU = 0.45  # of the ramp: a profile that stays half-way longer than this has a flat middle (a band)
MIN_CONTRAST = 12.0  # levels between the ring's dark and lit: below it one surface (a plain membrane) is used
# of the contrast: a profile that changes more than this within STEP_PX px has a hard edge in it, whatever its
# 10-90 % width says (a rocket's white body shading to beige, then its hard edge on the sky: 7.5 px "wide", half
# of it within 2 px: 0.50); a penumbra's steepest 2 px carry 0.19-0.26 (the coffee's shadow at 0.8-2.5x, as a JPEG)
STEP_MAX = 0.4
STEP_PX = 2.0  # photo px: a hard edge is 1-2 px at any size, a penumbra widens with the photo


def _luma(img: np.ndarray) -> np.ndarray:
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def ramp_across(
    rgb: np.ndarray,
    hole: np.ndarray,
    point: np.ndarray,
    heading: np.ndarray,
    width: float,
    unit: float = 1.0,
    shade: Shade | None = None,
) -> float:
    """How wide (px, 10 % to 90 %) the shade changes across a strip's entry, measured on the known pixels just
    before it enters the hole; 0 when it does not ramp: a penumbra that k-means cut into dark | mid | lit
    rises steadily (the coffee's saucer: 17 px, 24 % of it half-way), a band of a third colour between two
    edges steps up, stays flat, steps up again (tests/test_structure.py's strip: 61 % half-way), and a hard edge
    steps (``STEP_MAX``), even where the surface beside it shades off first. ``unit``: crop
    px per analysis px (``1 / structure._analysis_scale``): the px lengths below are the structure's, which sees
    a large crop shrunk (the coffee at 2.5x: the hole's edge runs beside the strip for 20 px back, all that was
    looked at, so no profile was clear of the hole and the penumbra was taken for a band). ``shade``: the crop's
    ``Shade`` where the caller asks more than once (``profile_across``)."""
    return ramp_of(profile_across(rgb, hole, point, heading, width, unit, shade))


def ramp_of(across: tuple[np.ndarray, np.ndarray] | None) -> float:
    """``ramp_across`` of a profile ``profile_across`` took: a caller that needs both takes the profile once."""
    if across is None:
        return 0.0
    prof, offsets = across
    end = max(2, len(prof) // 6)
    lo, hi = float(prof[:end].mean()), float(prof[-end:].mean())
    if abs(hi - lo) < MIN_CONTRAST:
        return 0.0
    t = (prof - lo) / (hi - lo)  # 0 .. 1 from one side to the other
    high = np.nonzero(t >= 0.9)[0]
    if not high.size:
        return 0.0
    low = np.nonzero(t[: high[0]] < 0.1)[0]  # the last place still on the first side before the rise
    start = offsets[low[-1]] if low.size else offsets[0]
    stop = offsets[high[0]]
    ramp = float(stop - start)
    lag = int(round(2 * STEP_PX))  # samples are 0.5 px apart
    if float(np.abs(t[lag:] - t[:-lag]).max()) > STEP_MAX:  # a hard edge (with a ramp beside it): no penumbra
        return 0.0
    middle = 0.5 * float(((t > 0.35) & (t < 0.65)).sum())  # px the shade spends half-way (samples: 0.5 px)
    if middle > PLATEAU * ramp:  # dark | a flat third colour | lit: a band between two edges, not a ramp
        return 0.0
    return ramp


class Shade:
    """One crop's known shade (luma, sigma-1 blurred over the known px only) that every profile samples, made at
    the first profile and kept: it is per crop, not per profile, and a reshade asks up to ~150 profiles of one
    crop (``shading._ring_groups``: two per candidate px); each made its own, two full-crop blurs apiece (the
    coffee at 1.7x: 0.5 s of its erase, growing with crop area x candidates). Hold one per (rgb, hole) and
    drop it with them: it is no module state and is never shared between crops."""

    def __init__(self, rgb: np.ndarray, hole: np.ndarray) -> None:
        self.rgb, self.hole = rgb, hole
        self._smooth: np.ndarray | None = None

    @property
    def smooth(self) -> np.ndarray:
        if self._smooth is None:
            self._smooth = _smooth_luma(self.rgb, self.hole)
        return self._smooth


def _smooth_luma(rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
    known = (~hole).astype(np.float32)
    luma = _luma(rgb.astype(np.float32)) * known
    return cv2.GaussianBlur(luma, (0, 0), 1.0) / np.maximum(cv2.GaussianBlur(known, (0, 0), 1.0), 1e-6)


def profile_across(
    rgb: np.ndarray,
    hole: np.ndarray,
    point: np.ndarray,
    heading: np.ndarray,
    width: float,
    unit: float = 1.0,
    shade: Shade | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The shade (luma) across a strip's entry and its offsets (px, 0.5 apart), averaged over the profiles 4-12
    (or up to 20) px back that lie clear of the hole (``ramp_across``); None where none does. ``shade`` (of this
    ``rgb`` and ``hole``): the crop's blurred luma, made once; without it, made for this one call."""
    if shade is not None and (shade.rgb is not rgb or shade.hole is not hole):
        raise ValueError("shade was made for another crop")
    smooth = shade.smooth if shade is not None else _smooth_luma(rgb, hole)
    normal = np.array([-heading[1], heading[0]])
    reach = 2.0 * width + 6.0 * unit
    offsets = np.arange(-reach, reach + 0.5, 0.5)
    profiles = []
    # 4-12 px back; where the hole's edge runs close along the strip's side and each of those crosses it, the
    # next ones back to 20 px (sweep12: the coffee's at --grow 5, whose dark end lay 0.5-3 px in the hole)
    for back in [*range(4, 13, 2), *range(14, 21, 2)]:
        if back > 12 and profiles:
            break
        base = point - back * unit * heading
        xs = (base[0] + offsets * normal[0]).astype(np.float32)
        ys = (base[1] + offsets * normal[1]).astype(np.float32)
        inside = (xs >= 0) & (ys >= 0) & (xs <= hole.shape[1] - 1) & (ys <= hole.shape[0] - 1)
        if not inside.all() or hole[np.round(ys).astype(int), np.round(xs).astype(int)].any():
            continue
        profiles.append(cv2.remap(smooth, xs[None], ys[None], cv2.INTER_LINEAR)[0])
    if not profiles:
        return None
    return np.mean(profiles, axis=0), offsets

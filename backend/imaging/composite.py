"""Compositing an edit back into the original: bit-exact outside the mask, feathered only inward.

Generators change pixels they were not asked to (the VAE round trip alters the whole frame, resampling blurs),
so every op pastes its result through ``composite``: wherever the mask is 0 the output is the original's exact
bytes. Feathering works inward (``feather_inward``), so the blend zone lies inside the mask and never leaks out.

The blend weights are the mask as ops return it (``mask_to_u8``: 256 levels), not the float mask: a weight of
0.001 rounds to 0 in the returned mask but would still move a u16 or float sample, so a pixel the returned mask
calls untouched must be untouched. Quantising the weights here makes "mask == 0" and "bit-identical" the same
set of pixels in every sample type.
"""

from __future__ import annotations

import cv2
import numpy as np

from .formats import as_hwc, from_float, match_channels, split_alpha, to_float
from .masks import bbox, mask_to_float, mask_to_u8


def feather_inward(mask: np.ndarray, radius: float) -> np.ndarray:
    """float32 HxW: the mask ramped from 0 at its edge to full strength ``radius`` px inside.

    The result is never larger than the mask and is 0 exactly where the mask is 0, so blending with it
    cannot touch pixels outside the mask. Soft (painted) values stay soft: the ramp multiplies them. The image
    border does not count as an edge (nothing lies beyond it to blend with).
    """
    m = mask_to_float(mask)
    if radius <= 0:
        return m.copy()
    inside = (m > 0).astype(np.uint8)
    padded = cv2.copyMakeBorder(inside, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    ramp = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    ramp *= np.float32(1.0 / radius)  # in place: this runs on every edit's crop
    np.minimum(ramp, 1.0, out=ramp)
    ramp *= m
    return ramp


def composite(
    original: np.ndarray,
    edited: np.ndarray,
    mask: np.ndarray,
    *,
    keep_alpha: bool = True,
) -> np.ndarray:
    """Blend ``edited`` into ``original`` by ``mask``; returns an array with ``original``'s shape and dtype.

    ``original``: HxW or HxWxC (C 1..4) in uint8/uint16/float16/float32. ``edited``: same HxW, any supported
    dtype, with or without alpha, gray or RGB (converted to the original's colour channels). ``mask``: HxW,
    float [0, 1], bool or uint8. Where mask == 0 the result is bit-identical to ``original``; where mask == 1 it
    is ``edited`` converted to the original's type. ``keep_alpha`` keeps the original's alpha channel
    untouched; otherwise alpha is blended too (an edited image without alpha counts as opaque).
    """
    if edited.shape[:2] != original.shape[:2]:
        raise ValueError(f"edited {edited.shape[:2]} and original {original.shape[:2]} sizes differ")
    m = mask_to_float(mask)
    if m.shape != original.shape[:2]:
        raise ValueError(f"mask {m.shape} and image {original.shape[:2]} sizes differ")

    orig_hwc = as_hwc(original)
    out = orig_hwc.copy()
    box = bbox(m > 0)
    if box is None:
        return out.reshape(original.shape)
    # blend only inside the mask's bounding box: a small edit on a 4096x4096 layer stays cheap
    x0, y0, x1, y1 = box
    region = np.s_[y0:y1, x0:x1]
    weights = blend_weights(m[region])
    out[region] = _blend(orig_hwc[region], as_hwc(edited)[region], weights, keep_alpha)
    return out.reshape(original.shape)


def blend_weights(mask: np.ndarray) -> np.ndarray:
    """float32 HxW: the mask on the 256-level grid of ``mask_to_u8`` (what ops return as their mask).

    Zero exactly where the returned u8 mask is 0 and 1.0 exactly where it is 255, whatever the float mask was."""
    return mask_to_u8(mask).astype(np.float32) / np.float32(255.0)


def _blend(orig: np.ndarray, edited: np.ndarray, m: np.ndarray, keep_alpha: bool) -> np.ndarray:
    o_col, o_alpha = split_alpha(orig)
    e_col, e_alpha = split_alpha(edited)
    ncol = o_col.shape[2]
    if o_alpha is not None and not keep_alpha:
        return _blend_with_alpha(orig, match_channels(to_float(e_col), ncol), e_alpha, m)
    w = m[:, :, None]
    # edited * w + original * (1 - w), in place (no extra full-size temporaries); exact at w = 0 and w = 1
    blended = match_channels(to_float(e_col), ncol)
    blended *= w
    o = to_float(o_col)
    holes = _non_finite(o)
    o *= 1.0 - w
    if holes is not None:  # a NaN/inf sample has nothing to blend with: inside the edit it is replaced whole
        o[holes] = 0.0
        np.divide(blended, w, out=blended, where=holes & (w > 0))
    blended += o
    out = orig.copy()
    out[:, :, :ncol] = from_float(blended, orig.dtype)
    # bit-exact outside the mask whatever the float round trip did (kept alpha was never touched)
    outside = m <= 0
    out[outside] = orig[outside]
    return out


def _blend_with_alpha(
    orig: np.ndarray, e_col: np.ndarray, e_alpha: np.ndarray | None, m: np.ndarray
) -> np.ndarray:
    """Both alphas blended too, colours premultiplied: a pixel the edit makes transparent adds no colour, so
    the soft edge between a kept object and an erased (transparent) surround shows the object's colour, not a
    mix with whatever colour the transparent pixels happen to hold."""
    o_col, o_alpha = split_alpha(orig)
    oa = to_float(o_alpha)
    ea = np.clip(to_float(e_alpha), 0.0, 1.0) if e_alpha is not None else np.ones(m.shape, np.float32)
    a = oa + (ea - oa) * m
    o = to_float(o_col)
    holes = _non_finite(o)
    if holes is not None:
        o[holes] = 0.0
    premult = e_col * (ea * m)[:, :, None] + o * (oa * (1.0 - m))[:, :, None]
    # where the blended alpha is 0 no colour shows: keep the edit's colour there (it is what a later alpha
    # change would reveal) instead of dividing by zero
    colour = np.where(a[:, :, None] > 0, premult / np.maximum(a, 1e-12)[:, :, None], e_col)
    out = orig.copy()
    out[:, :, : o_col.shape[2]] = from_float(colour, orig.dtype)
    out[:, :, -1] = from_float(a, orig.dtype)
    outside = m <= 0
    out[outside] = orig[outside]
    return out


def _non_finite(samples: np.ndarray) -> np.ndarray | None:
    """Where a float layer holds NaN or +-inf (None when it holds none, the usual case: one cheap check)."""
    if samples.dtype.kind != "f" or np.isfinite(samples).all():
        return None
    return ~np.isfinite(samples)

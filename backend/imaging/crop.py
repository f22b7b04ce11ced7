"""Crop/scale plans: run a model on the region around a selection at the model's native resolution.

A 6000x4000 photo with a 300 px object is cropped to the object's box plus context, and that crop is scaled so
its long side is the model's native size (512 or 1024, multiples of 8): the model never runs at 6000x4000, and a
tiny selection is upscaled enough for the model to see it. ``from_model`` scales the model's output back to the
crop's size; the caller composites it into the full image with ``composite``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .masks import bbox


def resize(arr: np.ndarray, size: tuple[int, int], *, smooth: bool = True) -> np.ndarray:
    """Resize HxW or HxWxC (C<=4, any supported dtype) to ``size`` = (w, h); shape rank and dtype are kept.

    Shrinking uses area averaging (no aliasing), enlarging bilinear; ``smooth=False`` uses nearest (labels).
    """
    w, h = int(size[0]), int(size[1])
    if w < 1 or h < 1:
        raise ValueError(f"resize to an empty size {size}")
    if arr.shape[1] == w and arr.shape[0] == h:
        return arr.copy()
    src = arr
    if arr.dtype == np.float16 or arr.dtype == np.bool_:
        src = arr.astype(np.float32)
    squeeze = src.ndim == 3 and src.shape[2] == 1
    if squeeze:
        src = src[:, :, 0]
    if not smooth:
        interp = cv2.INTER_NEAREST
    elif w <= arr.shape[1] and h <= arr.shape[0]:
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(src), (w, h), interpolation=interp)
    if squeeze or (arr.ndim == 3 and out.ndim == 2):
        out = out[:, :, None]
    return out.astype(arr.dtype, copy=False)


def _slide(lo: int, hi: int, size: int) -> tuple[int, int]:
    """Shift [lo, hi) to lie inside [0, size), keeping its length where it fits."""
    if lo < 0:
        lo, hi = 0, hi - lo
    if hi > size:
        lo, hi = max(0, lo - (hi - size)), size
    return lo, hi


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


@dataclass(frozen=True)
class CropPlan:
    """Where the crop sits in the image (``box`` = x0, y0, x1, y1, exclusive) and the size the model sees
    (``model_size`` = w, h). ``image_shape`` is the (H, W) the plan was made for."""

    box: tuple[int, int, int, int]
    model_size: tuple[int, int]
    image_shape: tuple[int, int]

    @property
    def crop_size(self) -> tuple[int, int]:
        """(w, h) of the crop in image pixels."""
        x0, y0, x1, y1 = self.box
        return x1 - x0, y1 - y0

    @property
    def scale(self) -> float:
        """Model pixels per image pixel along the long side (>1 means the crop is enlarged)."""
        cw, ch = self.crop_size
        return max(self.model_size[0] / cw, self.model_size[1] / ch)

    def crop(self, arr: np.ndarray) -> np.ndarray:
        """The crop of a full-size array (image or mask); a view, not a copy."""
        if arr.shape[:2] != self.image_shape:
            raise ValueError(f"array {arr.shape[:2]} does not match the planned image {self.image_shape}")
        x0, y0, x1, y1 = self.box
        return arr[y0:y1, x0:x1]

    def to_model(self, arr: np.ndarray, *, smooth: bool = True) -> np.ndarray:
        """Crop a full-size array (or take an already cropped one) and scale it to ``model_size``."""
        if arr.shape[:2] == self.image_shape:
            arr = self.crop(arr)
        return resize(arr, self.model_size, smooth=smooth)

    def from_model(self, arr: np.ndarray, *, smooth: bool = True) -> np.ndarray:
        """Scale a model-size array back to the crop's size (paste it with ``paste`` or ``composite``)."""
        return resize(arr, self.crop_size, smooth=smooth)

    def paste(self, full: np.ndarray, crop_values: np.ndarray) -> np.ndarray:
        """A copy of ``full`` with the crop region replaced by ``crop_values`` (crop-sized)."""
        out = full.copy()
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = crop_values
        return out


def plan_crop(
    mask: np.ndarray,
    image_shape: tuple[int, ...],
    *,
    context: float = 0.25,
    min_context: int = 16,
    target: int | None = 512,
    multiple: int = 8,
    allow_upscale: bool = True,
    max_upscale: float | None = None,
    keep_size: bool = False,
) -> CropPlan | None:
    """Plan a crop around ``mask``'s nonzero pixels; None when the mask is empty.

    The box grows by ``context`` x its long side (at least ``min_context`` px) on every side, clamped to the
    image. ``target`` is the model's native long side: the crop is scaled so its long side becomes ``target``
    (rounded to ``multiple``), at most ``max_upscale`` times enlarged, never enlarged when ``allow_upscale``
    is False. ``target=None`` keeps the crop's own size (classical fills that need no model resolution).
    ``keep_size=True``: near a border, the box slides inward instead of being cut, so the full amount of
    context is kept (fills that copy background from around the region need it).
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"empty image shape {image_shape}")
    if np.asarray(mask).shape[:2] != (h, w):
        raise ValueError(f"mask {np.asarray(mask).shape[:2]} does not match the image {(h, w)}")
    found = bbox(np.asarray(mask) > 0)
    if found is None:
        return None
    return plan_crop_around(
        found,
        image_shape,
        context=context,
        min_context=min_context,
        target=target,
        multiple=multiple,
        allow_upscale=allow_upscale,
        max_upscale=max_upscale,
        keep_size=keep_size,
    )


def plan_crop_around(
    found: tuple[int, int, int, int],
    image_shape: tuple[int, ...],
    *,
    context: float = 0.25,
    min_context: int = 16,
    target: int | None = 512,
    multiple: int = 8,
    allow_upscale: bool = True,
    max_upscale: float | None = None,
    keep_size: bool = False,
) -> CropPlan:
    """``plan_crop`` for a mask whose box (x0, y0, x1, y1; exclusive) is already known: a caller that keeps
    its mask as a window (``MaskWindow``) needs no full-size mask to plan its crop."""
    h, w = int(image_shape[0]), int(image_shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"empty image shape {image_shape}")
    x0, y0, x1, y1 = found
    pad = max(int(min_context), int(round(context * max(x1 - x0, y1 - y0))))
    if keep_size:
        bx0, bx1 = _slide(x0 - pad, x1 + pad, w)
        by0, by1 = _slide(y0 - pad, y1 + pad, h)
        box = (bx0, by0, bx1, by1)
    else:
        box = (max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad))
    cw, ch = box[2] - box[0], box[3] - box[1]
    if target is None:
        return CropPlan(box=box, model_size=(cw, ch), image_shape=(h, w))
    scale = target / max(cw, ch)
    if not allow_upscale:
        scale = min(scale, 1.0)
    if max_upscale is not None:
        scale = min(scale, max_upscale)
    model_size = (_round_to(cw * scale, multiple), _round_to(ch * scale, multiple))
    return CropPlan(box=box, model_size=model_size, image_shape=(h, w))

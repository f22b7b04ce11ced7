"""Pixel formats: every op works in float32 [0, 1] and hands results back in the host's sample type.

Hosts send uint8, uint16, float16 or float32 samples, HxWxC with C in 1 (gray), 2 (gray+alpha), 3 (RGB) or
4 (RGBA); a bare HxW array is treated as gray. Integer types map to [0, 1] by their full range; float types are
taken as they are (a linear-light float layer may exceed 1, so floats are never clipped on the way in).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SUPPORTED_DTYPES = (np.uint8, np.uint16, np.float16, np.float32)
_INT_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def _check_dtype(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in {np.dtype(d) for d in SUPPORTED_DTYPES}:
        raise TypeError(f"unsupported sample type {dtype}; expected uint8, uint16, float16 or float32")
    return dtype


def as_hwc(image: np.ndarray) -> np.ndarray:
    """View an HxW gray image as HxWx1 so every function can index channels the same way."""
    if image.ndim == 2:
        return image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected HxW or HxWxC with C in 1..4, got shape {image.shape}")
    return image


def to_float(image: np.ndarray) -> np.ndarray:
    """float32 copy of ``image``: uint8/255, uint16/65535, float16/float32 as they are. Shape is kept."""
    dtype = _check_dtype(image.dtype)
    if dtype in _INT_MAX:
        return image.astype(np.float32) / np.float32(_INT_MAX[dtype])
    return image.astype(np.float32)


def from_float(values: np.ndarray, like: np.ndarray | np.dtype | type) -> np.ndarray:
    """Convert float values back to ``like``'s dtype (an array or a dtype).

    Integer targets are scaled, rounded and clipped to their range; float targets are cast unclipped.
    ``from_float(to_float(x), x)`` is bit-identical to ``x`` for every supported dtype.
    """
    dtype = _check_dtype(like.dtype if isinstance(like, np.ndarray) else like)
    values = np.asarray(values, dtype=np.float32)
    if dtype in _INT_MAX:
        top = _INT_MAX[dtype]
        return np.clip(np.rint(values * np.float32(top)), 0, top).astype(dtype)
    return values.astype(dtype)


def split_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(colour channels HxWx{1,3}, alpha HxW or None). Gray+alpha (C=2) and RGBA (C=4) carry alpha."""
    hwc = as_hwc(image)
    if hwc.shape[2] in (2, 4):
        return hwc[:, :, :-1], hwc[:, :, -1]
    return hwc, None


def to_rgb_u8(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 for models and OpenCV: gray is replicated, alpha dropped, floats clipped to [0, 1]."""
    colour, _ = split_alpha(image)
    if colour.dtype == np.uint8:
        out = colour
    else:
        out = from_float(np.clip(to_float(colour), 0.0, 1.0), np.uint8)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


def see_through(image: np.ndarray) -> np.ndarray | None:
    """HxW uint8 alpha of a layer that is not opaque everywhere; None for no alpha channel or all opaque.

    Erase fills this alpha too: an object on a transparent layer must become transparent, not black."""
    _, alpha = split_alpha(image)
    if alpha is None:
        return None
    top = _INT_MAX.get(alpha.dtype, 1.0)
    if (alpha >= top).all():
        return None
    return from_float(np.clip(to_float(alpha), 0.0, 1.0), np.uint8)


def bleed_colours(rgb: np.ndarray, solid: np.ndarray) -> np.ndarray:
    """A copy of ``rgb`` where each pixel outside ``solid`` takes the colour of the nearest ``solid`` pixel.

    Transparent pixels carry arbitrary colours (often black); a fill that copies them would show them wherever
    its alpha comes out above 0. Unchanged when nothing (or everything) is solid."""
    solid = np.asarray(solid, bool)
    if not solid.any() or solid.all():
        return rgb.copy()
    _, labels = cv2.distanceTransformWithLabels(
        (~solid).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    ys, xs = np.nonzero(solid)  # label k (1-based) is the k-th zero pixel of the input in row-major order
    lut = np.stack([ys, xs], axis=1)
    src = lut[labels - 1]
    return rgb[src[..., 0], src[..., 1]]


@dataclass(frozen=True)
class FillEncoding:
    """How a layer's colours become the 8-bit copy a fill works on, and back.

    Integer layers: the plain ``to_rgb_u8`` (identity). Float layers may exceed 1 (HDR) or be linear light (GIMP
    sends linear images as they are): clipping to [0, 1] filled an HDR sky with exactly 1.0 (a dark disc), and
    256 even steps left a linear dark gradient with 3 values. So a float crop's range ``lo``..``hi`` (its 0.1
    and 99.9 percentiles, at least 0..1) maps to 0..255 through the power ``gamma`` that puts its median at a
    quarter of the range or above: the copy spends its levels where the crop's values are; the decode inverts
    it (values past the range come back clipped to it)."""

    lo: float = 0.0
    hi: float = 1.0
    gamma: float = 1.0

    @classmethod
    def for_crop(cls, image: np.ndarray) -> FillEncoding:
        colour, _ = split_alpha(image)
        if colour.dtype.kind != "f":
            return cls()
        f = colour.astype(np.float32)
        f = f[np.isfinite(f)]
        if f.size == 0:
            return cls()
        # a percentile range: one hot pixel (a sun, a firefly) must not take the levels from the surround
        low, high = np.percentile(f, [0.1, 99.9])
        lo, hi = min(0.0, float(low)), max(1.0, float(high))
        median = (float(np.median(f)) - lo) / (hi - lo)
        gamma = (
            1.0
            if median >= 0.25 or median <= 0
            else float(np.clip(np.log(0.25) / np.log(median), 1 / 2.4, 1))
        )
        return cls(lo, hi, gamma)

    @property
    def identity(self) -> bool:
        return (self.lo, self.hi, self.gamma) == (0.0, 1.0, 1.0)

    def encode(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 (like ``to_rgb_u8``)."""
        if self.identity:
            return to_rgb_u8(image)
        colour, _ = split_alpha(image)
        f = np.nan_to_num(colour.astype(np.float32), nan=self.lo, posinf=self.hi, neginf=self.lo)
        unit = np.clip((f - self.lo) / (self.hi - self.lo), 0.0, 1.0) ** self.gamma
        out = from_float(unit, np.uint8)
        return np.ascontiguousarray(np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out)

    def decode(self, unit: np.ndarray) -> np.ndarray:
        """float32 in the layer's own units from the fill's result as floats in [0, 1] (``to_float`` of it)."""
        if self.identity:
            return unit
        return (np.clip(unit, 0.0, 1.0) ** (1.0 / self.gamma) * (self.hi - self.lo) + self.lo).astype(
            np.float32
        )


def to_gray_float(image: np.ndarray) -> np.ndarray:
    """HxW float32 luma (Rec. 601 weights) of the colour channels; alpha is ignored."""
    colour, _ = split_alpha(image)
    f = to_float(colour)
    if f.shape[2] == 1:
        return f[:, :, 0]
    return (f[:, :, 0] * 0.299 + f[:, :, 1] * 0.587 + f[:, :, 2] * 0.114).astype(np.float32)


def match_channels(colour: np.ndarray, channels: int) -> np.ndarray:
    """Turn float HxWx{1,3} colour into ``channels`` colour channels (1 -> luma, 3 -> replicated gray)."""
    colour = as_hwc(colour)
    have = colour.shape[2]
    if have == channels:
        return colour
    if channels == 1 and have == 3:
        return to_gray_float(colour)[:, :, None]
    if channels == 3 and have == 1:
        return np.repeat(colour, 3, axis=2)
    raise ValueError(f"cannot turn {have} colour channels into {channels}")

"""Shared image and mask maths for every op: pixel formats, crop/scale plans, masks, compositing.

Nothing here is rewritten per op: erase, replace and Imagic all crop, scale and composite through these
functions, so the bit-exactness guarantee outside the edit lives in one place (``composite``).
"""

from .composite import blend_weights, composite, feather_inward
from .crop import CropPlan, plan_crop, plan_crop_around, resize
from .formats import (
    FillEncoding,
    bleed_colours,
    from_float,
    see_through,
    split_alpha,
    to_float,
    to_gray_float,
    to_rgb_u8,
)
from .masks import (
    MaskWindow,
    bbox,
    bbox_positive,
    binarize,
    grow,
    mask_to_float,
    mask_to_u8,
    rim_residual,
    shrink,
)
from .membrane import membrane

__all__ = [
    "CropPlan",
    "FillEncoding",
    "MaskWindow",
    "bbox",
    "bbox_positive",
    "blend_weights",
    "binarize",
    "bleed_colours",
    "composite",
    "feather_inward",
    "from_float",
    "grow",
    "mask_to_float",
    "mask_to_u8",
    "membrane",
    "plan_crop",
    "plan_crop_around",
    "resize",
    "rim_residual",
    "see_through",
    "shrink",
    "split_alpha",
    "to_float",
    "to_gray_float",
    "to_rgb_u8",
]

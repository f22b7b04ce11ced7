"""ErasePipeline: snap the selection to the object, grow it over the object's edge, fill it with background.

Components are injected: a ``SnapPipeline`` (or None: the selection is used as is) and fillers by name
(``classical_fillers()`` by default; learned and diffusion fillers join the same dict). ``fill="auto"`` takes the
first of ``AUTO_ORDER`` present: a learned filler when one was injected, else the embedded auto filler
(PatchMatch completion, smooth gradients included). The fill
runs on the crop around the region (``imaging.plan_crop``), never on the whole layer, and the result is pasted
back through ``imaging.composite``: pixels outside the region are the input's exact bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend.imaging import bbox, composite, feather_inward, grow, plan_crop, to_float, to_rgb_u8
from backend.params.erase import EraseParams
from backend.snapping import SnapPipeline

from .fill_learned import LEARNED_FILLS
from .fillers import Filler, classical_fillers

Callback = Callable[[str, int, int], None]
AUTO_ORDER = (*LEARNED_FILLS, "auto")  # a learned filler when one was injected, else the embedded auto


class NothingToFill(ValueError):
    """The region is empty: there is no object to erase."""


class NoBackground(ValueError):
    """The region covers the whole crop/layer: there is no background left to fill from."""


@dataclass
class EraseOutput:
    image: np.ndarray  # the input's shape and dtype; bit-identical outside ``mask``
    mask: np.ndarray  # float32 HxW: the blend weights actually used (grown, feathered)
    snapped: np.ndarray  # float32 HxW: the snapped object mask before growing
    meta: dict[str, Any] = field(default_factory=dict)


class ErasePipeline:
    def __init__(self, snapper: SnapPipeline | None = None, fillers: dict[str, Filler] | None = None):
        self.snapper = snapper
        self.fillers: dict[str, Filler] = dict(classical_fillers())
        self.fillers.update(fillers or {})

    def resolve(self, fill: str) -> str:
        """The filler name ``fill`` stands for: "auto" is the first learned filler this pipeline was given, else
        the embedded auto filler (PatchMatch)."""
        if fill != "auto":
            return fill
        return next((name for name in AUTO_ORDER if name in self.fillers), fill)

    def __call__(
        self,
        image: np.ndarray,
        selection: np.ndarray,
        params: EraseParams | None = None,
        callback: Callback | None = None,
    ) -> EraseOutput:
        params = params or EraseParams()
        filler = self.fillers.get(self.resolve(params.fill))
        if filler is None:
            raise KeyError(f"unknown fill method {params.fill!r}; have: {', '.join(sorted(self.fillers))}")
        sel = np.asarray(selection, np.float32)
        if not (sel > 0).any():
            raise NothingToFill("the selection is empty")

        _report(callback, "snap", 0, 3)
        if self.snapper is not None and params.snap.enabled:
            snap = self.snapper(image, sel, params.snap)
            snapped, snap_meta = snap.mask, {"method": snap.method, **snap.meta}
        else:
            snapped, snap_meta = sel.copy(), {"method": "selection", "snapped": False}
        weights = _region_weights(snapped, params.grow, params.feather)
        if not (weights > 0).any():
            raise NothingToFill("nothing left to erase after snapping")

        _report(callback, "fill", 1, 3)
        target = filler.target if filler.target is not None else params.max_side
        plan = plan_crop(
            weights > 0,
            sel.shape,
            context=getattr(filler, "context", None) or params.context,
            keep_size=True,
            multiple=8 if filler.target is not None else 1,
            target=target,
            allow_upscale=filler.target is not None,
            min_context=_min_context(weights, getattr(filler, "min_crop", None)),
        )
        if plan is None:
            raise NothingToFill("nothing left to erase after snapping")
        hole_crop = plan.crop(weights) > 0
        if hole_crop.all():
            raise NoBackground("the region covers everything around it; there is no background to fill from")
        rgb = plan.to_model(to_rgb_u8(plan.crop(image)))
        hole = plan.to_model(hole_crop.astype(np.uint8), smooth=False) > 0
        if hole.all():
            raise NoBackground("the region covers everything around it; there is no background to fill from")
        filled = filler(rgb, hole)
        if filled.shape[:2] != rgb.shape[:2]:
            raise ValueError(f"filler {filler.name!r} returned {filled.shape[:2]}, expected {rgb.shape[:2]}")
        filled_crop = plan.from_model(to_float(np.asarray(filled)))

        _report(callback, "composite", 2, 3)
        # every weight > 0 lies inside the crop: composite there, copy the rest of the layer untouched
        out = image.copy()
        x0, y0, x1, y1 = plan.box
        out[y0:y1, x0:x1] = composite(plan.crop(image), filled_crop, plan.crop(weights))
        _report(callback, "composite", 3, 3)
        meta = {
            "snap": snap_meta,
            "fill": getattr(filler, "chosen", None) or filler.name,  # what really filled (auto picks one)
            "fill_requested": params.fill,
            "crop": list(plan.box),
            "model_size": list(plan.model_size),
        }
        return EraseOutput(out, weights, snapped, meta)


def _region_weights(snapped: np.ndarray, grow_px: int, feather_px: int) -> np.ndarray:
    """Blend weights: the snapped mask grown by ``grow_px``, binary where the object is (the fill replaces it
    whole), soft only where the user painted soft, feathered inward. Computed in a window around the mask,
    not over the whole layer."""
    out = np.zeros(snapped.shape, np.float32)
    box = bbox(snapped > 0)
    if box is None:
        return out
    h, w = snapped.shape
    pad = grow_px + 2
    x0, y0, x1, y1 = max(0, box[0] - pad), max(0, box[1] - pad), min(w, box[2] + pad), min(h, box[3] + pad)
    region = grow(snapped[y0:y1, x0:x1], grow_px)
    region = np.where(region >= 0.5, 1.0, region * 2).astype(np.float32)
    out[y0:y1, x0:x1] = feather_inward(region, feather_px)
    return out


def _min_context(weights: np.ndarray, min_crop: int | None) -> int:
    """Context in px so the crop is at least ``min_crop`` on its long side (where the layer has the room).

    A filler trained on fixed-size crops of photos (LaMa, MI-GAN: 512) then sees a small object among real
    surroundings at their own resolution, instead of a tight crop blown up many times."""
    box = bbox(weights > 0) if min_crop else None
    if box is None:
        return 16  # plan_crop's default
    return max(16, -(-(int(min_crop) - max(box[2] - box[0], box[3] - box[1])) // 2))


def _report(callback: Callback | None, stage: str, step: int, total: int) -> None:
    if callback is not None:
        callback(stage, step, total)


__all__ = ["EraseOutput", "EraseParams", "ErasePipeline", "NoBackground", "NothingToFill"]

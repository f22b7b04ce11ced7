"""SnapPipeline: a rough selection -> the mask of the object it was drawn around.

Methods (``SnapParams.method``):
- ``auto``: the injected segment-anything model when there is one (the op injects the best installed one:
  SAM-HQ, SAM 2.1 small, SAM 2.1 tiny, SAM ViT-B), falling back to ``combined`` when its mask fails the
  embedded candidates' own checks (area, rim touch, an outline on image edges: embedded.plausible); else
  ``combined``. ``meta["model"]`` says which model ran, what its candidates
  scored, and whether its mask was used or rejected (and why).
- ``combined`` (the embedded default, no downloads): several candidates (GrabCut variants, u2netp, an edge
  watershed) scored by evidence that needs no truth (boundary on image edges, colour separation, agreement
  with the selection); the best plausible one wins and is refined at full resolution; when every candidate
  looks wrong the selection is kept as it is. ``meta["candidates"]`` holds every candidate's evidence and
  score, ``meta["why"]`` the winner and its runner-up. See backend/snapping/embedded.py; measured on
  bench/realphoto.py and bench/erase_replace.py (docs/benchmarks/snap-realphoto.md).
- ``grabcut``, ``u2netp``, ``sam``: one method alone (``sam``: the injected segment-anything model, any family).
- ``none`` (or ``SnapParams.enabled=False``): the selection is returned unchanged.

Guarantees: the result never reaches beyond ``margin`` px around the selection; everything runs on the crop
around the selection, never on the whole layer. Soft selections: where the user's selection is partial
(0 < s < 1) the result is min(snapped, s), so alpha the user painted survives at the boundary; where the
selection is full the snap decides; the snap's own anti-aliased edge stays soft.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from backend.imaging import MaskWindow, bbox_positive, grow, mask_to_float, plan_crop_around, to_rgb_u8
from backend.params.snap import SnapParams, pipeline_method

from .grabcut import grabcut

METHODS = ("auto", "combined", "grabcut", "u2netp", "sam", "none")
Callback = Callable[[str, int, int], None]


@dataclass
class SnapOutput:
    mask: np.ndarray  # float32 HxW in [0, 1], aligned to the image
    method: str  # the method that produced it ("selection" when snapping was off or fell back)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SnapWindow:
    """``SnapOutput`` with its mask as a ``MaskWindow`` (``SnapPipeline.snap_window``)."""

    mask: MaskWindow
    method: str
    meta: dict[str, Any] = field(default_factory=dict)


def _pipeline_params(params: SnapParams | None) -> SnapParams:
    """``params`` (defaults when None) with a model's preset name (the ops' wire value) turned into the
    pipeline's method; an unknown method is an error."""
    params = params or SnapParams()
    if params.method != pipeline_method(params.method):
        params = replace(params, method=pipeline_method(params.method))
    if params.method not in METHODS:
        raise ValueError(f"unknown snap method {params.method!r}; expected one of {', '.join(METHODS)}")
    return params


def _model_evidence(
    rgb: np.ndarray, seed: np.ndarray, prob: np.ndarray, params: SnapParams
) -> dict[str, Any]:
    """The embedded snap's truth-free evidence for a model's mask (backend/snapping/embedded.py: boundary on
    image edges, colour separation, rim touch, area, fragments, solidity), at the embedded path's working
    resolution, and whether it passes the same checks (area, rim, and an outline that sits on image edges)."""
    from backend.imaging import resize

    from .embedded import Evidence, plausible, score_candidate, total_score, working_scale

    side = int(min(params.max_side_cap, max(params.max_side, max(rgb.shape[:2]) // 4)))
    h, w = seed.shape
    scale = working_scale(h, w, side)
    mask = prob > 0.5
    if scale < 1.0:
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        rgb = resize(rgb, size)
        seed = resize(seed.astype(np.uint8), size, smooth=False) > 0
        mask = resize(mask.astype(np.uint8), size, smooth=False) > 0
    scores = score_candidate(mask, Evidence.of(rgb, seed))
    return {
        **{k: round(v, 3) for k, v in scores.items()},
        "score": round(total_score(scores), 3),
        "plausible": plausible(scores),
    }


def _implausible_because(info: dict[str, Any]) -> str:
    """The failed checks in words, for the meta (a user's log)."""
    from .embedded import MAX_TOUCH, MIN_AREA, MIN_EDGE

    touch, area = info["touch"], info["area"]
    why = []
    if area < MIN_AREA:
        why.append(f"its area is {area:.0%} of the selection's (under {MIN_AREA:.0%}: it collapsed)")
    if touch > MAX_TOUCH:
        why.append(
            f"it covers {touch:.0%} of the selection's inner rim (over {MAX_TOUCH:.0%}: it follows the "
            "selection, not an object inside it)"
        )
    if info.get("edge", MIN_EDGE) < MIN_EDGE:
        why.append(f"its outline does not sit on image edges (edge {info['edge']:.2f}, under {MIN_EDGE})")
    return " and ".join(why)


class SnapPipeline:
    """Injected components: ``u2net`` (a callable rgb -> probability, e.g. ``U2NetP()``; None to skip) and
    ``sam`` (a ``SamSegmenter``; None when its weights are not installed). GrabCut needs nothing."""

    def __init__(
        self,
        u2net: Callable[[np.ndarray], np.ndarray] | None = None,
        sam: Any | None = None,
        model_choice: dict[str, Any] | None = None,
    ):
        self.u2net = u2net
        self.sam = sam
        self.model_choice = (
            model_choice  # how the op picked ``sam`` (order, installed, skipped): for the meta
        )

    @classmethod
    def default(cls, sam: Any | None = None, model_choice: dict[str, Any] | None = None) -> SnapPipeline:
        """GrabCut + u2netp when its file is found (no downloads), plus ``sam`` if given."""
        from .u2net import find_u2netp, shared_u2netp

        return cls(u2net=shared_u2netp() if find_u2netp() else None, sam=sam, model_choice=model_choice)

    def __call__(
        self,
        image: np.ndarray,
        selection: np.ndarray,
        params: SnapParams | None = None,
        callback: Callback | None = None,
    ) -> SnapOutput:
        params = _pipeline_params(params)
        sel = mask_to_float(selection)
        if sel.shape != image.shape[:2]:
            raise ValueError(f"selection {sel.shape} does not match the image {image.shape[:2]}")
        box = bbox_positive(sel)  # soft-painted parts belong to the selection too (capped below)
        if not params.enabled or params.method == "none" or box is None:
            return SnapOutput(sel.copy(), "selection", {"snapped": False})
        found = self._snap(image, sel, box, params, callback)
        return SnapOutput(found.mask.full(), found.method, found.meta)

    def snap_window(
        self,
        image: np.ndarray,
        selection: np.ndarray,
        params: SnapParams | None = None,
        callback: Callback | None = None,
        *,
        box: tuple[int, int, int, int] | None = None,
    ) -> SnapWindow:
        """``__call__``'s answer as a ``MaskWindow`` (the same values, zero outside its window), reading the
        selection only in the crop around it: no full-size copy of a 4096x4096 selection (64 MiB float32).
        ``box``: ``bbox_positive(selection)`` when the caller already has it. Values of ``selection`` outside
        its positive box are taken as 0 (a cleaned selection has none there)."""
        params = _pipeline_params(params)
        if selection.shape[:2] != image.shape[:2]:
            raise ValueError(f"selection {selection.shape[:2]} does not match the image {image.shape[:2]}")
        box = bbox_positive(selection) if box is None else box
        if box is None:
            return SnapWindow(MaskWindow.empty(selection.shape), "selection", {"snapped": False})
        if not params.enabled or params.method == "none":
            x0, y0, x1, y1 = box
            sel = mask_to_float(selection[y0:y1, x0:x1]).copy()
            return SnapWindow(MaskWindow(sel, box, image.shape[:2]), "selection", {"snapped": False})
        return self._snap(image, selection, box, params, callback)

    def _snap(
        self,
        image: np.ndarray,
        selection: np.ndarray,
        box: tuple[int, int, int, int],
        params: SnapParams,
        callback: Callback | None,
    ) -> SnapWindow:
        """The snap in the crop around the selection's positive ``box``: the selection (full-size, raw or
        cleaned) is read and cleaned (``mask_to_float``) only there."""
        pad = max(params.margin + 8, 16)
        plan = plan_crop_around(box, selection.shape, context=params.context, min_context=pad, target=None)
        rgb = to_rgb_u8(plan.crop(image))
        crop_sel = mask_to_float(plan.crop(selection))
        seed = crop_sel > 0
        _report(callback, "snap", 0, 2)
        prob, method, meta = self._segment(rgb, seed, params, callback)
        _report(callback, "snap", 2, 2)

        limit = grow(seed, params.margin) > 0
        snapped = np.where(limit, np.clip(prob, 0.0, 1.0), 0.0).astype(np.float32)
        partial = (crop_sel > 0) & (crop_sel < 1)
        snapped[partial] = np.minimum(snapped[partial], crop_sel[partial])
        if self.model_choice and "model" not in meta:  # auto found models but none ran (all failed to load)
            meta["model"] = {"choice": self.model_choice}
        meta.update({"snapped": method != "selection", "crop": list(plan.box)})
        return SnapWindow(MaskWindow(snapped, plan.box, selection.shape[:2]), method, meta)

    def _segment(
        self, rgb: np.ndarray, seed: np.ndarray, params: SnapParams, callback: Callback | None
    ) -> tuple[np.ndarray, str, dict[str, Any]]:
        method = params.method
        if method == "auto" and self.sam is not None:
            # the model first; the embedded methods take over when its mask looks wrong (same checks as 'combined')
            prob, info = self._model_mask(rgb, seed, params)
            if info["plausible"]:
                info["verdict"] = "used: its mask passed the plausibility checks"
                return prob, "sam", {"model": info}
            info["verdict"] = f"rejected: {_implausible_because(info)}; the embedded snap decided"
            prob, name, meta = self._segment(rgb, seed, replace(params, method="combined"), callback)
            return prob, name, {**meta, "model": info}
        elif method == "auto":
            method = "combined"
        if method == "sam":
            if self.sam is None:
                raise LookupError("SAM snapping needs SAM weights; none are loaded")
            prob, info = self._model_mask(rgb, seed, params)
            info["verdict"] = "used: asked for by name"
            return prob, "sam", {"model": info}
        if method == "u2netp":
            if self.u2net is None:
                raise LookupError("u2netp snapping needs u2netp.onnx; it was not found")
            return self.u2net(rgb) * seed, "u2netp", {}
        side = int(min(params.max_side_cap, max(params.max_side, max(rgb.shape[:2]) // 4)))
        params = replace(params, max_side=side)
        if method == "grabcut":
            return grabcut(rgb, seed, max_side=side), "grabcut", {}
        return self._combined(rgb, seed, params, callback)

    def _model_mask(self, rgb: np.ndarray, seed: np.ndarray, params: SnapParams) -> tuple[np.ndarray, dict]:
        """The injected model's mask and what decided it (its own scores plus the pipeline's checks)."""
        gap = max(4, params.margin // 2)
        segment = getattr(self.sam, "segment", None)
        if segment is not None:
            prob, info = segment(rgb, seed, gap=gap)
        else:  # a bare callable (tests inject lambdas)
            prob, info = self.sam(rgb, seed, gap=gap), {"name": "sam"}
        info = {**info, **_model_evidence(rgb, seed, prob, params)}
        if self.model_choice:
            info["choice"] = self.model_choice
        return prob, info

    def _combined(
        self, rgb: np.ndarray, seed: np.ndarray, params: SnapParams, callback: Callback | None
    ) -> tuple[np.ndarray, str, dict[str, Any]]:
        """The embedded snap (backend/snapping/embedded.py): candidates chosen by truth-free evidence."""
        from .embedded import FOLLOW_PX, snap_embedded

        _report(callback, "snap", 1, 2)
        # a part the selection's edge cuts is followed outside only as far as the result may reach
        follow = min(FOLLOW_PX, params.margin)
        return snap_embedded(rgb, seed, side=params.max_side, u2net=self.u2net, follow=follow)


def _report(callback: Callback | None, stage: str, step: int, total: int) -> None:
    if callback is not None:
        callback(stage, step, total)

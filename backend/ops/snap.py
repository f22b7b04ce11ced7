"""Op ``snap``: the selection snapped to the object's boundary, as a mask (no pixels change).

Its result is a mask, not an image: ``OpResult(image=None, mask=snapped uint8 HxW)``. Hosts turn the mask into
a selection (or a layer mask); the CLI writes it to ``--out``. Imports stay cheap: OpenCV, onnxruntime and
torch load inside ``run``.
"""

from __future__ import annotations

from typing import Any

from backend.params.snap import (
    METHOD_PARAM_HELP,
    MODEL_METHODS,
    SNAP_METHODS,
    SnapJob,
    SnapParams,
    pipeline_method,
)
from protocol.errors import ErrorCode

from .base import JobContext, Op, OpError, OpInputs, OpResult, OpSpec

# re-exported: the snap parameters live with SnapParams (backend/params/snap.py)
__all__ = [
    "METHOD_PARAM_HELP",
    "MODEL_METHODS",
    "SNAP_METHODS",
    "SnapOp",
    "build_snapper",
    "snap_pipeline_method",
]
snap_pipeline_method = pipeline_method


class SnapOp(Op):
    spec = OpSpec.of(
        "snap",
        "Snap the selection to the boundary of the object inside it; returns the mask, changes no pixels.",
        SnapJob,
        needs_selection=True,
    )

    def run(self, inputs: OpInputs, params: dict[str, Any], ctx: JobContext) -> OpResult:
        from backend.imaging import mask_to_u8

        job = self.spec.build(params)  # checked at the door: the image and a selection are there
        snapper = build_snapper(ctx, job.method)
        ctx.progress("snap", 0, 1)
        ctx.check_cancelled()
        out = run_snap(snapper, inputs.image, inputs.selection, job.snap_params())
        ctx.progress("snap", 1, 1)
        return OpResult(image=None, mask=mask_to_u8(out.mask), meta={"method": out.method, **out.meta})


def build_snapper(ctx: JobContext, method: str):
    """A SnapPipeline with u2netp (embedded) and, when ``method`` may use one, a segment-anything model:
    the one named, or for ``auto`` the first installed in MODEL_METHODS (a broken one is skipped, and said so).

    A model named is needed, so it comes from ``ctx.model_manager()`` as every op's required model does; ``auto``
    only looks at the manager the context has (none: the embedded snap), as erase's ``auto`` fill does."""
    from backend.snapping import SnapPipeline

    if method == "none":
        return SnapPipeline()
    if method in MODEL_METHODS:
        # MODEL_MISSING (with the install command) or MODEL_BROKEN
        segmenter = _segmenter(ctx.model_manager(), method)
        return SnapPipeline.default(sam=segmenter, model_choice={"asked": method})
    models = ctx.models
    if method == "auto" and models is not None:
        segmenter, choice = _best_installed(models)
        return SnapPipeline.default(sam=segmenter, model_choice=choice)
    return SnapPipeline.default()


def _segmenter(models: Any, name: str):
    from backend.snapping.sam import SamSegmenter

    model, processor = models.load_sam(name)
    return SamSegmenter.shared(model, processor, name=name)


def _best_installed(models: Any) -> tuple[Any, dict[str, Any] | None]:
    """(segmenter or None, how it was chosen) for snap_method=auto: the first model in MODEL_METHODS that loads.
    Missing ones are passed over; broken ones (an interrupted or damaged download, out of memory) too, but listed
    with their error, so that the log says why a better model the user installed did not run."""
    installed: list[str] = []
    skipped: dict[str, str] = {}
    for name in MODEL_METHODS:
        try:
            models.locate("sam", name)  # file checks only: which are there, and which are half-downloaded
        except OpError as exc:
            if exc.code != ErrorCode.MODEL_MISSING:
                skipped[name] = f"{exc.code.value}: {exc.message[:300]}"
                installed.append(name)
            continue
        installed.append(name)
    for name in (n for n in installed if n not in skipped):
        try:
            segmenter = _segmenter(models, name)
        except OpError as exc:  # damaged weights, out of memory: the next model (or the embedded snap) works
            skipped[name] = f"{exc.code.value}: {exc.message[:300]}"
            continue
        why = f"auto: {name} is the first installed model that loads, in the order {', '.join(MODEL_METHODS)}"
        return segmenter, {"picked": name, "installed": installed, "skipped": skipped, "why": why}
    if not installed:
        return None, None
    return None, {
        "picked": None,
        "installed": installed,
        "skipped": skipped,
        "why": "auto: every model failed",
    }


def run_snap(snapper: Any, image, selection, params: SnapParams | str, margin: int = 24):
    """Run ``snapper``; ``params`` may be a method name (benches) with ``margin``."""
    if isinstance(params, str):
        params = SnapJob(method=params, margin=margin).snap_params()
    try:
        return snapper(image, selection, params)
    except LookupError as exc:
        raise OpError(
            ErrorCode.MODEL_MISSING, f"{exc}; choose another snap method or install the model."
        ) from None

"""Op ``snap``: the selection snapped to the object's boundary, as a mask (no pixels change).

Its result is a mask, not an image: ``OpResult(image=None, mask=snapped uint8 HxW)``. Hosts turn the mask into
a selection (or a layer mask); the CLI writes it to ``--out``. Imports stay cheap: OpenCV, onnxruntime and
torch load inside ``run``.
"""

from __future__ import annotations

from typing import Any

from protocol.errors import ErrorCode

from .base import JobContext, Op, OpError, OpInputs, OpResult, OpSpec, ParamSpec

SNAP_METHODS = ("auto", "combined", "grabcut", "u2netp", "sam", "none")

METHOD_PARAM_HELP = (
    "How to find the object: auto (SAM if installed, else GrabCut + u2netp), combined (GrabCut + u2netp), "
    "grabcut, u2netp or sam."
)
_NONE_HELP = " none: the selection as drawn."


def snap_params(verb: str) -> tuple[ParamSpec, ...]:
    """The snap switch, method and margin that erase and replace share (one shape for both hosts' forms)."""
    return (
        ParamSpec(
            "snap", "bool", True, f"Snap the selection to the object first (off: {verb} the selection)."
        ),
        ParamSpec("snap_method", "enum", "auto", METHOD_PARAM_HELP, choices=SNAP_METHODS[:-1], advanced=True),
        margin_param(),
    )


def margin_param() -> ParamSpec:
    return ParamSpec(
        "margin",
        "int",
        24,
        "The snapped mask never reaches further than this many pixels outside the selection.",
        min=0,
        max=512,
        advanced=True,
    )


class SnapOp(Op):
    spec = OpSpec(
        name="snap",
        help="Snap the selection to the boundary of the object inside it; returns the mask, changes no pixels.",
        needs_selection=True,
        params=(
            ParamSpec("method", "enum", "auto", METHOD_PARAM_HELP + _NONE_HELP, choices=SNAP_METHODS),
            margin_param(),
        ),
    )

    def run(self, inputs: OpInputs, params: dict[str, Any], ctx: JobContext) -> OpResult:
        image, selection = require_image_and_selection(inputs, "snap")
        from backend.imaging import mask_to_u8

        snapper = build_snapper(ctx, params["method"])
        ctx.progress("snap", 0, 1)
        ctx.check_cancelled()
        out = run_snap(snapper, image, selection, params["method"], params["margin"])
        ctx.progress("snap", 1, 1)
        return OpResult(image=None, mask=mask_to_u8(out.mask), meta={"method": out.method, **out.meta})


def require_image_and_selection(inputs: OpInputs, op: str):
    if inputs.image is None:
        raise OpError(ErrorCode.MISSING_INPUT, f"{op} needs an image (the layer holding the object).")
    if inputs.selection is None or not (inputs.selection > 0).any():
        raise OpError(ErrorCode.NO_SELECTION, f"Select the object first: the selection is empty ({op}).")
    return inputs.image, inputs.selection


def build_snapper(ctx: JobContext, method: str):
    """A SnapPipeline with u2netp (embedded) and SAM when ``method`` may use it and its weights are installed."""
    from backend.snapping import SnapPipeline
    from backend.snapping.sam import SamSegmenter

    if method == "none":
        return SnapPipeline()
    sam = None
    models = ctx.models
    if method in ("auto", "sam") and models is not None and _has_sam(models):
        model, processor = models.load_sam()
        sam = SamSegmenter.shared(model, processor)
    elif method == "sam":
        if models is None:
            raise OpError(
                ErrorCode.MODEL_MISSING,
                "SAM snapping needs the SAM weights; install them with: python3 install.py --models sam",
            )
        models.load_sam()  # raises MODEL_MISSING with the install command
    return SnapPipeline.default(sam=sam)


def _has_sam(models: Any) -> bool:
    has = getattr(models, "has_model", None)
    return bool(has and has("sam"))


def run_snap(snapper: Any, image, selection, method: str, margin: int):
    from backend.snapping import SnapParams

    params = SnapParams(enabled=method != "none", method=method, margin=margin)
    try:
        return snapper(image, selection, params)
    except LookupError as exc:
        raise OpError(
            ErrorCode.MODEL_MISSING, f"{exc}; choose another snap method or install the model."
        ) from None

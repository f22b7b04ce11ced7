"""Op ``snap``: the selection snapped to the object's boundary, as a mask (no pixels change).

Its result is a mask, not an image: ``OpResult(image=None, mask=snapped uint8 HxW)``. Hosts turn the mask into
a selection (or a layer mask); the CLI writes it to ``--out``. Imports stay cheap: OpenCV, onnxruntime and
torch load inside ``run``.
"""

from __future__ import annotations

from typing import Any

from backend.models.presets import SAM_AUTO_ORDER
from protocol.errors import ErrorCode

from .base import JobContext, Op, OpError, OpInputs, OpResult, OpSpec, ParamSpec

# the segment-anything models are asked for by their preset names (best first: the order auto uses)
MODEL_METHODS = SAM_AUTO_ORDER
SNAP_METHODS = ("auto", "combined", "grabcut", "u2netp", *MODEL_METHODS, "none")

METHOD_PARAM_HELP = (
    "How to find the object: auto (the best installed segment-anything model, in this order: "
    f"{', '.join(MODEL_METHODS)}; GrabCut + u2netp when none is installed or its mask looks wrong), "
    "combined (GrabCut + u2netp, no downloads), grabcut, u2netp, or one model by name: sam-hq (sharpest on thin "
    "parts), sam2.1-small, sam2.1-tiny (fastest on a CPU), sam (ViT-B). Models install with: "
    "python3 install.py --models NAME."
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


def snap_pipeline_method(method: str) -> str:
    """The SnapPipeline method for an op's snap method: every model name means 'the injected model'."""
    return "sam" if method in MODEL_METHODS else method


def run_snap(snapper: Any, image, selection, method: str, margin: int):
    from backend.snapping import SnapParams

    params = SnapParams(enabled=method != "none", method=snap_pipeline_method(method), margin=margin)
    try:
        return snapper(image, selection, params)
    except LookupError as exc:
        raise OpError(
            ErrorCode.MODEL_MISSING, f"{exc}; choose another snap method or install the model."
        ) from None

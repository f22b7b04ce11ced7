"""Snapping settings: the shared snap switch/method/margin that erase and replace put on the wire, and the snap
op's; plus the parameter shapes several ops share (margin, resolution)."""

from __future__ import annotations

from dataclasses import dataclass

from backend.models.presets import SAM_AUTO_ORDER
from protocol.params import param

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
NONE_HELP = " none: the selection as drawn."


def margin(default: int = 24):
    """The margin parameter, written once for every op that snaps."""
    return param(
        default,
        help="The snapped mask never reaches further than this many pixels outside the selection.",
        min=0,
        max=512,
        advanced=True,
    )


def resolution(help: str):
    """The model-long-side parameter of the diffusion ops: 0 (None in the dataclass) is the model's own size."""
    return param(None, none=0, help=help, min=0, max=2048, advanced=True)


def pipeline_method(method: str) -> str:
    """The SnapPipeline method for an op's snap method: every model name means 'the injected model'."""
    return "sam" if method in MODEL_METHODS else method


@dataclass
class SnapParams:
    """The snapping pipeline's settings; ``enabled``, ``method`` and ``margin`` are the erase/replace ops' snap,
    snap_method and margin parameters (``{verb}``: the op's verb, filled by ``protocol.params.group``)."""

    enabled: bool = param(
        True, wire="snap", help="Snap the selection to the object first (off: {verb} the selection)."
    )
    method: str = param(
        "auto", wire="snap_method", help=METHOD_PARAM_HELP, choices=SNAP_METHODS[:-1], advanced=True
    )
    margin: int = margin()  # px: the snapped mask never reaches further than this outside the selection
    context: float = 0.15  # crop context around the selection, as a fraction of its long side
    max_side: int = 320  # GrabCut runs on the crop downscaled to this long side (more for huge crops, below)
    max_side_cap: int = 640  # crops over 4x max_side get up to this: a 2400 px object keeps its detail


@dataclass
class SnapJob:
    """The snap op's parameters: the method ('none' returns the selection as drawn) and the margin."""

    method: str = param("auto", help=METHOD_PARAM_HELP + NONE_HELP, choices=SNAP_METHODS)
    margin: int = margin()

    def snap_params(self) -> SnapParams:
        return SnapParams(
            enabled=self.method != "none", method=pipeline_method(self.method), margin=self.margin
        )

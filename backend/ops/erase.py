"""Op ``erase``: remove the selected object, filling it with background; pixels outside stay identical.

Adapter only: builds EraseParams (backend/params/erase.py, whose fields are the schema) from the checked parameters,
the snapper (embedded GrabCut + u2netp, SAM when installed) and the ErasePipeline with the classical fillers, and maps its failures onto stable error codes.

``fill=auto`` is decided by measurement (docs/benchmarks/erase-fill.md): a learned eraser (LaMa, MI-GAN) when
one is installed, else PatchMatch completion, which keeps texture and straight edges where Telea smears them.
The result carries two masks: the edited region (every changed pixel lies inside it; the first ``mask``
buffer, as before) and the snapped object (a second ``mask`` buffer); ``meta["masks"]`` names them.
"""

from __future__ import annotations

from typing import Any

from backend.params.erase import FILL_HELP, FILL_METHODS, EraseParams, fill_needs
from protocol.errors import ErrorCode

from .base import JobContext, Op, OpError, OpInputs, OpResult, OpSpec
from .snap import build_snapper

__all__ = ["FILL_HELP", "FILL_METHODS", "EraseOp", "fill_needs", "model_fillers"]  # re-exported from params


class EraseOp(Op):
    spec = OpSpec.of(
        "erase",
        "Erase the selected object and fill its place with background; pixels outside stay identical.",
        EraseParams,
        needs_selection=True,
    )

    def run(self, inputs: OpInputs, params: dict[str, Any], ctx: JobContext) -> OpResult:
        from backend.erase import ErasePipeline, NoBackground, NothingToFill
        from backend.erase.fill_learned import installed_learned_fill
        from backend.imaging import mask_to_u8

        job = self.spec.build(params)  # checked at the door: the image and a selection are there
        snapper = build_snapper(ctx, job.snap.method) if job.snap.enabled else None

        fill = job.fill
        if fill == "auto":  # the pipeline's auto takes the learned filler when we hand it one
            fill = installed_learned_fill(ctx.models) or "auto"
        try:
            out = ErasePipeline(snapper=snapper, fillers=model_fillers(fill, ctx))(
                inputs.image, inputs.selection, job, callback=ctx.step_callback()
            )
        except NothingToFill as exc:
            raise OpError(
                ErrorCode.NO_SELECTION, f"Nothing to erase: {exc}. Select the object first."
            ) from None
        except NoBackground as exc:
            raise OpError(
                ErrorCode.NO_SELECTION,
                f"Cannot erase: {exc}. Select just the object, leaving some background around it.",
            ) from None
        except LookupError as exc:
            raise OpError(ErrorCode.MODEL_MISSING, f"{exc}; choose another snap method.") from None
        meta = {**out.meta, "masks": ["region", "object"]}
        return OpResult(out.image, mask=mask_to_u8(out.mask), meta=meta, object_mask=mask_to_u8(out.snapped))


def model_fillers(fill: str, ctx: JobContext) -> dict[str, Any]:
    """Fillers that need a model, built only when asked for (the classical ones are always there).

    Extension point for the diffusion-inpainting erase: add its name to FILL_METHODS and return
    ``{name: filler}`` here, where ``filler`` follows ``backend.erase.Filler`` (``name``, ``target`` = the model's
    native long side, ``__call__(rgb_u8, mask_bool) -> HxWx3``); the pipeline crops, scales and composites.
    """
    from backend.erase.fill_diffusion import MODEL_FILLS, erase_model_fillers

    if fill not in MODEL_FILLS:
        return {}
    return erase_model_fillers(
        fill, ctx.model_manager(), callback=ctx.step_callback(), cancelled=lambda: ctx.cancelled
    )

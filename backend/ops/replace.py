"""Op ``replace``: SD inpainting from a prompt inside the selection snapped to the object.

Adapter only: builds ReplaceParams (backend/params/replace.py, whose fields are the schema) from the checked
parameters, gets the inpainting pipeline (and the LCM-LoRA for ``fast``) from the shared ModelManager, builds the
snapper, and maps the pipeline's failures onto stable error codes. Imports stay cheap:
torch, diffusers and the pipeline load inside ``run``.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

from backend.errors import out_of_memory_guard
from backend.params import ReplaceParams
from protocol.errors import ErrorCode

from .base import JobContext, Op, OpError, OpInputs, OpResult, OpSpec

OOM_ADVICE = "Out of GPU memory while replacing; lower 'resolution', select a smaller area, or close other GPU programs."


class ReplaceOp(Op):
    spec = OpSpec.of(
        "replace",
        "Replace the selected object with what the prompt describes (Stable Diffusion inpainting); "
        "pixels outside the edit stay identical.",
        ReplaceParams,
        needs_selection=True,
    )

    def run(self, inputs: OpInputs, params: dict[str, Any], ctx: JobContext) -> OpResult:
        # checked at the door (backend.jobs.admit): the image, a selection and a non-empty prompt are there
        job = self.spec.build(params)
        try:  # what the wire's ranges cannot say (resolution 1-63), refused before a model loads
            job.check()
        except ValueError as exc:
            raise OpError(ErrorCode.BAD_PARAM, f"{exc}.") from None
        from backend.replace import EmptySelectionError, ReplacePipeline

        models = ctx.model_manager()
        model_label = models.locate("inpaint", job.model or None).label
        if job.fast:
            models.require_family(
                "inpaint",
                job.model or None,
                ("sd15",),
                "Fast mode uses the SD 1.5 LCM-LoRA; this model is not SD 1.5. "
                "Turn fast off or choose an SD 1.5 inpainting model.",
                param="fast",
            )
        pipe = models.load_pipeline("inpaint", job.model or None)
        lora = models.lora_file() if job.fast else None
        seed = job.seed if job.seed >= 0 else secrets.randbelow(2**31)
        job = dataclasses.replace(job, seed=seed, previews=True)
        snapper = make_snapper(ctx, job.snap.method if job.snap.enabled else "none", job.snap.margin)
        replace = ReplacePipeline(pipe, snapper=snapper, lcm_lora=lora)

        try:
            with out_of_memory_guard(OOM_ADVICE):
                out = replace(inputs.image, inputs.selection, job, callback=ctx.step_callback())
        except EmptySelectionError as exc:
            raise OpError(ErrorCode.NO_SELECTION, f"Nothing to replace: {exc}.") from None
        except LookupError as exc:  # a snap method whose model is not there
            raise OpError(ErrorCode.MODEL_MISSING, f"{exc}; choose another snap method.") from None
        meta = {**out.info, "seed": seed, "model": model_label}
        if snapper is not None and snapper.meta:  # which snap ran and why, as erase reports it
            meta["snap"] = snapper.meta
        return OpResult(out.image, mask=out.mask, meta=meta)


def make_snapper(ctx: JobContext, method: str, margin: int) -> MaskSnapper | None:
    """selection -> object mask through the shared SnapPipeline (the snap op's builder: SAM when installed)."""
    if method == "none":
        return None
    from backend.params import SnapParams

    from .snap import build_snapper

    params = SnapParams(method=method, margin=margin)
    return MaskSnapper(build_snapper(ctx, method), params)


class MaskSnapper:
    """The snapper ReplacePipeline wants (image, selection) -> mask, keeping the last snap's meta for the op's
    result (which method or model ran, and the scores that decided)."""

    def __init__(self, pipeline: Any, params: Any):
        self.pipeline = pipeline
        self.params = params
        self.meta: dict[str, Any] = {}

    def __call__(self, image: Any, selection: Any) -> Any:
        out = self.pipeline(image, selection, self.params)
        self.meta = {"method": out.method, **out.meta}
        return out.mask

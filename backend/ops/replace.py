"""Op ``replace``: SD inpainting from a prompt inside the selection snapped to the object.

Adapter only: validates parameters, gets the inpainting pipeline (and the LCM-LoRA for ``fast``) from the shared
ModelManager, builds the snapper, and maps the pipeline's failures onto stable error codes. Imports stay cheap:
torch, diffusers and the pipeline load inside ``run``.
"""

from __future__ import annotations

import secrets
from typing import Any

from backend.errors import out_of_memory_guard
from protocol.errors import ErrorCode

from .base import JobContext, Op, OpError, OpInputs, OpResult, OpSpec, ParamSpec
from .snap import snap_params

OOM_ADVICE = "Out of GPU memory while replacing; lower 'resolution', select a smaller area, or close other GPU programs."


class ReplaceOp(Op):
    spec = OpSpec(
        name="replace",
        help="Replace the selected object with what the prompt describes (Stable Diffusion inpainting); "
        "pixels outside the edit stay identical.",
        needs_selection=True,
        params=(
            ParamSpec("prompt", "str", "", "What should appear in the selection, e.g. 'a red ceramic vase'."),
            ParamSpec("negative_prompt", "str", "", "What to avoid, e.g. 'blurry, text, watermark'."),
            ParamSpec(
                "seed",
                "int",
                -1,
                "Random seed; -1 picks one (reported back) so a result can be redone.",
                min=-1,
                max=2**31 - 1,
            ),
            ParamSpec(
                "steps",
                "int",
                25,
                "Denoising steps: more is slower and often finer (fast mode: max 8).",
                min=1,
                max=150,
            ),
            ParamSpec(
                "guidance",
                "float",
                7.5,
                "How strictly to follow the prompt (fast mode: max 2).",
                min=0.0,
                max=30.0,
            ),
            ParamSpec(
                "strength",
                "float",
                1.0,
                "1 replaces completely; lower keeps some of the old object's shape and colours.",
                min=0.05,
                max=1.0,
            ),
            ParamSpec(
                "fast",
                "bool",
                False,
                "Few-step mode with LCM-LoRA (install: python3 install.py "
                "--models lcm-lora); SD 1.5 models only.",
            ),
            *snap_params("replace"),
            ParamSpec(
                "grow",
                "int",
                8,
                "Pixels the edited region extends beyond the object, so the new object blends in.",
                min=0,
                max=256,
                advanced=True,
            ),
            ParamSpec(
                "feather",
                "int",
                6,
                "Blend width in pixels, inside the edited region.",
                min=0,
                max=128,
                advanced=True,
            ),
            ParamSpec(
                "resolution",
                "int",
                0,
                "Model long side in pixels; 0 uses the model's own (512 SD 1.5, 1024 SDXL).",
                min=0,
                max=2048,
                advanced=True,
            ),
            ParamSpec(
                "model",
                "str",
                "",
                "Inpainting model: empty for the installed default, or a folder, "
                ".safetensors file, name in the models folder, or Hugging Face repo id already cached.",
                advanced=True,
            ),
        ),
    )

    def run(self, inputs: OpInputs, params: dict[str, Any], ctx: JobContext) -> OpResult:
        if inputs.image is None:
            raise OpError(ErrorCode.MISSING_INPUT, "replace needs an image (the layer to edit).")
        if inputs.selection is None or not (inputs.selection > 0).any():
            raise OpError(
                ErrorCode.NO_SELECTION, "Select the object to replace first (the selection is empty)."
            )
        if not params["prompt"].strip():
            raise OpError(
                ErrorCode.BAD_PARAM, "Describe what should appear: the prompt is empty.", {"param": "prompt"}
            )
        from backend.replace import EmptySelectionError, ReplaceParams, ReplacePipeline

        models = ctx.model_manager()
        model_label = models.locate("inpaint", params["model"] or None).label
        if params["fast"]:
            models.require_family(
                "inpaint",
                params["model"] or None,
                ("sd15",),
                "Fast mode uses the SD 1.5 LCM-LoRA; this model is not SD 1.5. "
                "Turn fast off or choose an SD 1.5 inpainting model.",
                param="fast",
            )
        pipe = models.load_pipeline("inpaint", params["model"] or None)
        lora = models.lora_file() if params["fast"] else None
        seed = params["seed"] if params["seed"] >= 0 else secrets.randbelow(2**31)
        snapper = make_snapper(ctx, params["snap_method"] if params["snap"] else "none", params["margin"])
        replace = ReplacePipeline(pipe, snapper=snapper, lcm_lora=lora)
        job = ReplaceParams(
            prompt=params["prompt"],
            negative_prompt=params["negative_prompt"],
            strength=params["strength"],
            num_inference_steps=params["steps"],
            guidance_scale=params["guidance"],
            seed=seed,
            fast=params["fast"],
            grow_px=params["grow"],
            feather_px=params["feather"],
            resolution=params["resolution"] or None,
            previews=True,
        )

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
    from backend.snapping import SnapParams

    from .snap import build_snapper, snap_pipeline_method

    params = SnapParams(method=snap_pipeline_method(method), margin=margin)
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

"""The ``imagic`` op: edit a layer from text alone (Kawar et al. 2022), optionally only inside the selection.

This adapter is the only Imagic code that touches the ModelManager: it loads the shared text-to-image pipeline,
hands its components to ``ImagicPipeline`` together with a per-process tuned-state cache (so an eta slider
in a host re-runs only sampling), and maps failures onto stable error codes. Nothing heavy is imported at module
import time: ``hello`` lists this schema without loading torch.
"""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import Any

import numpy as np

from backend.errors import out_of_memory_guard
from protocol.errors import ErrorCode

from .base import JobContext, Op, OpError, OpInputs, OpResult, OpSpec, ParamSpec

_CACHES: dict[Path, Any] = {}  # cache dir -> TunedStateCache, kept for the life of the backend process
_CACHES_LOCK = threading.Lock()

OOM_ADVICE = (
    "Imagic ran out of memory while tuning the model to this image; the shared model is unchanged. Try a smaller "
    "'resolution', keep finetune=lora with gradient_checkpointing auto or on, use precision fp16/bf16 on a GPU, close "
    "other GPU programs, or choose finetune=none."
)

SPEC = OpSpec(
    name="imagic",
    help="Edit the layer (or the selection) from text alone, e.g. 'a photo of a sitting dog' (Imagic).",
    params=(
        ParamSpec(
            "prompt", "str", "", "What the edited image should show (the whole scene, not the change)."
        ),
        ParamSpec(
            "eta",
            "float_list",
            [0.7],
            "Edit strength: 0 = the input, 1 = the text; 0.6-0.8 usually works. Several values give several "
            "candidates; after the first run, new values reuse the tuning and take seconds.",
            min=0.0,
            max=1.5,
        ),
        ParamSpec(
            "seed",
            "int",
            -1,
            "Random seed of the sampling; -1 picks one (reported back) so a result can be redone. A new seed "
            "reuses the tuning.",
            min=-1,
            max=2**31 - 1,
        ),
        ParamSpec("steps", "int", 25, "DDIM sampling steps.", 1, 200),
        ParamSpec("guidance", "float", 7.5, "Classifier-free guidance scale.", 1.0, 30.0),
        ParamSpec(
            "preview",
            "bool",
            False,
            "Quick draft from the cached tuning, e.g. while the eta slider is dragged: 4 LCM steps when the "
            "lcm-lora model is installed, else 8 DDIM steps; the full render follows on release.",
            advanced=True,
        ),
        ParamSpec(
            "model",
            "str",
            "",
            "Text-to-image model: installed preset name, folder or .safetensors file.",
            advanced=True,
        ),
        ParamSpec(
            "embedding_steps",
            "int",
            100,
            "Stage A steps (paper: 1000; 100 is close to converged).",
            0,
            5000,
            advanced=True,
        ),
        ParamSpec(
            "embedding_lr", "float", 2e-3, "Stage A learning rate (paper: 2e-3).", 1e-6, 1.0, advanced=True
        ),
        ParamSpec(
            "finetune",
            "enum",
            "lora",
            "Stage B: lora (fast, light, default), full (the paper; slow, ~4x memory) or none (skip).",
            choices=("lora", "full", "none"),
            advanced=True,
        ),
        ParamSpec(
            "finetune_steps",
            "int",
            150,
            "Stage B steps (paper: 1500 full; LoRA: 50-300).",
            0,
            5000,
            advanced=True,
        ),
        ParamSpec(
            "finetune_lr",
            "float",
            0.0,
            "Stage B learning rate; 0 = 3e-4 for LoRA, 5e-7 for full (paper).",
            0.0,
            1.0,
            advanced=True,
        ),
        ParamSpec("lora_rank", "int", 4, "LoRA rank of the attention adapters.", 1, 128, advanced=True),
        ParamSpec(
            "tune_seed",
            "int",
            0,
            "Seed of the tuning stages (part of the cache key).",
            0,
            2**31 - 1,
            advanced=True,
        ),
        ParamSpec(
            "precision",
            "enum",
            "auto",
            "auto = fp16/bf16 autocast on a GPU, fp32 on a CPU.",
            choices=("auto", "no", "fp16", "bf16"),
            advanced=True,
        ),
        ParamSpec(
            "resolution",
            "int",
            0,
            "Model long side in pixels; 0 = the model's native size.",
            0,
            2048,
            advanced=True,
        ),
        ParamSpec(
            "gradient_checkpointing",
            "enum",
            "auto",
            "Trade compute for memory while tuning: auto = only when the memory estimate needs it (the result's "
            "info says which), on, off.",
            choices=("auto", "on", "off"),
            advanced=True,
        ),
        ParamSpec(
            "adam_8bit",
            "bool",
            False,
            "8-bit Adam (bitsandbytes, CUDA only; otherwise plain Adam).",
            advanced=True,
        ),
        ParamSpec("cache", "bool", True, "Keep the tuning so later eta/seed changes skip it.", advanced=True),
    ),
)


def _cache_for(models: Any) -> Any:
    from backend.imagic import TunedStateCache, default_cache_dir

    directory = default_cache_dir(getattr(models, "models_dir", None))
    with _CACHES_LOCK:
        if directory not in _CACHES:
            _CACHES[directory] = TunedStateCache(directory)
        return _CACHES[directory]


def _lcm_lora(models: Any) -> Any:
    """The installed LCM-LoRA file for previews, or None (previews then use a few DDIM steps)."""
    try:
        return models.lora_file()
    except Exception:  # not installed, or no manager support: the DDIM preview still works
        return None


def pipeline_params(params: dict[str, Any]) -> Any:
    """Validated op params -> ImagicParams (0 means "the default" for finetune_lr and resolution; seed -1 picks
    one, as replace does)."""
    from backend.imagic import ImagicParams

    return ImagicParams(
        prompt=params["prompt"].strip(),
        etas=[float(e) for e in params["eta"]],
        guidance_scale=params["guidance"],
        num_inference_steps=params["steps"],
        seed=params["seed"] if params["seed"] >= 0 else secrets.randbelow(2**31),
        embedding_steps=params["embedding_steps"],
        embedding_lr=params["embedding_lr"],
        finetune=params["finetune"],
        finetune_steps=params["finetune_steps"],
        finetune_lr=params["finetune_lr"] or None,
        lora_rank=params["lora_rank"],
        tune_seed=params["tune_seed"],
        precision=params["precision"],
        gradient_checkpointing=params["gradient_checkpointing"],
        adam_8bit=params["adam_8bit"],
        use_cache=params["cache"],
        resolution=params["resolution"] or None,
        preview=params["preview"],
    )


class ImagicOp(Op):
    spec = SPEC

    def run(self, inputs: OpInputs, params: dict[str, Any], ctx: JobContext) -> OpResult:
        image, selection = self._check_inputs(inputs, params)
        models = ctx.model_manager()
        ctx.check_cancelled()
        models.require_family(
            "text2img",
            params["model"] or None,
            ("sd15", "sd2"),
            "Imagic here supports Stable Diffusion 1.x/2.x text-to-image models, not SDXL; choose an SD-1.5 "
            "model with the 'model' parameter.",
            param="model",
        )
        pipe = models.load_pipeline("text2img", params["model"] or None)
        ctx.check_cancelled()
        from backend.imagic import ImagicPipeline

        engine = ImagicPipeline.from_pipe(
            pipe,
            device=getattr(models, "device", None),
            cache=_cache_for(models),
            lcm_lora=_lcm_lora(models) if params["preview"] else None,
        )
        job = pipeline_params(params)
        try:
            with out_of_memory_guard(OOM_ADVICE):
                out = engine(image, selection, job, ctx.step_callback())
        except ValueError as exc:
            raise OpError(ErrorCode.BAD_PARAM, f"{exc}.") from exc
        finally:
            _release_gpu_memory()
        mask = None
        if selection is not None:
            from backend.imaging import mask_to_u8

            mask = mask_to_u8(selection)
        meta = {
            "etas": out.etas,
            "cache_hit": out.cache_hit,
            "timings_s": {k: round(v, 3) for k, v in out.timings.items()},
            "precision": out.info.get("precision"),
            "finetune": out.info.get("finetune"),
            "model_size": out.info.get("model_size"),
            "seed": job.seed,  # the one -1 picked: sending it back redoes this result
        }
        for key in (
            "gradient_checkpointing",
            "gradient_checkpointing_why",
            "preview",
            "preview_note",
            "full_cache",
            "base_record",
        ):
            if key in out.info:
                meta[key] = out.info[key]
        return OpResult(image=out.images[0], mask=mask, meta=meta, extra_images=out.images[1:])

    @staticmethod
    def _check_inputs(inputs: OpInputs, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
        if inputs.image is None:
            raise OpError(ErrorCode.MISSING_INPUT, "Imagic needs the layer's pixels; send an image.")
        if not params["prompt"].strip():
            raise OpError(
                ErrorCode.BAD_PARAM,
                "Parameter 'prompt' is empty; describe the edited image, e.g. 'a photo of a sitting dog'.",
                {"param": "prompt"},
            )
        selection = inputs.selection
        if selection is not None and not np.any(selection > 0):
            raise OpError(
                ErrorCode.NO_SELECTION,
                "The selection does not cover this layer; select the region to edit, or clear the selection to "
                "edit the whole layer.",
            )
        return inputs.image, selection


def _release_gpu_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()

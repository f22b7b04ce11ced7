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

from backend.errors import out_of_memory_guard
from backend.params import ImagicParams
from protocol.errors import ErrorCode

from .base import JobContext, Op, OpError, OpInputs, OpResult, OpSpec

_CACHES: dict[Path, Any] = {}  # cache dir -> TunedStateCache, kept for the life of the backend process
_CACHES_LOCK = threading.Lock()

OOM_ADVICE = (
    "Imagic ran out of memory while tuning the model to this image; the shared model is unchanged. Try a smaller "
    "'resolution', keep finetune=lora with gradient_checkpointing auto or on, use precision fp16/bf16 on a GPU, close "
    "other GPU programs, or choose finetune=none."
)

SPEC = OpSpec.of(
    "imagic",
    "Edit the layer (or the selection) from text alone, e.g. 'a photo of a sitting dog' (Imagic).",
    ImagicParams,
    empty_selection_ok=False,  # the selection limits the edit: one that covers nothing is a mistake
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


def pipeline_params(params: dict[str, Any]) -> ImagicParams:
    """Checked op params -> ImagicParams (the schema's own dataclass: names and 0-means-default map back by its
    field metadata); seed -1 picks one, as replace does."""
    job = SPEC.build(params)
    job.prompt = job.prompt.strip()
    if job.seed < 0:
        job.seed = secrets.randbelow(2**31)
    return job


class ImagicOp(Op):
    spec = SPEC

    def run(self, inputs: OpInputs, params: dict[str, Any], ctx: JobContext) -> OpResult:
        image, selection = inputs.image, inputs.selection  # checked at the door (backend.jobs.admit)
        job = pipeline_params(params)
        models = ctx.model_manager()
        ctx.check_cancelled()
        models.require_family(
            "text2img",
            job.model or None,
            ("sd15", "sd2"),
            "Imagic here supports Stable Diffusion 1.x/2.x text-to-image models, not SDXL; choose an SD-1.5 "
            "model with the 'model' parameter.",
            param="model",
        )
        pipe = models.load_pipeline("text2img", job.model or None)
        ctx.check_cancelled()
        from backend.imagic import ImagicPipeline

        engine = ImagicPipeline.from_pipe(
            pipe,
            device=getattr(models, "device", None),
            cache=_cache_for(models),
            lcm_lora=_lcm_lora(models) if job.preview else None,
        )
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
            "precision_why",
            "gradient_checkpointing",
            "gradient_checkpointing_why",
            "preview",
            "preview_note",
            "full_cache",
            "base_record",
            "released_idle",  # idle parts' weight pages handed back while tuning (a CPU miss only)
        ):
            if key in out.info:
                meta[key] = out.info[key]
        return OpResult(image=out.images[0], mask=mask, meta=meta, extra_images=out.images[1:])


def _release_gpu_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()

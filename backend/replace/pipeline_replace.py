"""ReplacePipeline: SD inpainting from a prompt inside the selection snapped to the object.

Flow: snap the selection to the object -> grow it (the model needs room to blend the new object into its
surroundings) -> crop around it at the model's native resolution (512 px for SD 1.5, 1024 for SDXL; a large
photo never runs at full size) -> inpaint the crop -> scale back -> composite, feathered inward, so every pixel
outside the grown mask keeps the original's exact bytes (SD's VAE round trip changes the whole frame).

The diffusers pipeline, the snapper and the optional LCM-LoRA file are injected; this module knows nothing about
the wire, the op registry or where weights live.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from backend.imaging import (
    bbox,
    bleed_colours,
    composite,
    feather_inward,
    from_float,
    grow,
    mask_to_float,
    mask_to_u8,
    plan_crop,
    see_through,
    to_rgb_u8,
)
from backend.models.checkpoint import family, pipeline_architecture
from backend.models.device import pin_torch_threads
from backend.params.replace import ReplaceParams

Callback = Callable[[str, int, int], None]
LCM_ADAPTER = "lcm"
LCM_MAX_STEPS = 8
LCM_MAX_GUIDANCE = 2.0


_LOCKS_GUARD = threading.Lock()


def _pipe_lock(pipe: Any) -> threading.RLock:
    """One lock per shared pipeline: its scheduler swaps and adapter switches must not interleave, while
    pipelines on other devices run in parallel."""
    with _LOCKS_GUARD:
        lock = getattr(pipe, "_layeredit_lock", None)
        if lock is None:
            lock = threading.RLock()
            pipe._layeredit_lock = lock
        return lock


class Snapper(Protocol):
    """Anything that turns a rough selection into an object mask (float32 HxW in [0, 1])."""

    def __call__(self, image: np.ndarray, selection: np.ndarray) -> np.ndarray: ...


class EmptySelectionError(ValueError):
    """The selection (after thresholding) covers no pixel: there is nothing to replace."""


@dataclass
class ReplaceOutput:
    image: np.ndarray  # the input's shape and dtype; bit-identical outside ``edit_mask``
    mask: np.ndarray  # uint8 HxW: the snapped object
    edit_mask: np.ndarray  # uint8 HxW: where pixels may differ (grown, feathered inward)
    info: dict[str, Any] = field(default_factory=dict)


def native_resolution(pipe: Any) -> int:
    """The long side the model was trained at: UNet sample size x VAE scale (512 SD 1.5, 1024 SDXL)."""
    return int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))


def _at_least_half(mask: np.ndarray) -> np.ndarray:
    """bool HxW: where the mask is at least half on; a selection that is faint everywhere (painted at low
    opacity) counts wherever it is nonzero, as the snapper treats it. float32 masks skip a float conversion."""
    m = mask if mask.dtype == np.float32 and mask.ndim == 2 else mask_to_float(mask)
    strong = m >= 0.5
    return strong if strong.any() else m > 0


def _grown(mask: np.ndarray, px: int) -> np.ndarray:
    """bool: ``mask`` (bool) dilated by ``px``, computed on a window around it only."""
    box = bbox(mask)
    assert box is not None
    h, w = mask.shape
    x0, y0, x1, y1 = (
        max(0, box[0] - px - 1),
        max(0, box[1] - px - 1),
        min(w, box[2] + px + 1),
        min(h, box[3] + px + 1),
    )
    out = np.zeros((h, w), bool)
    out[y0:y1, x0:x1] = grow(mask[y0:y1, x0:x1].astype(np.float32), px) >= 0.5
    return out


class ReplacePipeline:
    """Inpaint a prompt into the snapped selection. ``pipe``: a diffusers inpainting pipeline (SD or SDXL).
    ``snapper``: selection -> object mask, None to use the selection as it is. ``lcm_lora``: the LCM-LoRA
    .safetensors file for ``fast`` runs (None: fast runs raise FileNotFoundError)."""

    def __init__(self, pipe: Any, snapper: Snapper | None = None, lcm_lora: str | Path | None = None):
        self.pipe = pipe
        self.snapper = snapper
        self.lcm_lora = Path(lcm_lora) if lcm_lora is not None else None

    def __call__(
        self,
        image: np.ndarray,
        selection: np.ndarray,
        params: ReplaceParams,
        callback: Callback | None = None,
    ) -> ReplaceOutput:
        """``callback(stage, step, total)`` runs after every denoising step; raising in it (e.g. a cancel)
        stops the run there."""
        params.check()
        report = callback or (lambda *event: None)
        t0 = time.perf_counter()
        snapped = self._snap(image, selection)
        report("snap", 1, 1)
        t_snap = time.perf_counter()
        region = _grown(snapped, params.grow_px)
        target = params.resolution or native_resolution(self.pipe)
        plan = plan_crop(region, image.shape, context=params.context, target=target, multiple=8)
        assert plan is not None  # the region contains the non-empty snapped mask
        # from here on everything works on the crop: a small edit on a huge layer stays cheap
        crop_region = plan.crop(region)
        model_in = plan.to_model(plan.crop(image))  # scale first: converts far fewer pixels
        model_rgb = to_rgb_u8(model_in)
        alpha = see_through(model_in)
        if (
            alpha is not None
        ):  # transparent pixels' colours are arbitrary: the model sees the nearest real ones
            model_rgb = bleed_colours(model_rgb, alpha > 0)
        model_mask = plan.to_model(crop_region, smooth=False)
        generated = self._inpaint(model_rgb, model_mask, params, report)
        t_model = time.perf_counter()
        crop_new = plan.from_model(generated)  # float32 [0, 1], crop-sized RGB
        blend = feather_inward(crop_region, params.feather_px)
        out = image.copy()
        x0, y0, x1, y1 = plan.box
        if alpha is not None:  # what the prompt describes is painted opaque, also on a transparent layer
            crop_new = np.dstack([crop_new, np.ones(crop_new.shape[:2], np.float32)])
        out[y0:y1, x0:x1] = composite(plan.crop(image), crop_new, blend, keep_alpha=alpha is None)
        edit_mask = np.zeros(image.shape[:2], np.uint8)
        edit_mask[y0:y1, x0:x1] = mask_to_u8(blend)
        info = {
            "crop_box": list(plan.box),
            "model_size": list(plan.model_size),
            "steps": int(getattr(self.pipe, "_num_timesteps", 0) or 0),
            "seed": params.seed,
            "fast": params.fast,
            "seconds": {
                "snap": round(t_snap - t0, 4),
                "model": round(t_model - t_snap, 4),
                "total": round(time.perf_counter() - t0, 4),
            },
        }
        return ReplaceOutput(out, snapped.astype(np.uint8) * np.uint8(255), edit_mask, info)

    # ---- steps ---------------------------------------------------------------------------------------------
    def _snap(self, image: np.ndarray, selection: np.ndarray) -> np.ndarray:
        """bool HxW: the object mask (the selection itself without a snapper)."""
        if selection is None or selection.shape[:2] != image.shape[:2]:
            raise ValueError("selection must be an HxW mask aligned to the image")
        rough = _at_least_half(selection)
        if not rough.any():
            raise EmptySelectionError("the selection is empty; select the object to replace")
        if self.snapper is None:
            return rough
        snapped = _at_least_half(self.snapper(image, selection))
        # a snapper that finds nothing must not turn a valid request into a no-op: keep the user's selection
        return snapped if snapped.any() else rough

    def _inpaint(
        self, rgb: np.ndarray, mask: np.ndarray, params: ReplaceParams, report: Callback
    ) -> np.ndarray:
        return inpaint(self.pipe, rgb, mask, params, report, self.lcm_lora)


# Linear maps from SD latents to approximate RGB (widely used "cheap" live previews; no VAE decode needed).
_LATENT_RGB = {
    False: ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473)),
    True: (
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
}


def latent_preview(latents: Any, xl: bool = False) -> np.ndarray:
    """HxWx3 uint8 at latent resolution (1/8 of the crop) from the first image's 4 latent channels."""
    import torch

    factors = torch.tensor(_LATENT_RGB[xl], dtype=torch.float32)
    lat = latents[0, :4].detach().to("cpu", torch.float32)
    rgb = torch.einsum("chw,cr->hwr", lat, factors)
    return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def inpaint(
    pipe: Any,
    rgb: np.ndarray,
    mask: np.ndarray,
    params: ReplaceParams,
    report: Callback | None = None,
    lcm_lora: Path | None = None,
) -> np.ndarray:
    """One diffusers inpainting call on model-size arrays (HxWx3 uint8, mask HxW, sides multiples of 8).

    Returns float32 HxWx3 in [0, 1]. ``report("denoise", step, total)`` runs after every step; an exception
    raised there (a cancel) ends the run. Shared by Replace and the diffusion erase filler."""
    import torch
    from PIL import Image

    h, w = rgb.shape[:2]
    steps, guidance = params.num_inference_steps, params.guidance_scale
    if params.fast:
        steps, guidance = min(steps, LCM_MAX_STEPS), min(guidance, LCM_MAX_GUIDANCE)

    xl = params.previews and family(pipeline_architecture(pipe)) == "sdxl"  # the latent space to preview

    def on_step_end(p: Any, i: int, t: Any, kwargs: dict) -> dict:
        if report is not None:
            total = int(getattr(p, "_num_timesteps", steps) or steps)
            if params.previews and "latents" in kwargs:
                report("denoise", i + 1, total, latent_preview(kwargs["latents"], xl=xl))
            else:
                report("denoise", i + 1, total)
        return kwargs

    generator = torch.Generator(device="cpu").manual_seed(int(params.seed))
    mode = _LcmMode(pipe, lcm_lora) if params.fast else _Plain(pipe)
    with _pipe_lock(pipe), mode:
        pin_torch_threads()  # an erase's alpha PatchMatch may have just started numba's pool on this thread
        result = pipe(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt or None,
            image=Image.fromarray(rgb),
            mask_image=Image.fromarray(from_float(np.asarray(mask, np.float32), np.uint8)),
            height=h,
            width=w,
            strength=params.strength,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
            output_type="np",
            callback_on_step_end=on_step_end,
        )
    return np.asarray(result.images[0], dtype=np.float32)


class _Plain:
    """Normal runs: make sure an LCM adapter left loaded by a fast run is off."""

    def __init__(self, pipe: Any):
        self.pipe = pipe

    def __enter__(self):
        if LCM_ADAPTER in getattr(self.pipe, "_layeredit_adapters", ()):
            self.pipe.disable_lora()
        return self

    def __exit__(self, *exc):
        return False


class _LcmMode:
    """Fast runs: load the LCM-LoRA once per pipeline, enable it and swap in an LCMScheduler for this call
    only; the shared pipeline is restored afterwards (normal runs and the erase filler use it too)."""

    def __init__(self, pipe: Any, lora: Path | None):
        if lora is None or not lora.is_file():
            raise FileNotFoundError(f"the LCM-LoRA file {lora} is missing")
        self.pipe, self.lora = pipe, lora

    def __enter__(self):
        from diffusers import LCMScheduler

        pipe = self.pipe
        loaded = getattr(pipe, "_layeredit_adapters", set())
        if LCM_ADAPTER not in loaded:
            pipe.load_lora_weights(
                str(self.lora.parent), weight_name=self.lora.name, adapter_name=LCM_ADAPTER
            )
            pipe._layeredit_adapters = {*loaded, LCM_ADAPTER}
        pipe.enable_lora()
        pipe.set_adapters([LCM_ADAPTER], adapter_weights=[1.0])
        self.saved = pipe.scheduler
        pipe.scheduler = LCMScheduler.from_config(self.saved.config)
        return self

    def __exit__(self, *exc):
        self.pipe.scheduler = self.saved
        self.pipe.disable_lora()
        return False

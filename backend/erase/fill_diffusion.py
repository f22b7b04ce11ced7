"""Diffusion erase filler: SD inpainting asked for background, plugged into ErasePipeline as a ``Filler``.

Classical fills smear (Telea/NS) or copy (clone) what is around the hole; an inpainting model can continue
structure it has to invent (a table edge behind a vase, a horizon behind a person). Asked for "background" with
the usual removal negatives, it tends to fill with scene instead of a new object; a fixed seed keeps it
repeatable. It runs only when asked for (``fill=diffusion``) and an inpainting model is installed: erase's "auto"
is a learned filler (LaMa, MI-GAN) when installed, else PatchMatch completion (issue 11: a dedicated eraser beats
a general inpainting model asked for "background", at a fraction of the cost).

The filler receives the crop already scaled to its ``target`` (the model's native size, sides multiples of 8)
and returns the whole crop; ErasePipeline composites only the hole back, bit-exactly outside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.models.checkpoint import family
from backend.replace.pipeline_replace import Callback, ReplaceParams, inpaint, native_resolution

from .fill_learned import LEARNED_FILLS, learned_filler

FILL_NAME = "diffusion"
MODEL_FILLS = (*LEARNED_FILLS, FILL_NAME)  # the fills that need a model (the op builds them on demand)
BACKGROUND_PROMPT = "background, empty scene, seamless continuation of the surroundings"
REMOVAL_NEGATIVE = "object, person, animal, text, watermark, logo, frame, border, blurry, artifacts"


@dataclass
class DiffusionFiller:
    """``pipe``: a diffusers inpainting pipeline (from ModelManager.load_pipeline("inpaint")). ``callback``
    receives ("denoise", step, total) per denoising step and may raise to cancel."""

    pipe: Any
    prompt: str = BACKGROUND_PROMPT
    negative_prompt: str = REMOVAL_NEGATIVE
    steps: int = 20
    guidance: float = 5.0  # lower than Replace's 7.5: background needs little prompt, much context
    strength: float = 1.0  # below 1 the hole starts from a Telea pre-fill instead of pure noise
    seed: int = 0
    fast: bool = False
    lcm_lora: Path | None = None
    callback: Callback | None = None
    name: str = FILL_NAME
    target: int | None = None  # set from the model: its native long side

    def __post_init__(self) -> None:
        if self.target is None:
            self.target = native_resolution(self.pipe)

    def __call__(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        hole = np.asarray(mask, bool)
        h, w = hole.shape
        if h % 8 or w % 8:  # the pipeline plans multiples of 8 for model fillers; pad defensively otherwise
            return _padded(self, rgb, hole)
        start = rgb
        if self.strength < 1.0:
            import cv2

            start = cv2.inpaint(np.ascontiguousarray(rgb), hole.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
        params = ReplaceParams(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            strength=self.strength,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance,
            seed=self.seed,
            fast=self.fast,
        )
        return inpaint(self.pipe, start, hole, params, self.callback, self.lcm_lora)


def _padded(filler: DiffusionFiller, rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
    h, w = hole.shape
    ph, pw = -h % 8, -w % 8
    big = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge")
    big_hole = np.pad(hole, ((0, ph), (0, pw)), mode="constant")
    return filler(big, big_hole)[:h, :w]


def diffusion_fillers(models: Any, callback: Callback | None = None, ref: str | None = None, **options: Any):
    """{"diffusion": DiffusionFiller} when an inpainting model is installed, else {} (never raises for a
    missing model: erase then simply has only its classical fillers)."""
    if models is None or not models.has_model("inpaint", ref):
        return {}
    pipe = models.load_pipeline("inpaint", ref)
    return {FILL_NAME: DiffusionFiller(pipe, callback=callback, **options)}


def erase_model_fillers(
    fill: str, models: Any, callback: Callback | None = None, cancelled: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """The erase op's hook (``backend.ops.erase.model_fillers``): the fillers that need a model, for ``fill``
    (the op has already turned "auto" into the filler auto stands for), loaded from ``models`` (a
    ModelManager: the op's ``ctx.model_manager()``).

    "diffusion" requires the model and raises MODEL_MISSING with the install command when it is absent. With the
    LCM-LoRA installed (SD 1.5 models), it fills in 6 steps.

    "lama" / "migan" are the learned object-removal fillers (backend/erase/fill_learned.py): MODEL_MISSING with
    the install command when absent, MODEL_BROKEN when the file is damaged; ``cancelled`` (the job's cancel
    flag) stops their one long model call midway."""
    if fill in LEARNED_FILLS:
        return {fill: learned_filler(fill, models, cancelled)}
    if fill != FILL_NAME:
        return {}
    pipe = models.load_pipeline("inpaint")  # MODEL_MISSING / MODEL_BROKEN with what to do
    options: dict[str, Any] = {}
    if models.has_model("lcm-lora") and family(models.architecture("inpaint")) == "sd15":
        options = {"fast": True, "steps": 6, "guidance": 1.5, "lcm_lora": models.lora_file()}
    filler = DiffusionFiller(pipe, callback=callback, **options)
    return {fill: filler}

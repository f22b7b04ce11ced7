"""Settings of one replace job (SD inpainting inside the snapped selection)."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.params import group, param, refuse_blank

from .snap import SnapParams, resolution


@dataclass
class ReplaceParams:
    """What ReplacePipeline runs; ``snap`` and ``model`` are read by the op, which builds the snapper and loads the
    model. Fields with ``param`` are the replace op's wire parameters, in this order."""

    prompt: str = param(
        "", help="What should appear in the selection, e.g. 'a red ceramic vase'.", nonempty=True
    )
    negative_prompt: str = param("", help="What to avoid, e.g. 'blurry, text, watermark'.")
    seed: int = param(
        0,
        help="Random seed; -1 picks one (reported back) so a result can be redone.",
        min=-1,
        max=2**31 - 1,
        wire_default=-1,
    )
    num_inference_steps: int = param(
        25,
        wire="steps",
        help="Denoising steps: more is slower and often finer (fast mode: max 8).",
        min=1,
        max=150,
    )
    guidance_scale: float = param(
        7.5, wire="guidance", help="How strictly to follow the prompt (fast mode: max 2).", min=0.0, max=30.0
    )
    # 1.0: ignore what was there; lower keeps some of the old object's layout/colours
    strength: float = param(
        1.0,
        help="1 replaces completely; lower keeps some of the old object's shape and colours.",
        min=0.05,
        max=1.0,
    )
    # LCM-LoRA + LCMScheduler: at most 8 steps, guidance at most 2
    fast: bool = param(
        False,
        help="Few-step mode with LCM-LoRA (install: python3 install.py --models lcm-lora); SD 1.5 models only.",
    )
    snap: SnapParams = group(SnapParams, verb="replace")
    grow_px: int = param(  # the denoised region extends this far beyond the snapped object
        8,
        wire="grow",
        help="Pixels the edited region extends beyond the object, so the new object blends in.",
        min=0,
        max=256,
        advanced=True,
    )
    feather_px: int = param(  # blend zone, inside the grown region (never outside it)
        6,
        wire="feather",
        help="Blend width in pixels, inside the edited region.",
        min=0,
        max=128,
        advanced=True,
    )
    # model long side; None: the model's native size
    resolution: int | None = resolution(
        "Model long side in pixels; 0 uses the model's own (512 SD 1.5, 1024 SDXL)."
    )
    model: str = param(
        "",
        help="Inpainting model: empty for the installed default, or a folder, "
        ".safetensors file, name in the models folder, or Hugging Face repo id already cached.",
        advanced=True,
    )
    context: float = 0.25  # crop margin around the region, as a share of its long side
    previews: bool = False  # denoise callbacks get a 4th argument: a latent-resolution RGB uint8 preview

    def check(self) -> None:
        """ValueError naming the field for values no run can use (direct library callers; the op's door already
        checked the wire's ranges)."""
        refuse_blank(self)  # the prompt
        if not 0.0 < self.strength <= 1.0:
            raise ValueError("strength must be in (0, 1]")
        if self.num_inference_steps < 1:
            raise ValueError("num_inference_steps must be at least 1")
        if self.grow_px < 0 or self.feather_px < 0:
            raise ValueError("grow_px and feather_px must not be negative")
        if self.resolution is not None and self.resolution < 64:
            raise ValueError("resolution must be at least 64")

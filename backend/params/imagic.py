"""Settings of one Imagic edit."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.params import param, refuse_blank

from .snap import resolution

FINETUNE_MODES = ("lora", "full", "none")
PRECISIONS = ("auto", "no", "fp16", "bf16")
CHECKPOINTING = ("auto", "on", "off")
DEFAULT_LR = {"lora": 3e-4, "full": 5e-7, "none": 0.0}  # full: the paper's SD setting


@dataclass
class ImagicParams:
    """Everything one edit needs. Changing only ``etas``, ``seed``, ``guidance_scale`` or
    ``num_inference_steps`` reuses the cached tuned state; every other field is part of the cache key.
    Fields with ``param`` are the imagic op's wire parameters, in this order (``model``: read by the op)."""

    prompt: str = param(
        "", help="What the edited image should show (the whole scene, not the change).", nonempty=True
    )
    etas: list[float] = param(
        wire="eta",
        default_factory=lambda: [0.7],
        help="Edit strength: 0 = the input, 1 = the text; 0.6-0.8 usually works. Several values give several "
        "candidates; after the first run, new values reuse the tuning and take seconds.",
        min=0.0,
        max=1.5,
    )
    seed: int = param(
        0,
        help="Random seed of the sampling; -1 picks one (reported back) so a result can be redone. A new seed "
        "reuses the tuning.",
        min=-1,
        max=2**31 - 1,
        wire_default=-1,
    )
    num_inference_steps: int = param(25, wire="steps", help="DDIM sampling steps.", min=1, max=200)
    guidance_scale: float = param(
        7.5, wire="guidance", help="Classifier-free guidance scale.", min=1.0, max=30.0
    )
    preview: bool = param(  # slider drag: few-step draft from the cached tuning (LCM-LoRA when given)
        False,
        help="Quick draft from the cached tuning, e.g. while the eta slider is dragged: 4 LCM steps when the "
        "lcm-lora model is installed, else 8 DDIM steps; the full render follows on release.",
        advanced=True,
    )
    model: str = param(
        "", help="Text-to-image model: installed preset name, folder or .safetensors file.", advanced=True
    )
    # paper (SD): 1000; the Imagen ablation saw little gain past 100
    embedding_steps: int = param(
        100, help="Stage A steps (paper: 1000; 100 is close to converged).", min=0, max=5000, advanced=True
    )
    embedding_lr: float = param(
        2e-3, help="Stage A learning rate (paper: 2e-3).", min=1e-6, max=1.0, advanced=True
    )
    finetune: str = param(
        "lora",
        help="Stage B: lora (fast, light, default), full (the paper; slow, ~4x memory) or none (skip).",
        choices=FINETUNE_MODES,
        advanced=True,
    )
    # paper: 1500 full steps; LoRA converges in 50-300 (FastEdit: 50)
    finetune_steps: int = param(
        150, help="Stage B steps (paper: 1500 full; LoRA: 50-300).", min=0, max=5000, advanced=True
    )
    finetune_lr: float | None = param(  # None: 3e-4 for LoRA, 5e-7 for full (paper)
        None,
        none=0.0,
        help="Stage B learning rate; 0 = 3e-4 for LoRA, 5e-7 for full (paper).",
        min=0.0,
        max=1.0,
        advanced=True,
    )
    lora_rank: int = param(4, help="LoRA rank of the attention adapters.", min=1, max=128, advanced=True)
    # noise/timesteps of stages A and B (kept apart from ``seed`` so a new seed hits the cache)
    tune_seed: int = param(
        0, help="Seed of the tuning stages (part of the cache key).", min=0, max=2**31 - 1, advanced=True
    )
    precision: str = param(
        "auto",
        help="auto = fp16/bf16 autocast on a GPU; on a CPU bf16 autocast where the CPU computes bf16 natively "
        "(AVX512-BF16/AMX: ~1.7x faster, measured), else fp32; no = fp32 everywhere.",
        choices=PRECISIONS,
        advanced=True,
    )
    # model long side; None: the UNet's native size
    resolution: int | None = resolution("Model long side in pixels; 0 = the model's native size.")
    # auto: only when the memory estimate needs it; on / off (booleans from older callers mean on / off)
    gradient_checkpointing: str | bool = param(
        "auto",
        help="Trade compute for memory while tuning: auto = only when the memory estimate needs it (the result's "
        "info says which), on, off.",
        choices=CHECKPOINTING,
        advanced=True,
    )
    adam_8bit: bool = param(  # needs bitsandbytes on CUDA; falls back to Adam (reported in info)
        False, help="8-bit Adam (bitsandbytes, CUDA only; otherwise plain Adam).", advanced=True
    )
    use_cache: bool = param(
        True, wire="cache", help="Keep the tuning so later eta/seed changes skip it.", advanced=True
    )

    @property
    def checkpointing(self) -> str:
        """``gradient_checkpointing`` as auto / on / off (booleans from older callers mean on / off)."""
        value = self.gradient_checkpointing
        if isinstance(value, bool):
            return "on" if value else "off"
        return str(value).lower()

    def check(self) -> None:
        """Raise ValueError naming the field for values no run can use (direct library callers; the op's door
        already checked the wire's values)."""
        refuse_blank(self)  # the prompt
        if not self.etas:
            raise ValueError("etas: give at least one eta value (0.6-0.8 usually works)")
        if self.finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune must be one of {', '.join(FINETUNE_MODES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.checkpointing not in CHECKPOINTING:
            raise ValueError(f"gradient_checkpointing must be one of {', '.join(CHECKPOINTING)}")
        for name in ("num_inference_steps",):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("embedding_steps", "finetune_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more")
        if self.lora_rank < 1:
            raise ValueError("lora_rank must be at least 1")

    @property
    def lr(self) -> float:
        return DEFAULT_LR[self.finetune] if self.finetune_lr is None else float(self.finetune_lr)

    def tuning_settings(self, precision_name: str) -> dict:
        """The fields that shape e_opt and the fine-tuned weights (the cache key's settings part)."""
        return {
            "prompt": self.prompt,
            "embedding_steps": self.embedding_steps,
            "embedding_lr": self.embedding_lr,
            "finetune": self.finetune,
            "finetune_steps": self.finetune_steps if self.finetune != "none" else 0,
            "finetune_lr": self.lr,
            "lora_rank": self.lora_rank if self.finetune == "lora" else 0,
            "tune_seed": self.tune_seed,
            "precision": precision_name,
            "adam_8bit": self.adam_8bit,
        }

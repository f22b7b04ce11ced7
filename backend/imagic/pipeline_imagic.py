"""ImagicPipeline: text-only editing of a real image (Kawar et al. 2022) on injected Stable Diffusion parts.

What it adds to the paper's three stages (see ``stages.py``) so that it fits an editor:
- LoRA fine-tuning by default (peft on the UNet's attention projections): a few MB to train and cache instead of
  a 3.4 GB UNet copy with Adam state; full fine-tuning stays available.
- The tuned state (e_tgt, e_opt, LoRA weights) is cached by image content + text + tuning settings + model, so
  changing eta or the seed only re-runs stage C (seconds, not minutes): that is what makes an eta slider usable.
- Several etas are sampled as one batch and come back as several candidates.
- The shared base model is bit-identical after every job (``ModelGuard``), on success, cancel, error or OOM.
- A selection limits the edit: the crop around it goes to the model and the result is composited back only inside
  it, through ``backend.imaging`` (bit-exact outside).

Defaults are chosen for interactive use, not the paper's 1000 + 1500 steps (~7 min on an A100): the Imagen
ablation found 100 embedding steps enough, and LoRA fine-tunes of this kind (FastEdit) converge in 50-300 steps.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from backend.imaging import composite, plan_crop, split_alpha, to_float
from backend.imaging.formats import match_channels

from . import stages
from .cache import TunedState, TunedStateCache, cache_key
from .guard import ModelGuard, add_lora, lora_config, lora_weights

FINETUNE_MODES = ("lora", "full", "none")
PRECISIONS = ("auto", "no", "fp16", "bf16")
DEFAULT_LR = {"lora": 3e-4, "full": 5e-7, "none": 0.0}  # full: the paper's SD setting

Callback = Callable[[str, int, int], None]


@dataclass
class ImagicParams:
    """Everything one edit needs. Changing only ``etas``, ``seed``, ``guidance_scale`` or
    ``num_inference_steps`` reuses the cached tuned state; every other field is part of the cache key."""

    prompt: str
    etas: list[float] = field(default_factory=lambda: [0.7])
    guidance_scale: float = 7.5
    num_inference_steps: int = 25
    seed: int = 0
    embedding_steps: int = 100  # paper (SD): 1000; the Imagen ablation saw little gain past 100
    embedding_lr: float = 2e-3  # paper (SD)
    finetune: str = "lora"  # lora | full | none
    finetune_steps: int = 150  # paper: 1500 full steps; LoRA converges in 50-300 (FastEdit: 50)
    finetune_lr: float | None = None  # None: 3e-4 for LoRA, 5e-7 for full (paper)
    lora_rank: int = 4
    tune_seed: int = (
        0  # noise/timesteps of stages A and B (kept apart from ``seed`` so a new seed hits the cache)
    )
    precision: str = "auto"  # auto: fp16/bf16 autocast on GPU, fp32 on CPU
    gradient_checkpointing: bool = True
    adam_8bit: bool = False  # needs bitsandbytes on CUDA; falls back to Adam (reported in info)
    use_cache: bool = True
    resolution: int | None = None  # model long side; None: the UNet's native size

    def check(self) -> None:
        """Raise ValueError naming the field for values no run can use."""
        if not self.prompt or not self.prompt.strip():
            raise ValueError("prompt: describe the edited image, e.g. 'a photo of a sitting dog'")
        if not self.etas:
            raise ValueError("etas: give at least one eta value (0.6-0.8 usually works)")
        if self.finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune must be one of {', '.join(FINETUNE_MODES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
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


@dataclass
class ImagicOutput:
    """``images[i]`` is the edit for ``etas[i]``, with the input's shape and dtype."""

    images: list[np.ndarray]
    etas: list[float]
    cache_hit: bool
    timings: dict[str, float]
    info: dict = field(default_factory=dict)


class ImagicPipeline:
    """Imagic on injected Stable Diffusion components (never loads weights itself)."""

    def __init__(
        self,
        unet,
        vae,
        text_encoder,
        tokenizer,
        scheduler,
        *,
        device: str | torch.device | None = None,
        cache: TunedStateCache | None = None,
        model_id: str | None = None,
    ):
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.scheduler = scheduler
        self.device = torch.device(device) if device is not None else next(unet.parameters()).device
        self.cache = cache if cache is not None else TunedStateCache(None)
        self.model_id = model_id or self._fingerprint()
        self.stats = {"embedding_runs": 0, "finetune_runs": 0, "generate_runs": 0}

    @classmethod
    def from_pipe(cls, pipe, **kwargs) -> ImagicPipeline:
        """Take the components of a loaded diffusers StableDiffusionPipeline (shared, not copied)."""
        parts = {k: getattr(pipe, k) for k in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}
        return cls(**parts, **kwargs)

    # ---- geometry -----------------------------------------------------------------------------------------------
    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native_resolution(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale

    @property
    def size_multiple(self) -> int:
        """Pixel sizes must divide into latents the UNet can halve at each down block."""
        return self.vae_scale * 2 ** (len(self.unet.config.block_out_channels) - 1)

    # ---- the editor-facing call ---------------------------------------------------------------------------------
    def __call__(
        self,
        image: np.ndarray,
        selection: np.ndarray | None,
        params: ImagicParams,
        callback: Callback | None = None,
    ) -> ImagicOutput:
        """Edit ``image`` (HxWxC in the host's dtype); with a selection only inside it, bit-exact outside."""
        params.check()
        mask = np.ones(image.shape[:2], np.float32) if selection is None else selection
        plan = plan_crop(
            mask,
            image.shape,
            context=0.0 if selection is None else 0.25,
            min_context=0 if selection is None else 16,
            target=params.resolution or self.native_resolution,
            multiple=self.size_multiple,
        )
        if plan is None:
            raise ValueError("selection is empty: select the region to edit, or clear the selection")
        colour, _ = split_alpha(image)
        rgb = match_channels(np.clip(to_float(np.asarray(colour)), 0.0, 1.0), 3)
        edits, hit, timings, info = self.edit(plan.to_model(rgb), params, callback)
        results = []
        for edit in edits:
            full = plan.paste(np.zeros(image.shape[:2] + (3,), np.float32), plan.from_model(edit))
            results.append(composite(image, full, mask))
        info["model_size"] = list(plan.model_size)
        info["box"] = list(plan.box)
        return ImagicOutput(results, list(params.etas), hit, timings, info)

    # ---- the model-resolution core ------------------------------------------------------------------------------
    def edit(
        self, rgb: np.ndarray, params: ImagicParams, callback: Callback | None = None
    ) -> tuple[list[np.ndarray], bool, dict[str, float], dict]:
        """Edit a model-size HxWx3 float [0, 1] image; returns (images, cache_hit, timings, info)."""
        params.check()
        progress = callback or (lambda stage, step, total: None)
        precision = stages.Precision.resolve(params.precision, self.device, self.unet.dtype)
        h, w = rgb.shape[:2]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(f"model-size image {w}x{h} must be a multiple of {self.size_multiple}")
        key = cache_key(
            model=self.model_id,
            image=np.ascontiguousarray(rgb, np.float32).tobytes(),
            shape=list(rgb.shape),
            settings=params.tuning_settings(precision.name),
        )
        timings: dict[str, float] = {}
        info: dict = {"precision": precision.name, "finetune": params.finetune, "cache_key": key}
        with ModelGuard(self.unet, self.text_encoder, self.vae) as guard:
            self._freeze()
            state = self.cache.get(key) if params.use_cache else None
            hit = state is not None
            if state is None:
                state = self._tune(rgb, params, precision, guard, progress, timings, info)
                if params.use_cache:
                    self._store(key, state, params)
            else:
                self._apply(state, guard)
            t0 = time.perf_counter()
            uncond = stages.encode_text(self.text_encoder, self.tokenizer, "", self.device)
            images = stages.generate(
                self.unet,
                self.vae,
                self.scheduler.config,
                state.e_tgt.to(self.device),
                state.e_opt.to(self.device),
                uncond,
                [float(e) for e in params.etas],
                latent_hw=(h // self.vae_scale, w // self.vae_scale),
                steps=params.num_inference_steps,
                guidance=params.guidance_scale,
                seed=params.seed,
                precision=precision,
                progress=progress,
            )
            self.stats["generate_runs"] += 1
            timings["generate"] = time.perf_counter() - t0
        return images, hit, timings, info

    # ---- internals ----------------------------------------------------------------------------------------------
    def _freeze(self) -> None:
        for m in (self.unet, self.text_encoder, self.vae):
            m.requires_grad_(False)
            m.eval()

    def _tune(
        self, rgb, params: ImagicParams, precision, guard: ModelGuard, progress, timings, info
    ) -> TunedState:
        """Stages A and B. The UNet is left tuned (adapter attached, or weights changed under the guard)."""
        from diffusers import DDIMScheduler

        noise_schedule = DDIMScheduler.from_config(self.scheduler.config)
        generator = torch.Generator("cpu").manual_seed(int(params.tune_seed))
        if params.gradient_checkpointing and getattr(self.unet, "_supports_gradient_checkpointing", False):
            self.unet.enable_gradient_checkpointing()
        t0 = time.perf_counter()
        latents = stages.encode_image(self.vae, rgb, self.device)
        e_tgt = stages.encode_text(self.text_encoder, self.tokenizer, params.prompt, self.device)
        e_opt, info["embedding"] = stages.optimise_embedding(
            self.unet,
            noise_schedule,
            latents,
            e_tgt,
            steps=params.embedding_steps,
            lr=params.embedding_lr,
            generator=generator,
            precision=precision,
            progress=progress,
            adam_8bit=params.adam_8bit,
        )
        self.stats["embedding_runs"] += 1
        timings["embedding"] = time.perf_counter() - t0
        if params.finetune == "none":
            return TunedState(e_tgt, e_opt, "none")
        t0 = time.perf_counter()
        trainable, config = self._prepare_finetune(params, guard)
        info["trainable_params"] = sum(p.numel() for p in trainable)
        info["finetune_stats"] = stages.finetune_unet(
            self.unet,
            noise_schedule,
            latents,
            e_opt,
            trainable,
            steps=params.finetune_steps,
            lr=params.lr,
            generator=generator,
            precision=precision,
            progress=progress,
            adam_8bit=params.adam_8bit,
        )
        for p in trainable:
            p.requires_grad_(False)
        self.stats["finetune_runs"] += 1
        timings["finetune"] = time.perf_counter() - t0
        return TunedState(e_tgt, e_opt, params.finetune, {}, config)

    def _prepare_finetune(self, params: ImagicParams, guard: ModelGuard) -> tuple[list, dict]:
        if params.finetune == "lora":
            config = lora_config(params.lora_rank)
            return add_lora(self.unet, config, seed=params.tune_seed), config
        guard.backup_weights()
        self._upcast()  # Adam on fp16 weights diverges; the guard restores the original dtype and values
        return list(self.unet.parameters()), {}

    def _store(self, key: str, state: TunedState, params: ImagicParams) -> None:
        """Cache the tuned state; the weights are read from the tuned UNet only when the cache would keep them."""
        if state.mode == "lora":
            state.weights = lora_weights(self.unet)
        elif state.mode == "full":
            size = sum(v.numel() * v.element_size() for v in self.unet.state_dict().values())
            if not self.cache.would_keep(size):
                return
            state.weights = {k: v.detach().cpu().clone() for k, v in self.unet.state_dict().items()}
        self.cache.put(key, state)
        state.weights = {}

    def _apply(self, state: TunedState, guard: ModelGuard) -> None:
        """Put cached fine-tuned weights on the UNet (under the guard) before sampling."""
        if state.mode == "lora":
            add_lora(self.unet, state.config, state.weights)
        elif state.mode == "full":
            guard.backup_weights()
            self._upcast()
            with torch.no_grad():
                for k, v in self.unet.state_dict(keep_vars=True).items():
                    v.copy_(state.weights[k].to(v.device))
        for p in self.unet.parameters():
            p.requires_grad_(False)

    def _upcast(self) -> None:
        if self.unet.dtype != torch.float32:
            self.unet.to(dtype=torch.float32)

    def _fingerprint(self) -> str:
        """Identify the loaded weights for the cache key when the caller gives no model id: configs plus a
        sample of values from every component (two different checkpoints practically never collide)."""
        h = hashlib.sha256(f"{self.unet.dtype}|{self.device.type}".encode())
        for m in (self.unet, self.text_encoder, self.vae):
            cfg = getattr(m, "config", None)
            h.update(
                json.dumps(
                    cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg or {}), default=str
                ).encode()
            )
            params = list(m.parameters())
            for p in params[:4] + params[-4:]:
                h.update(p.detach().flatten()[:512].float().cpu().numpy().tobytes())
        return "sd-" + h.hexdigest()[:24]


__all__ = ["ImagicOutput", "ImagicParams", "ImagicPipeline"]

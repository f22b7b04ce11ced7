"""ImagicPipeline: text-only editing of a real image (Kawar et al. 2022) on injected Stable Diffusion parts.

What it adds to the paper's three stages (see ``stages.py``) so that it fits an editor:
- LoRA fine-tuning by default (peft on the UNet's attention projections): a few MB to train and cache instead of
  a 3.4 GB UNet copy with Adam state; full fine-tuning stays available.
- The tuned state (e_tgt, e_opt, LoRA weights) is cached by image content + text + tuning settings + model, so
  changing eta or the seed only re-runs stage C (seconds, not minutes): that is what makes an eta slider usable.
- Several etas are sampled as one batch (one UNet call per step for all of them) and come back as candidates.
- ``preview=True`` renders a cheap draft for a dragged eta slider (LCM-LoRA attached when given, else a low
  DDIM step count, from the same noise);
  the full render follows on release.
- Full fine-tuning stays within the community pipeline's memory: the base UNet is recorded on disk, not copied in
  RAM (``ModelGuard``), and its tuned state is cached as an fp16 delta (half a UNet) on a size-capped disk LRU.
- Gradient checkpointing is used when the memory estimate says it is needed (``auto``), said in ``info``.
- The shared base model is bit-identical after every job (``ModelGuard``), on success, cancel, error or OOM.
- A selection limits the edit: the crop around it goes to the model and the result is composited back only inside
  it, through ``backend.imaging`` (bit-exact outside).

Defaults are chosen for interactive use, not the paper's 1000 + 1500 steps (~7 min on an A100): the Imagen
ablation found 100 embedding steps enough, and LoRA fine-tunes of this kind (FastEdit) converge in 50-300 steps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from backend import malloc
from backend.imaging import composite, plan_crop, split_alpha, to_float
from backend.imaging.formats import match_channels
from backend.params.imagic import ImagicParams

from . import stages
from .cache import TunedState, TunedStateCache, cache_key
from .guard import ModelGuard, add_lora, lora_config, lora_weights, remove_lora

PREVIEW_STEPS = 8  # DDIM steps of a slider preview without LCM-LoRA (capped by num_inference_steps)
LCM_PREVIEW_STEPS = 4  # with LCM-LoRA attached: 4 LCM steps at guidance 1 (no unconditional half)
DELTA_FORMAT = "fp16-delta-1"

log = logging.getLogger("layeredit.imagic")

Callback = Callable[[str, int, int], None]


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
        spill_dir: str | os.PathLike | None = None,
        lcm_lora: str | os.PathLike | None = None,
        release_idle: bool = True,
    ):
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.scheduler = scheduler
        self.device = torch.device(device) if device is not None else next(unet.parameters()).device
        self.cache = cache if cache is not None else TunedStateCache(None)
        self.model_id = model_id or self._fingerprint()
        self.spill_dir = spill_dir if spill_dir is not None else self.cache.directory
        self.lcm_lora = lcm_lora  # the LCM-LoRA file for previews (None: previews use few DDIM steps)
        self.release_idle = release_idle  # hand back idle parts' mapped weight pages while tuning (_release)
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
        info: dict = {"precision": precision.name, "precision_why": precision.why}
        info.update(finetune=params.finetune, cache_key=key)
        with ModelGuard(self.unet, self.text_encoder, self.vae, spill_dir=self.spill_dir) as guard:
            self._freeze()
            t0 = time.perf_counter()
            state = self.cache.get(key) if params.use_cache else None
            hit = state is not None
            if state is None:
                # the heap's free pages go back before and after tuning: the previous requests' sampling buffers
                # are not what tuning needs, and tuning's own (its activations; ~10 GB of gradients and Adam
                # moments after a full fine-tune) not what sampling needs. Once per tuned request: cache hits,
                # the slider's requests, keep their buffers (no refaulting, backend.malloc)
                malloc.release_free_memory()
                state = self._tune(rgb, params, precision, guard, progress, timings, info)
                malloc.release_free_memory()
                if params.use_cache:
                    self._store(key, state, guard, info)
                if state.mode == "lora":  # sample as a cache hit will: the adapter as forward hooks
                    weights = state.weights or lora_weights(self.unet)
                    remove_lora(self.unet)
                    guard.attach_lora(state.config, weights)
            else:
                self._apply(state, guard)
                timings["apply"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            if state.uncond is None:
                state.uncond = stages.encode_text(self.text_encoder, self.tokenizer, "", self.device).cpu()
            sampler = self._sampler(params, info, guard)
            with sampler as (scheduler_config, steps, guidance, kind):
                images = stages.generate(
                    self.unet,
                    self.vae,
                    scheduler_config,
                    state.e_tgt.to(self.device),
                    state.e_opt.to(self.device),
                    state.uncond.to(self.device),
                    [float(e) for e in params.etas],
                    latent_hw=(h // self.vae_scale, w // self.vae_scale),
                    steps=steps,
                    guidance=guidance,
                    seed=params.seed,
                    precision=precision,
                    progress=progress,
                    sampler=kind,
                    info=info,
                )
            self.stats["generate_runs"] += 1
            timings["generate"] = time.perf_counter() - t0
        return images, hit, timings, info

    def _sampler(self, params: ImagicParams, info: dict, guard: ModelGuard) -> _Sampler:
        """Scheduler, steps and guidance for stage C: the full render, or a few-step preview (LCM-LoRA attached
        on top of the tuned state under the guard when the file is there, else a low DDIM step count)."""
        if not params.preview:
            return _Sampler(self.scheduler.config, params.num_inference_steps, params.guidance_scale)
        if self.lcm_lora is not None and os.path.isfile(self.lcm_lora):
            fused = guard.attach_deltas(lcm_deltas(self.lcm_lora))
            if fused:
                info["preview"] = f"lcm-lora, {LCM_PREVIEW_STEPS} steps, {fused} layers"
                return _Sampler(self.scheduler.config, LCM_PREVIEW_STEPS, 1.0, "lcm")
            info["preview_note"] = "the LCM-LoRA file fits no layer of this UNet"
        steps = min(params.num_inference_steps, PREVIEW_STEPS)
        info["preview"] = f"ddim, {steps} steps"
        return _Sampler(self.scheduler.config, steps, params.guidance_scale)

    # ---- internals ----------------------------------------------------------------------------------------------
    def _release(self, out: dict, name: str, *vae_parts: str) -> None:
        """Tuning (stages A and B, the longest and most memory-hungry phase) needs only the UNet resident: the VAE
        decoder is idle until sampling, the VAE encoder and the text encoder once their outputs are computed. Where
        their weights are clean pages of the mapped model files, those pages are handed back
        (``backend.models.residency``: they stay in the OS page cache; the next use faults them back in, same
        bytes): on SD-1.5 fp32 files ~0.6 GiB less resident while tuning. Weights in anonymous memory (converted
        at load time) are left alone. ``out[name]`` gets the bytes released (or "0 (why)"), ``out["s"]`` the
        seconds. Off with ``release_idle=False`` and off a CPU (GPU weights are not mapped files)."""
        if not self.release_idle or self.device.type != "cpu":
            return
        from backend.models.residency import release_file_pages

        modules = [getattr(self.vae, p, None) for p in vae_parts] if vae_parts else [self.text_encoder]
        t0 = time.perf_counter()
        done = release_file_pages(*[m for m in modules if m is not None])
        out["s"] = out.get("s", 0.0) + time.perf_counter() - t0
        out[name] = done.released if done.released else f"0 ({done.why})"

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
        use, why = self._checkpointing_choice(params, rgb.shape[:2], precision)
        info["gradient_checkpointing"] = use
        info["gradient_checkpointing_why"] = why
        if use:
            self.unet.enable_gradient_checkpointing()
        t0 = time.perf_counter()
        released: dict = {}
        self._release(released, "vae_decoder", "decoder", "post_quant_conv")
        latents = stages.encode_image(self.vae, rgb, self.device)
        self._release(released, "vae_encoder", "encoder", "quant_conv")
        e_tgt = stages.encode_text(self.text_encoder, self.tokenizer, params.prompt, self.device)
        uncond = stages.encode_text(self.text_encoder, self.tokenizer, "", self.device)
        self._release(released, "text_encoder")
        if released:
            timings["release"] = released.pop("s")
            info["released_idle"] = released
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
            graphs=not use,  # recomputing forwards inside a captured backward is not supported
        )
        self.stats["embedding_runs"] += 1
        timings["embedding"] = time.perf_counter() - t0
        if params.finetune == "none":
            return TunedState(e_tgt, e_opt, "none", uncond=uncond)
        t0 = time.perf_counter()
        trainable, config = self._prepare_finetune(params, guard)
        info["trainable_params"] = sum(p.numel() for p in trainable)
        if "base_record" in config:
            info["base_record"] = config["base_record"]
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
            # a graphed backward keeps a static gradient per trained weight: fine for an adapter's 0.8 M, not
            # for a full fine-tune's 860 M (whose Adam step runs inside the backward to keep memory down)
            graphs=not use and params.finetune == "lora",
        )
        for p in trainable:
            p.requires_grad_(False)
        self.stats["finetune_runs"] += 1
        timings["finetune"] = time.perf_counter() - t0
        return TunedState(e_tgt, e_opt, params.finetune, {}, config, uncond)

    def _prepare_finetune(self, params: ImagicParams, guard: ModelGuard) -> tuple[list, dict]:
        if params.finetune == "lora":
            config = lora_config(params.lora_rank)
            params_ = add_lora(self.unet, config, seed=params.tune_seed)
            for p in params_:  # peft makes the adapter fp16 on an fp16 UNet (the GPU default): the GradScaler
                p.data = (
                    p.data.float()
                )  # refuses fp16 gradients and Adam on fp16 is unstable; train it in fp32
            return params_, config
        info_where = guard.backup_weights()
        self._upcast()  # Adam on fp16 weights diverges; the guard restores the original dtype and values
        return list(self.unet.parameters()), {"format": DELTA_FORMAT, "base_record": info_where}

    def _store(self, key: str, state: TunedState, guard: ModelGuard, info: dict) -> None:
        """Cache the tuned state. A full fine-tune is kept as an fp16 delta from the base (``full_delta``), and
        the UNet is set to exactly what that delta rebuilds, so the first render equals every cache hit."""
        if state.mode == "lora":
            state.weights = lora_weights(self.unet)
            self.cache.put(key, state)
            return  # the adapter stays in state.weights: attached as hooks for sampling
        if state.mode == "full":
            half = sum(v.numel() * 2 for v in self.unet.state_dict().values())
            if not self.cache.would_keep(half):
                info["full_cache"] = f"not kept: ~{half / 1e9:.2f} GB exceeds the cache's bounds"
                return
            state.weights = full_delta(self.unet, _base_tensors(guard))
            apply_full_delta(self.unet, state.weights, _base_tensors(guard))
            info["full_cache"] = f"fp16 delta, {state.nbytes / 1e9:.2f} GB"
        self.cache.put(key, state)
        state.weights = {}

    def _apply(self, state: TunedState, guard: ModelGuard) -> None:
        """Put cached fine-tuned weights on the UNet (under the guard) before sampling."""
        if state.mode == "lora":
            guard.attach_lora(state.config, state.weights)
        elif state.mode == "full":
            guard.backup_weights()
            self._upcast()
            apply_full_delta(self.unet, state.weights, None)
        for p in self.unet.parameters():
            p.requires_grad_(False)

    def _checkpointing_choice(self, params: ImagicParams, hw: tuple[int, int], precision) -> tuple[bool, str]:
        """Gradient checkpointing only when tuning would not fit otherwise (it recomputes every forward pass:
        1.3-2x slower steps). ``auto``: on when an estimate of what tuning adds exceeds 90% of the free memory
        (checkpointing only saves activations, but then every byte counts)."""
        if not getattr(self.unet, "_supports_gradient_checkpointing", False):
            return False, "not supported by this UNet"
        mode = params.checkpointing
        if mode != "auto":
            return mode == "on", f"{mode} (asked)"
        need = tuning_bytes(
            self.unet,
            params.finetune,
            hw,
            self.vae_scale,
            precision.amp_dtype is not None,
            stages.steps_in_backward(precision, params.adam_8bit),
        )
        free = free_memory_bytes(self.device)
        use = need > 0.9 * free
        return use, (
            f"auto: tuning needs ~{need / 2**30:.1f} GiB beyond the loaded model, "
            f"{free / 2**30:.1f} GiB free -> {'on' if use else 'off'}"
        )

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


class _Sampler:
    """Stage C's scheduler config, step count and guidance (a context manager so that a sampler which changes
    the model for its call can undo it)."""

    def __init__(self, scheduler_config, steps: int, guidance: float, kind: str = "ddim"):
        self.value = (scheduler_config, int(steps), float(guidance), kind)

    def __enter__(self):
        return self.value

    def __exit__(self, *exc) -> None:
        return None


# ---- LCM-LoRA for previews --------------------------------------------------------------------------------------
_LCM_CACHE: dict[tuple[str, float], list] = {}


def lcm_deltas(path: str | os.PathLike) -> list[tuple[str, torch.Tensor, torch.Tensor, float]]:
    """(UNet module path, A, B, scale) of every UNet layer in a LoRA file (diffusers or kohya format, read
    through diffusers' converter); the last file read is kept in memory (a slider drag reads it once)."""
    from diffusers import StableDiffusionPipeline

    key = (str(path), os.path.getmtime(path))
    if key in _LCM_CACHE:
        return _LCM_CACHE[key]
    state, alphas = StableDiffusionPipeline.lora_state_dict(str(path))
    alphas = alphas or {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        if not k.startswith("unet."):
            continue
        for down, up in ((".lora.down.weight", ".lora.up.weight"), (".lora_A.weight", ".lora_B.weight")):
            if k.endswith(down):
                pairs.setdefault(k[len("unet.") : -len(down)], {})["A"] = v
            elif k.endswith(up):
                pairs.setdefault(k[len("unet.") : -len(up)], {})["B"] = v
    out = []
    for module, ab in pairs.items():
        if "A" not in ab or "B" not in ab:
            continue
        rank = ab["A"].shape[0]
        alpha = alphas.get(f"unet.{module}.alpha", alphas.get(f"{module}.alpha"))
        out.append((module, ab["A"], ab["B"], float(alpha) / rank if alpha is not None else 1.0))
    _LCM_CACHE.clear()
    _LCM_CACHE[key] = out
    return out


# ---- full fine-tune: compact delta --------------------------------------------------------------------------------
def _base_tensors(guard: ModelGuard):
    """(name, base tensor) pairs from the guard's record: the disk snapshot, else its RAM fallback."""
    if guard.snapshot is not None:
        return guard.snapshot.tensors()
    return iter((guard._backup or {}).items())


def full_delta(unet, base) -> dict[str, torch.Tensor]:
    """``tuned - base`` per changed float tensor as fp16 with a per-tensor fp32 scale (``delta.K``, ``scale.K``).

    Half a UNet on disk (1.7 GB for SD-1.5 instead of 3.4); the scale puts each tensor's largest change at the top
    of fp16's range, so the small steps of a low-lr fine-tune (5e-7 per Adam step) are not lost as subnormals."""
    live = unet.state_dict()
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for k, b in base:
            v = live[k]
            if not v.is_floating_point():
                continue
            d = v.detach().float().cpu() - b.float()
            amax = float(d.abs().max()) if d.numel() else 0.0
            if amax == 0.0:
                continue  # unchanged: nothing to keep
            scale = amax / 60000.0
            out["delta." + k] = (d / scale).to(torch.float16)
            out["scale." + k] = torch.tensor([scale], dtype=torch.float32)
    return out


def apply_full_delta(unet, weights: dict[str, torch.Tensor], base) -> None:
    """Set the (fp32) UNet to base + delta. ``base`` None: the UNet holds the base now and the delta is added in
    place; else it is read from ``base`` (the first render after tuning), giving the same values bit for bit."""
    live = unet.state_dict(keep_vars=True)
    with torch.no_grad():
        if base is None:
            for k, v in live.items():
                if "delta." + k in weights:
                    v.add_(_dequant(weights, k).to(v.device))
            return
        for k, b in base:
            if "delta." + k in weights:
                v = live[k]
                v.copy_((b.float() + _dequant(weights, k)).to(v.device))


def _dequant(weights: dict[str, torch.Tensor], k: str) -> torch.Tensor:
    return weights["delta." + k].float() * weights["scale." + k]


# ---- memory estimate for gradient checkpointing -------------------------------------------------------------------
def tuning_bytes(
    unet, finetune: str, hw: tuple[int, int], vae_scale: int, half: bool, in_backward: bool = True
) -> int:
    """Rough bytes tuning adds to the loaded model: activations kept for the backward pass, plus gradients and
    Adam moments of what is trained (the whole UNet in full mode). Activations were calibrated on SD-1.5 shapes
    (the team notes: ~0.8 GB at 256 px): ~55 floats per latent pixel per unit of the UNet's summed block widths, plus
    the attention probabilities of the highest-resolution blocks; 1.25x headroom on the activations. The rest
    is exact: two fp32 Adam moments per trained weight, plus its fp32 gradient, all of them alive at once when
    one optimizer steps after the backward pass (fp16 with its scaler, 8-bit Adam), only the largest tensor's
    when each tensor steps inside the backward pass (``in_backward``: ``stages.steps_in_backward``)."""
    lat = (hw[0] // vae_scale) * (hw[1] // vae_scale)
    width = sum(getattr(unet.config, "block_out_channels", (320, 640, 1280, 1280)))
    elem = 2 if half else 4
    heads = getattr(unet.config, "attention_head_dim", 8)
    heads = heads if isinstance(heads, int) else max(heads)
    acts = 55 * width * lat * elem + 5 * 2 * heads * lat * lat * elem
    trained = 0
    if finetune == "full":
        sizes = [p.numel() for p in unet.parameters()]
        grads = max(sizes, default=0) if in_backward else sum(sizes)
        trained = 2 * 4 * sum(sizes) + 4 * grads
    return int(1.25 * acts + trained)


def free_memory_bytes(device: torch.device) -> int:
    """Free memory where tuning runs: CUDA's free bytes, else the system's MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


__all__ = ["ImagicOutput", "ImagicParams", "ImagicPipeline"]

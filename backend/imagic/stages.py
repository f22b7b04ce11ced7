"""The three Imagic stages as plain functions over diffusers components (Kawar et al. 2022, arXiv 2210.09276).

A: optimise the target-text embedding with the denoising loss on the input image's latents, model frozen.
B: fine-tune the UNet on the same loss conditioned on the (now frozen) optimised embedding.
C: sample with DDIM and classifier-free guidance from e = eta * e_tgt + (1 - eta) * e_opt.

The functions know nothing about caching or about keeping the base model intact (``ImagicPipeline`` and
``ModelGuard`` do that); the benchmark calls them directly to reproduce the naive public configuration with the
same step code. Every step reports progress through ``progress(stage, step, total)``, which may raise to cancel.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from backend.imagic import cuda_graphs

Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, step: int, total: int) -> None:
    return None


def cpu_bf16_native() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX on x86, oneDNN's bf16 check elsewhere), and
    what was found. Where it is only emulated, bf16 is no faster than fp32, so ``auto`` keeps fp32 there."""
    try:
        if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False, "no oneDNN bf16 on this CPU"
        if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
            return True, "oneDNN bf16"  # Arm: oneDNN only reports bf16 where the cores have it
        if torch.cpu._is_amx_tile_supported():
            return True, "AMX"
        if torch.cpu._is_avx512_bf16_supported():
            return True, "AVX512-BF16"
        return False, "bf16 only emulated (no AVX512-BF16 or AMX)"
    except (AttributeError, RuntimeError):  # an older or unusual torch build: stay with fp32
        return False, "bf16 support unknown"


@dataclass(frozen=True)
class Precision:
    """Autocast dtype for forward passes (None: run in the weights' own dtype), and why it was chosen."""

    device: torch.device
    amp_dtype: torch.dtype | None
    why: str = field(default="", compare=False)

    @classmethod
    def resolve(cls, mode: str, device: torch.device, weights: torch.dtype = torch.float32) -> Precision:
        """``auto``: on a GPU, autocast to the weights' half type (fp16 weights -> fp16, bf16 -> bf16; fp32
        weights -> bf16 where supported, else fp16). On a CPU, bf16 autocast where the CPU computes bf16
        natively: measured on SD-1.5 shapes at 128 px (AVX512-BF16, 1 thread; docs/benchmarks/imagic.md) a UNet
        step 1.5x (batch 2) to 1.9x (batch 12) faster, stages A and B 1.75x, the VAE decode 1.8x; else fp32."""
        why = f"{mode} (asked)"
        if mode == "auto":
            if device.type == "cuda":
                if weights in (torch.float16, torch.bfloat16):
                    mode = "fp16" if weights == torch.float16 else "bf16"
                else:
                    mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
                why = f"auto: {mode} autocast on a GPU"
            elif device.type == "cpu" and weights == torch.float32:
                native, found = cpu_bf16_native()
                mode = "bf16" if native else "no"
                why = f"auto: CPU with {found} -> {'bf16 autocast' if native else 'fp32'}"
            else:
                mode, why = "no", f"auto: the weights' own dtype on {device.type}"
        table = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}
        if mode not in table:
            raise ValueError(f"precision must be auto, no, fp16 or bf16, not {mode!r}")
        return cls(device, table[mode], why)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.amp_dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


# ---- encoders ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_text(text_encoder, tokenizer, text: str, device: torch.device) -> torch.Tensor:
    """CLIP hidden states (1, tokens, dim) in float32 for ``text`` padded to the tokenizer's max length."""
    ids = tokenizer(
        text,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)
    return text_encoder(ids)[0].float()


@torch.no_grad()
def encode_image(vae, rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """Scaled latents (1, 4, h/8, w/8) of an HxWx3 float [0, 1] image; the posterior mean, so deterministic."""
    x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None] * 2.0 - 1.0
    dtype = next(vae.parameters()).dtype
    dist = vae.encode(x.to(device=device, dtype=dtype)).latent_dist
    latents = dist.mean * vae.config.scaling_factor
    return latents.float()


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, precision: Precision | None = None) -> np.ndarray:
    """HxWx3 float32 [0, 1] from one latent (1, 4, h, w). Under bf16 precision the decode is autocast too
    (1.8x faster on an AVX512-BF16 CPU at 128 px, measured; bf16 has fp32's range, so it cannot overflow the
    way an fp16 VAE decode can)."""
    dtype = next(vae.parameters()).dtype
    bf16 = precision is not None and precision.amp_dtype == torch.bfloat16
    with precision.autocast() if bf16 else contextlib.nullcontext():
        img = vae.decode(latents.to(dtype) / vae.config.scaling_factor).sample
    img = (img.float() / 2.0 + 0.5).clamp(0.0, 1.0)
    return img[0].permute(1, 2, 0).cpu().numpy()


# ---- the denoising loss shared by stages A and B ----------------------------------------------------------------
def denoising_loss(
    forward: cuda_graphs.Forward,
    scheduler,
    latents: torch.Tensor,
    embedding: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Simple diffusion loss at one random timestep; ``forward(noisy, t, embedding)`` is the UNet's prediction
    (``training_forward``). Noise comes from ``generator`` (a CPU generator, so runs repeat on any device), never
    from the global RNG."""
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (1,), generator=generator).to(latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, t)
    else:
        target = noise
    pred = forward(noisy, t, embedding)
    return F.mse_loss(pred.float(), target.float())


def training_forward(
    unet, precision: Precision, latents: torch.Tensor, context: torch.Tensor, graphs: bool
) -> tuple[cuda_graphs.Forward, str]:
    """The stage's UNet call: replayed from CUDA graphs when ``graphs`` and the device allow (see cuda_graphs),
    else eager. Under autocast the inputs stay float32 and autocast casts them; else the weights' dtype. bf16 on
    a CPU recasts frozen weights for the backward pass (``recast_frozen_weights``)."""
    dtype = unet.dtype if precision.amp_dtype is None else torch.float32
    if not graphs:
        call, status = cuda_graphs.UNetCall(unet, precision.amp_dtype, dtype), "eager (not asked)"
    else:
        call, status = cuda_graphs.graphed_training_forward(
            unet, precision.amp_dtype, dtype, latents, context
        )
    if (
        precision.amp_dtype == torch.bfloat16
        and precision.device.type == "cpu"
        and status.startswith("eager")
    ):
        return _Recast(call, unet), status
    return call, status


class _Recast:
    """``forward`` run under ``recast_frozen_weights(unet)``."""

    def __init__(self, forward: cuda_graphs.Forward, unet):
        self.forward, self.unet = forward, unet

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        with recast_frozen_weights(self.unet):
            return self.forward(x, t, context)


@contextlib.contextmanager
def recast_frozen_weights(model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16):
    """For a bf16-autocast forward pass that will be differentiated: each frozen fp32 Linear/Conv2d weight is cast
    to ``dtype`` at its layer's call (what autocast does anyway), and the cast is not kept for the backward
    pass: autograd saves a note instead and the weight is cast again from the fp32 original when backward
    needs it (the same values). Autocast alone keeps every layer's cast alive until backward, a bf16 copy of
    the whole frozen UNet: +1.5 GiB on SD-1.5 (measured), which would put LoRA tuning above the fp32 peak. The
    second cast costs a little time; the forward arithmetic is unchanged. Weights that are trained (a full
    fine-tune) are left to autocast."""
    # storage address of a layer's cast -> its fp32 weight, during the call
    live: dict[int, torch.Tensor] = {}
    originals: dict[torch.nn.Module, torch.Tensor] = {}

    def before(module, args):
        w = module._parameters["weight"]
        cast = w.detach().to(dtype)
        originals[module] = w
        live[cast.untyped_storage().data_ptr()] = w
        module._parameters["weight"] = cast

    def after(module, args, output):
        cast = module._parameters["weight"]
        module._parameters["weight"] = originals.pop(module)
        live.pop(cast.untyped_storage().data_ptr(), None)

    def pack(t: torch.Tensor):
        if t.dtype == dtype and t.device.type != "meta":
            w = live.get(t.untyped_storage().data_ptr())
            if w is not None:
                return ("recast", w, t.size(), t.stride(), t.storage_offset())
        return t

    def unpack(saved):
        if isinstance(saved, tuple):
            _, w, size, stride, offset = saved
            return w.detach().to(dtype).as_strided(size, stride, offset)
        return saved

    handles = []
    for m in model.modules():
        w = m._parameters.get("weight") if isinstance(m, torch.nn.Linear | torch.nn.Conv2d) else None
        if w is not None and not w.requires_grad and w.dtype == torch.float32:
            handles.append(m.register_forward_pre_hook(before))
            handles.append(m.register_forward_hook(after, always_call=True))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield
    finally:
        for h in handles:
            h.remove()
        for m, w in originals.items():  # a forward that raised between the two hooks
            m._parameters["weight"] = w
        originals.clear()
        live.clear()


def make_optimizer(
    params: Iterable[torch.nn.Parameter], lr: float, adam_8bit: bool
) -> tuple[torch.optim.Optimizer, str]:
    """Adam, or bitsandbytes' 8-bit Adam when asked for and usable (CUDA only); returns (optimizer, name)."""
    params = list(params)
    if adam_8bit and all(p.device.type == "cuda" for p in params):
        try:
            import bitsandbytes as bnb  # optional: not installable usefully on CPU-only machines

            return bnb.optim.Adam8bit(params, lr=lr), "adam8bit"
        except Exception:  # missing or broken install: plain Adam still works
            pass
    return torch.optim.Adam(params, lr=lr), "adam"


def steps_in_backward(precision: Precision, adam_8bit: bool) -> bool:
    """Whether a multi-tensor ``train_steps`` steps each tensor inside the backward pass (no fp16 scaler, no
    8-bit Adam): then only one gradient is alive at a time (what ``tuning_bytes`` counts)."""
    return precision.amp_dtype != torch.float16 and not adam_8bit


def train_steps(
    stage: str,
    params: list[torch.nn.Parameter],
    loss_fn: Callable[[], torch.Tensor],
    steps: int,
    lr: float,
    precision: Precision,
    progress: Progress,
    adam_8bit: bool = False,
) -> dict:
    """Run ``steps`` optimiser steps on ``loss_fn``; fp16 autocast gets a gradient scaler. Returns stats."""
    scaler = torch.amp.GradScaler(precision.device.type, enabled=precision.amp_dtype == torch.float16)
    if len(params) > 1 and steps_in_backward(precision, adam_8bit):
        return _train_steps_in_backward(stage, params, loss_fn, steps, lr, progress)
    optimizer, name = make_optimizer(params, lr, adam_8bit)

    def update(loss: torch.Tensor) -> None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        # freed here, not before the next backward: otherwise the previous step's gradients (3.4 GB for a full
        # SD-1.5 fine-tune) stay alive through the next forward pass, on top of its activations
        optimizer.zero_grad(set_to_none=True)

    stats = _run_steps(stage, name, loss_fn, update, steps, progress)
    for p in params:
        p.grad = None
    return (
        stats  # the optimizer and its Adam state go with this frame, before the next stage allocates its own
    )


def _run_steps(
    stage: str,
    name: str,
    loss_fn: Callable[[], torch.Tensor],
    update: Callable[[torch.Tensor], None],
    steps: int,
    progress: Progress,
) -> dict:
    """The loop both optimiser set-ups share: the loss, ``update`` (backward and step), progress; the stats."""
    first = last = None
    for i in range(steps):
        loss = loss_fn()
        update(loss)
        # kept as tensors: reading a GPU loss every step would make the host wait for the GPU every step
        last = loss.detach()
        first = last if first is None else first
        progress(stage, i + 1, steps)
    return {
        "optimizer": name,
        "first_loss": None if first is None else float(first),
        "last_loss": None if last is None else float(last),
    }


def _train_steps_in_backward(
    stage: str,
    params: list[torch.nn.Parameter],
    loss_fn: Callable[[], torch.Tensor],
    steps: int,
    lr: float,
    progress: Progress,
) -> dict:
    """``train_steps`` with each parameter's Adam step taken inside the backward pass, as soon as its gradient is
    complete, and the gradient freed right away: a full SD-1.5 fine-tune then never holds all 3.4 GB of
    gradients at once (the community pipeline does, on top of the weights and Adam moments). One Adam per tensor
    does the same arithmetic as one Adam over all of them (no clipping, no scaler: fp32 or bf16 only)."""
    optimizers = {p: torch.optim.Adam([p], lr=lr) for p in params}

    def step(p: torch.Tensor) -> None:
        optimizers[p].step()
        p.grad = None

    handles = [p.register_post_accumulate_grad_hook(step) for p in params]
    try:
        return _run_steps(stage, "adam (step in backward)", loss_fn, torch.Tensor.backward, steps, progress)
    finally:
        for h in handles:
            h.remove()
        for p in params:
            p.grad = None
        optimizers.clear()  # free the Adam moments before the next stage allocates its own


# ---- stage A ----------------------------------------------------------------------------------------------------
def optimise_embedding(
    unet,
    scheduler,
    latents: torch.Tensor,
    e_tgt: torch.Tensor,
    *,
    steps: int,
    lr: float,
    generator: torch.Generator,
    precision: Precision,
    progress: Progress = _no_progress,
    adam_8bit: bool = False,
    graphs: bool = True,
) -> tuple[torch.Tensor, dict]:
    """Stage A: e_opt starts at e_tgt and follows the denoising loss; the UNet must already be frozen."""
    e_opt = torch.nn.Parameter(e_tgt.detach().clone().float())
    forward, status = training_forward(unet, precision, latents, e_opt, graphs and steps > 0)

    def loss() -> torch.Tensor:
        return denoising_loss(forward, scheduler, latents, e_opt, generator)

    stats = train_steps("embedding", [e_opt], loss, steps, lr, precision, progress, adam_8bit)
    return e_opt.detach(), {**stats, "unet_calls": status}


# ---- stage B ----------------------------------------------------------------------------------------------------
def finetune_unet(
    unet,
    scheduler,
    latents: torch.Tensor,
    e_opt: torch.Tensor,
    params: list[torch.nn.Parameter],
    *,
    steps: int,
    lr: float,
    generator: torch.Generator,
    precision: Precision,
    progress: Progress = _no_progress,
    adam_8bit: bool = False,
    graphs: bool = True,
) -> dict:
    """Stage B: train ``params`` (LoRA adapters, or every UNet weight for a full fine-tune) in place. ``graphs``
    only for small trained sets: a graphed backward keeps a static gradient for every trained weight."""
    for p in params:
        p.requires_grad_(True)
    emb = e_opt.detach()
    forward, status = training_forward(unet, precision, latents, emb, graphs and steps > 0)

    def loss() -> torch.Tensor:
        return denoising_loss(forward, scheduler, latents, emb, generator)

    stats = train_steps("finetune", params, loss, steps, lr, precision, progress, adam_8bit)
    return {**stats, "unet_calls": status}


# ---- stage C ----------------------------------------------------------------------------------------------------
def mix_embeddings(e_tgt: torch.Tensor, e_opt: torch.Tensor, etas: list[float]) -> torch.Tensor:
    """(n, tokens, dim): eta * e_tgt + (1 - eta) * e_opt per eta; eta 0 and 1 give e_opt and e_tgt exactly."""
    return torch.cat([eta * e_tgt + (1.0 - eta) * e_opt for eta in etas], dim=0)


@torch.no_grad()
def generate(
    unet,
    vae,
    scheduler_config,
    e_tgt: torch.Tensor,
    e_opt: torch.Tensor,
    uncond: torch.Tensor,
    etas: list[float],
    *,
    latent_hw: tuple[int, int],
    steps: int,
    guidance: float,
    seed: int,
    precision: Precision,
    progress: Progress = _no_progress,
    sampler: str = "ddim",
    info: dict | None = None,
) -> list[np.ndarray]:
    """Stage C: all etas as one batch from the same starting noise, so each image equals its eta run alone.
    ``sampler`` "lcm" (a preview with LCM-LoRA folded in) uses LCMScheduler; guidance 1 skips the
    unconditional half of the batch (uncond + 1 * (cond - uncond) is cond)."""
    from diffusers import DDIMScheduler, LCMScheduler

    cls = LCMScheduler if sampler == "lcm" else DDIMScheduler
    scheduler = cls.from_config(scheduler_config)  # private copy: set_timesteps mutates it
    scheduler.set_timesteps(steps, device=e_tgt.device)
    n = len(etas)
    cfg = guidance > 1.0
    dtype = unet.dtype if precision.amp_dtype is None else torch.float32
    cond = mix_embeddings(e_tgt, e_opt, etas).to(dtype)
    uncond = uncond.to(dtype)
    # built once: the cross-attention projections of a context are computed once per run (_fast_sampling), and
    # the guided batch [uncond x n, cond] is row-picked from [uncond, cond] (its projections with it: n + 1 rows
    # are projected and kept, not 2n)
    unique = torch.cat([uncond, cond], dim=0) if cfg else cond
    picks = torch.tensor([0] * n + list(range(1, n + 1)), device=cond.device)
    context = unique.index_select(0, picks) if cfg and n > 1 else unique
    derived = (context, unique, picks) if context is not unique else None
    generator = torch.Generator("cpu").manual_seed(int(seed))
    noise = torch.randn((1, unet.config.in_channels, *latent_hw), generator=generator).to(e_tgt.device)
    latents = noise.expand(n, -1, -1, -1) * scheduler.init_noise_sigma
    forward = cuda_graphs.SamplingForward(unet, precision.amp_dtype, dtype, e_tgt.device)
    with _fast_sampling(unet, derived):
        for i, t in enumerate(scheduler.timesteps):
            # every eta starts from the same latent, so at the first step one unconditional prediction serves
            # them all (batch n + 1 instead of 2n); after it the latents differ and each needs its own
            shared = cfg and i == 0 and n > 1
            if shared:
                model_in, ctx = torch.cat([latents[:1], latents]), unique
            else:
                model_in, ctx = (torch.cat([latents, latents]) if cfg else latents), context
            model_in = scheduler.scale_model_input(model_in, t)
            pred = forward(model_in, t, ctx)
            if cfg:
                uncond_pred, cond_pred = (pred[:1], pred[1:]) if shared else pred.chunk(2)
                pred = uncond_pred + guidance * (cond_pred - uncond_pred)
            if sampler == "lcm":
                latents = scheduler.step(pred, t, latents, generator=generator).prev_sample
            else:
                latents = scheduler.step(pred, t, latents, eta=0.0).prev_sample
            progress("generate", i + 1, steps)
    if info is not None:
        info["sampling_unet_calls"] = forward.status
    return [decode_latents(vae, latents[j : j + 1], precision) for j in range(n)]


class _ContextProjection(torch.nn.Module):
    """Stands in for a cross-attention ``to_k`` / ``to_v`` during one sampling run: the text context is the same
    tensor at every step, so its projection is computed once (by the wrapped layer, hooks included) and reused.
    Keyed by the tensor itself and its version counter. ``derived`` = (context, base, rows): ``context`` is
    ``base``'s rows ``rows``, so its projection is ``base``'s, row-picked for the call and not kept (the guided
    batch repeats the unconditional row n times: keeping n + 1 rows instead of 2n, 46 instead of 123 MB over
    SD-1.5's 32 projections for 5 etas)."""

    def __init__(self, inner: torch.nn.Module, derived: tuple | None = None):
        super().__init__()
        self.inner = inner
        self.derived = derived
        self.memo: list[tuple[torch.Tensor, int, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.derived is not None and x is self.derived[0]:
            return self(self.derived[1]).index_select(0, self.derived[2])
        for seen, version, out in self.memo:
            if seen is x and version == x._version:
                return out
        out = self.inner(x)
        self.memo.append((x, x._version, out))
        return out


@contextlib.contextmanager
def _fast_sampling(unet, derived: tuple | None = None):
    """Swap ``_ContextProjection`` in for every cross-attention ``to_k`` / ``to_v`` for one no-grad sampling run
    (7% of a batch-10 SD-1.5 UNet step at 16x16 latents, measured); the original layers are put back on exit
    and no weight is touched or copied. (Running 1x1 convs as one matrix product over the batch was measured
    too: 4% slower, dropped.)"""
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    try:
        for parent in list(unet.modules()):
            if not getattr(parent, "is_cross_attention", False):
                continue
            for name in ("to_k", "to_v"):
                child = getattr(parent, name, None)
                if isinstance(child, torch.nn.Module):
                    setattr(parent, name, _ContextProjection(child, derived))
                    swapped.append((parent, name, child))
        yield
    finally:
        for parent, name, child in reversed(swapped):
            setattr(parent, name, child)

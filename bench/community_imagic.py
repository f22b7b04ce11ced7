"""A replica of diffusers' community ``ImagicStableDiffusionPipeline`` as its users run it, for bench/imagic.py.

Written here from the published behaviour (examples/community/imagic_stable_diffusion.py), not copied, so that the
benchmark's reference is the public code's real use and not our stage functions in a naive setting:

``train(prompt, image, ...)``
  - UNet, VAE and text encoder frozen and in eval mode; the prompt's CLIP hidden states become a trainable
    parameter (``text_embeddings``), a clone is kept as ``text_embeddings_orig``;
  - image latents: ``vae.encode(image).latent_dist.sample(generator) * 0.18215``;
  - stage A, ``text_embedding_optimization_steps`` (default 500) Adam steps at ``embedding_learning_rate``
    (1e-3): noise from the *global* RNG, ``t = randint(1000)``, ``scheduler.add_noise``, UNet forward, MSE to the
    noise (per-sample mean, then mean), backward, step, zero_grad, ``loss.item()`` logged every step;
  - stage B, ``model_fine_tuning_optimization_steps`` (1000) steps: ``unet.requires_grad_(True)``,
    ``unet.train()``, plain fp32 Adam over every UNet parameter at ``diffusion_model_learning_rate`` (2e-6), the
    same loss with the embedding frozen. The Accelerator's fp16 setting never touches the models (they are not
    ``prepare``d), so everything runs in fp32. The UNet is left tuned and in train mode.

``__call__(alpha=1.2, height=512, width=512, num_inference_steps=50, generator=None, guidance_scale=7.5, eta=0)``
  - ``e = alpha * orig + (1 - alpha) * optimised``; the empty prompt is encoded again on every call;
  - latents ``randn((1, 4, h/8, w/8), generator)`` times ``init_noise_sigma``; ``scheduler.set_timesteps``;
    per step one UNet call on ``cat([latents] * 2)`` against ``cat([uncond, e])``, guidance, ``scheduler.step``;
  - VAE decode of ``latents / 0.18215``, ``(x / 2 + 0.5).clamp(0, 1)``, to numpy (and PIL by default).

Each alpha is a separate call: nothing is shared between alphas (the community pipeline cannot batch them).
The safety checker is off here (the bench's model has none).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

SCALE = 0.18215  # the constant the community pipeline hard-codes (SD-1.x's VAE scaling factor)


class CommunityImagicReplica:
    """Holds a diffusers StableDiffusionPipeline's parts; ``train`` then one ``__call__`` per alpha."""

    def __init__(self, pipe):
        self.vae, self.unet, self.text_encoder = pipe.vae, pipe.unet, pipe.text_encoder
        self.tokenizer, self.scheduler = pipe.tokenizer, pipe.scheduler
        self.device = self.unet.device
        self.text_embeddings: torch.Tensor | None = None
        self.text_embeddings_orig: torch.Tensor | None = None
        self.timings: dict[str, float] = {}
        self.losses: list[float] = []

    def _encode(self, prompt: str) -> torch.Tensor:
        ids = self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder(ids.to(self.device))[0]

    def _loss(self, latents: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(latents.shape).to(latents.device)  # the global RNG, as published
        t = torch.randint(1000, (1,), device=latents.device)
        noisy = self.scheduler.add_noise(latents, noise, t)
        pred = self.unet(noisy, t, embeddings).sample
        return F.mse_loss(pred, noise, reduction="none").mean([1, 2, 3]).mean()

    def train(
        self,
        prompt: str,
        image: torch.Tensor,
        generator: torch.Generator | None = None,
        embedding_learning_rate: float = 1e-3,
        diffusion_model_learning_rate: float = 2e-6,
        text_embedding_optimization_steps: int = 500,
        model_fine_tuning_optimization_steps: int = 1000,
    ) -> None:
        """``image``: (1, 3, H, W) in [-1, 1], H and W multiples of 32."""
        for m in (self.vae, self.unet, self.text_encoder):
            m.requires_grad_(False)
            m.eval()
        t0 = time.perf_counter()
        emb = self._encode(prompt).detach()
        emb.requires_grad_()
        orig = emb.clone()
        optimizer = torch.optim.Adam([emb], lr=embedding_learning_rate)
        image = image.to(device=self.device, dtype=emb.dtype)
        latents = self.vae.encode(image).latent_dist.sample(generator=generator) * SCALE
        for _ in range(text_embedding_optimization_steps):
            loss = self._loss(latents, emb)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            self.losses.append(loss.detach().item())
        emb.requires_grad_(False)
        self.timings["embedding"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.unet.requires_grad_(True)
        self.unet.train()
        optimizer = torch.optim.Adam(self.unet.parameters(), lr=diffusion_model_learning_rate)
        for _ in range(model_fine_tuning_optimization_steps):
            loss = self._loss(latents, emb)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            self.losses.append(loss.detach().item())
        self.timings["finetune"] = time.perf_counter() - t0
        self.text_embeddings_orig, self.text_embeddings = orig, emb
        # as published: the optimizer (and its Adam moments) lives until train() returns; the UNet stays in
        # train mode with requires_grad set, its .grad tensors zeroed (set to None by zero_grad's default)

    @torch.no_grad()
    def __call__(
        self,
        alpha: float = 1.2,
        height: int = 512,
        width: int = 512,
        num_inference_steps: int = 50,
        generator: torch.Generator | None = None,
        guidance_scale: float = 7.5,
        eta: float = 0.0,
    ) -> np.ndarray:
        if self.text_embeddings is None or self.text_embeddings_orig is None:
            raise ValueError("run train() before generating")
        t0 = time.perf_counter()
        e = alpha * self.text_embeddings_orig + (1 - alpha) * self.text_embeddings
        cfg = guidance_scale > 1.0
        if cfg:
            uncond = self._encode("")
            e = torch.cat([uncond.view(1, uncond.shape[1], -1), e])
        latents = torch.randn(
            (1, self.unet.config.in_channels, height // 8, width // 8),
            generator=generator,
            device=self.device,
            dtype=e.dtype,
        )
        self.scheduler.set_timesteps(num_inference_steps)
        latents = latents * self.scheduler.init_noise_sigma
        for t in self.scheduler.timesteps.to(self.device):
            model_in = torch.cat([latents] * 2) if cfg else latents
            model_in = self.scheduler.scale_model_input(model_in, t)
            pred = self.unet(model_in, t, encoder_hidden_states=e).sample
            if cfg:
                uncond_pred, text_pred = pred.chunk(2)
                pred = uncond_pred + guidance_scale * (text_pred - uncond_pred)
            latents = self.scheduler.step(pred, t, latents, eta=eta).prev_sample
        image = self.vae.decode(latents / SCALE).sample
        image = (image / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy()
        self.timings["generate"] = time.perf_counter() - t0
        return image[0]

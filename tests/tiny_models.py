"""Tiny random-weight Stable-Diffusion-shaped pipelines, built offline in the test session.

They keep SD's structure (8x VAE latent scale, CLIP text encoder, UNet with cross-attention, DDIM with
SD-1.x betas) at a size that runs in milliseconds on a CPU. Their output is noise: they prove plumbing,
shapes, dtypes, exactness and speed ratios, never visual quality. They are saved with ``save_pretrained``
so the product's real loading code loads them from disk, as it would a downloaded model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TEXT_DIM = 32


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2/CLIP convention)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def _tokenizer(folder: Path):
    """A working CLIPTokenizer from a hand-written byte-level vocab (no download)."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(s, len(vocab))
    merges = ["t h", "th e</w>", "a n", "o n</w>"]
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    return tok, len(vocab)


def _components(in_channels: int, seed: int, workdir: Path):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )
    tokenizer, vocab_size = _tokenizer(workdir / "_tok")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=TEXT_DIM,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=vocab_size,
            max_position_embeddings=77,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def build_tiny_inpaint(folder: Path, seed: int = 0) -> Path:
    """Save a tiny StableDiffusionInpaintPipeline (UNet with 9 input channels) to ``folder``."""
    from diffusers import StableDiffusionInpaintPipeline

    folder = Path(folder)
    parts = _components(9, seed, folder.parent / (folder.name + "_build"))
    pipe = StableDiffusionInpaintPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """Save a tiny text-to-image StableDiffusionPipeline (UNet with 4 input channels) to ``folder``."""
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    parts = _components(4, seed, folder.parent / (folder.name + "_build"))
    pipe = StableDiffusionPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder

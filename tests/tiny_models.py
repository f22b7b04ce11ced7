"""Tiny random-weight Stable-Diffusion-shaped pipelines, built offline in the test session.

They keep SD's structure (8x VAE latent scale, CLIP text encoder, UNet with cross-attention, DDIM with
SD-1.x betas) at a size that runs in milliseconds on a CPU. Their output is noise: they prove plumbing,
shapes, dtypes, exactness and speed ratios, never visual quality. They are saved with ``save_pretrained``
so the product's real loading code loads them from disk, as it would a downloaded model.

This is the one place that builds SD-shaped random pipelines: tiny ones for the tests (``TINY``), the real
SD-1.5 shapes for the benchmarks (``SD15``), inpaint and text-to-image, and a tiny SDXL inpainting one.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SDShape:
    """The sizes of an SD-1.x-shaped pipeline: UNet, CLIP text encoder, VAE. ``TINY`` runs in milliseconds;
    ``SD15`` has SD-1.5's real shapes (real FLOPs and memory, for benchmarks; ~1 B parameters)."""

    unet_channels: tuple[int, ...]
    unet_layers: int
    down_blocks: tuple[str, ...]
    up_blocks: tuple[str, ...]
    sample_size: int  # latent size; the model's native resolution is 8x this
    attention_head_dim: int
    text_dim: int
    text_layers: int
    text_heads: int
    text_ff: int
    text_vocab: int | None  # None: the hand-written tokenizer's size
    vae_channels: tuple[int, ...]
    vae_layers: int
    vae_sample_size: int


TINY = SDShape(
    unet_channels=(32, 64),
    unet_layers=1,
    down_blocks=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_blocks=("CrossAttnUpBlock2D", "UpBlock2D"),
    sample_size=8,
    attention_head_dim=8,
    text_dim=TEXT_DIM,
    text_layers=2,
    text_heads=4,
    text_ff=37,
    text_vocab=None,
    vae_channels=(32, 32, 32, 32),
    vae_layers=1,
    vae_sample_size=64,
)
SD15 = SDShape(
    unet_channels=(320, 640, 1280, 1280),
    unet_layers=2,
    down_blocks=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_blocks=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    sample_size=64,
    attention_head_dim=8,
    text_dim=768,
    text_layers=12,
    text_heads=12,
    text_ff=3072,
    text_vocab=49408,  # CLIP's; the tokenizer only uses the first ids
    vae_channels=(128, 256, 512, 512),
    vae_layers=2,
    vae_sample_size=512,
)
KINDS = ("inpaint", "text2img")  # UNet input channels 9 (latents + mask + masked latents) or 4


def _text_config(
    vocab: int, hidden: int, layers: int, heads: int, ff: int, table: int | None = None, **extra
):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        hidden_size=hidden,
        intermediate_size=ff,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        vocab_size=table or vocab,
        max_position_embeddings=77,
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
        **extra,
    )


def _vae(shape: SDShape):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=shape.vae_channels,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(shape.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(shape.vae_channels),
        layers_per_block=shape.vae_layers,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=shape.vae_sample_size,
    )


def _ddim():
    """DDIM with SD-1.x's betas (what the SD-1.5 checkpoints ship)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def sd_components(shape: SDShape, in_channels: int, seed: int, workdir: Path) -> dict:
    """Random-weight unet/vae/text_encoder/tokenizer/scheduler of ``shape`` (the tokenizer's files go to
    ``workdir``); the same seed and shape give the same weights."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=shape.unet_channels,
        layers_per_block=shape.unet_layers,
        sample_size=shape.sample_size,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=shape.down_blocks,
        up_block_types=shape.up_blocks,
        cross_attention_dim=shape.text_dim,
        attention_head_dim=shape.attention_head_dim,
        norm_num_groups=32,
    )
    vae = _vae(shape)
    tokenizer, vocab_size = _tokenizer(workdir / "_tok")
    text_encoder = CLIPTextModel(
        _text_config(
            vocab_size, shape.text_dim, shape.text_layers, shape.text_heads, shape.text_ff, shape.text_vocab
        )
    )
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=_ddim())


def sd_pipeline(kind: str, shape: SDShape = TINY, seed: int = 0, workdir: Path | None = None):
    """An in-memory random-weight StableDiffusion(Inpaint)Pipeline of ``shape``, in eval mode (fp32, CPU)."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="sd-shaped-"))
    parts = sd_components(shape, 9 if kind == "inpaint" else 4, seed, workdir)
    for name in ("unet", "vae", "text_encoder"):
        parts[name].eval()
    cls = StableDiffusionInpaintPipeline if kind == "inpaint" else StableDiffusionPipeline
    pipe = cls(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_sd(folder: Path, kind: str, shape: SDShape = TINY, seed: int = 0) -> Path:
    """Save an SD-shaped random pipeline to ``folder`` (``save_pretrained``: the product loads it from disk
    as it would a downloaded model)."""
    folder = Path(folder)
    pipe = sd_pipeline(kind, shape, seed, folder.parent / (folder.name + "_build"))
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_inpaint(folder: Path, seed: int = 0) -> Path:
    """Save a tiny StableDiffusionInpaintPipeline (UNet with 9 input channels) to ``folder``."""
    return build_sd(folder, "inpaint", TINY, seed)


def build_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """Save a tiny text-to-image StableDiffusionPipeline (UNet with 4 input channels) to ``folder``."""
    return build_sd(folder, "text2img", TINY, seed)


def build_tiny_sdxl_inpaint(folder: Path, seed: int = 0) -> Path:
    """A tiny random-weight SDXL inpainting pipeline: two text encoders, text_time conditioning, 9-ch UNet."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids x 8 + the pooled text projection (32)
        cross_attention_dim=64,  # both text encoders' hidden states side by side
    )
    vae = _vae(dataclasses.replace(TINY, vae_sample_size=128))
    tokenizer, vocab = _tokenizer(folder.parent / (folder.name + "_tok"))
    text = (vocab, TEXT_DIM, TINY.text_layers, TINY.text_heads, TINY.text_ff)
    pipe = StableDiffusionXLInpaintPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(_text_config(*text)),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(*text, projection_dim=32)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        ),
        requires_aesthetics_score=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder

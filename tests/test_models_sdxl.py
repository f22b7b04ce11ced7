"""SDXL inpainting folders load through the same path (AutoPipelineForInpainting) and Replace runs on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from backend.models import ModelManager
from backend.ops import JobContext, OpError, OpInputs
from backend.ops.replace import ReplaceOp
from backend.replace import ReplaceParams, ReplacePipeline
from backend.replace.pipeline_replace import native_resolution
from protocol.errors import ErrorCode


def build_tiny_sdxl_inpaint(folder: Path) -> Path:
    """A tiny random-weight SDXL inpainting pipeline: two text encoders, text_time conditioning, 9-ch UNet."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from tests.tiny_models import _tokenizer

    torch.manual_seed(0)
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
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        sample_size=128,
    )
    tokenizer, vocab = _tokenizer(folder.parent / (folder.name + "_tok"))
    cfg = dict(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=vocab,
        max_position_embeddings=77,
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
    )
    pipe = StableDiffusionXLInpaintPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(CLIPTextConfig(**cfg)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**cfg, projection_dim=32)),
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


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    return build_tiny_sdxl_inpaint(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl-inpaint")


def test_sdxl_inpaint_folder_loads_and_replaces(sdxl_dir, tmp_path):
    from diffusers import StableDiffusionXLInpaintPipeline

    mm = ModelManager(models_dir=tmp_path, device="cpu", search_dirs=[], hf_cache_dir=tmp_path / "hf")
    pipe = mm.load_pipeline("inpaint", sdxl_dir)
    assert type(pipe) is StableDiffusionXLInpaintPipeline
    assert native_resolution(pipe) == 128  # sample_size 16 x VAE 8 (the real SDXL: 128 x 8 = 1024)
    image = np.random.default_rng(0).integers(0, 255, (100, 130, 3), dtype=np.uint8)
    selection = np.zeros((100, 130), np.float32)
    selection[30:60, 40:90] = 1.0
    out = ReplacePipeline(pipe)(image, selection, ReplaceParams("a cat", num_inference_steps=2))
    assert max(out.info["model_size"]) == 128
    edit = out.edit_mask > 0
    assert out.image.shape == image.shape and np.array_equal(out.image[~edit], image[~edit])


def test_fast_mode_refused_for_sdxl(sdxl_dir, tmp_path):
    mm = ModelManager(models_dir=tmp_path, device="cpu", search_dirs=[], hf_cache_dir=tmp_path / "hf")
    op = ReplaceOp()
    image = np.zeros((64, 64, 3), np.uint8)
    selection = np.zeros((64, 64), np.float32)
    selection[16:40, 16:40] = 1
    params = op.spec.validate({"prompt": "x", "fast": True, "model": str(sdxl_dir), "snap": "none"})
    with pytest.raises(OpError) as err:
        op.run(OpInputs(image, selection), params, JobContext(models=mm))
    assert err.value.code == ErrorCode.BAD_PARAM and err.value.details["param"] == "fast"

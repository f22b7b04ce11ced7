"""SDXL inpainting folders load through the same path (AutoPipelineForInpainting) and Replace runs on them."""

from __future__ import annotations

import numpy as np
import pytest

from backend.models import ModelManager
from backend.ops import JobContext, OpError, OpInputs
from backend.ops.replace import ReplaceOp
from backend.replace import ReplaceParams, ReplacePipeline
from backend.replace.pipeline_replace import native_resolution
from protocol.errors import ErrorCode
from tests.tiny_models import build_tiny_sdxl_inpaint


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
    params = op.spec.validate({"prompt": "x", "fast": True, "model": str(sdxl_dir), "snap": False})
    with pytest.raises(OpError) as err:
        op.run(OpInputs(image, selection), params, JobContext(models=mm))
    assert err.value.code == ErrorCode.BAD_PARAM and err.value.details["param"] == "fast"
    assert mm.stats.loads == 0  # decided from the folder's files: the model is not loaded to be refused


def test_model_manager_reads_the_architecture_from_the_files(
    sdxl_dir, tiny_sd_dir, tiny_inpaint_dir, tmp_path
):
    mm = ModelManager(models_dir=tmp_path, device="cpu", search_dirs=[], hf_cache_dir=tmp_path / "hf")
    assert mm.architecture("inpaint", sdxl_dir) == "sdxl-inpaint"
    assert mm.architecture("text2img", tiny_sd_dir) == "sd15"
    assert mm.architecture("inpaint", tiny_inpaint_dir) == "sd15-inpaint"
    assert mm.stats.loads == 0


@pytest.mark.parametrize(
    ("index", "unet", "arch"),
    [
        ({"text_encoder": [], "text_encoder_2": []}, {"in_channels": 4, "cross_attention_dim": 2048}, "sdxl"),
        ({"text_encoder": []}, {"in_channels": 9, "cross_attention_dim": 1024}, "sd2-inpaint"),
        ({"text_encoder": []}, {"in_channels": 4, "cross_attention_dim": 1024}, "sd2"),
        ({"text_encoder": []}, {"in_channels": 4, "cross_attention_dim": 768}, "sd15"),
    ],
)
def test_folder_architecture_from_the_configs(tmp_path, index, unet, arch):
    import json

    from backend.models.checkpoint import FAMILIES, FOLDER_ARCHITECTURES, family, folder_architecture

    (tmp_path / "unet").mkdir()
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    (tmp_path / "unet" / "config.json").write_text(json.dumps(unet))
    assert folder_architecture(tmp_path) == arch and arch in FOLDER_ARCHITECTURES
    assert family(arch) in FAMILIES


def test_fast_mode_refused_for_an_sd2_folder_before_loading(tmp_path):
    """LCM-LoRA is SD 1.5's: an SD 2.x folder (1024-wide cross-attention) is refused from its configs alone."""
    import json

    folder = tmp_path / "sd2-inpaint"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"text_encoder": ["transformers", "CLIPTextModel"]}))
    (folder / "unet" / "config.json").write_text(json.dumps({"in_channels": 9, "cross_attention_dim": 1024}))
    mm = ModelManager(models_dir=tmp_path, device="cpu", search_dirs=[], hf_cache_dir=tmp_path / "hf")
    image = np.zeros((64, 64, 3), np.uint8)
    selection = np.zeros((64, 64), np.float32)
    selection[16:40, 16:40] = 1
    params = ReplaceOp.spec.validate({"prompt": "x", "fast": True, "model": str(folder), "snap": False})
    with pytest.raises(OpError) as err:
        ReplaceOp().run(OpInputs(image, selection), params, JobContext(models=mm))
    assert err.value.code == ErrorCode.BAD_PARAM and err.value.details["param"] == "fast"
    assert mm.architecture("inpaint", folder) == "sd2-inpaint" and mm.stats.loads == 0


def test_a_loaded_pipeline_reads_as_the_files_do(sdxl_dir, tiny_sd_dir, tiny_inpaint_dir, tmp_path):
    """pipeline_architecture (for code handed a pipeline: the latent preview) applies the files' rule."""
    from backend.models.checkpoint import pipeline_architecture

    mm = ModelManager(models_dir=tmp_path, device="cpu", search_dirs=[], hf_cache_dir=tmp_path / "hf")
    for kind, ref in (("inpaint", sdxl_dir), ("text2img", tiny_sd_dir), ("inpaint", tiny_inpaint_dir)):
        assert pipeline_architecture(mm.load_pipeline(kind, ref)) == mm.architecture(kind, ref)

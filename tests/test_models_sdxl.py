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

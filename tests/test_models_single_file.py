"""Single-file checkpoints (A1111 / ComfyUI layout) load offline through ModelManager with a local config folder.

The tiny pipelines are written in the original latent-diffusion key layout (tests/ldm_checkpoint.py) and must
come back from ``from_single_file`` with exactly the weights they were saved with.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from backend.models import ModelManager
from backend.ops.base import OpError
from protocol.errors import ErrorCode
from tests.ldm_checkpoint import save_ldm_checkpoint


def config_only_copy(src: Path, dst: Path) -> Path:
    """What the *-config presets install: configs and tokenizer files, no weights."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    assert not list(dst.rglob("*.safetensors"))
    return dst


def manager(models_dir: Path) -> ModelManager:
    return ModelManager(
        models_dir=models_dir, device="cpu", search_dirs=[], hf_cache_dir=models_dir / "no-hf"
    )


def same_weights(a, b) -> bool:
    for part in ("unet", "vae", "text_encoder"):
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        if set(sa) != set(sb) or any(not torch.equal(sa[k], sb[k].reshape(sa[k].shape)) for k in sa):
            return False
    return True


@pytest.fixture(scope="module")
def reference(tiny_inpaint_dir, tmp_path_factory):
    return manager(tmp_path_factory.mktemp("ref")).load_pipeline("inpaint", tiny_inpaint_dir)


def test_inpaint_checkpoint_with_config_preset(tiny_inpaint_dir, reference, tmp_path):
    from diffusers import StableDiffusionInpaintPipeline

    ckpt = save_ldm_checkpoint(reference, tmp_path / "Stable-diffusion" / "my-inpaint.safetensors")
    config_only_copy(tiny_inpaint_dir, tmp_path / "sd15-inpaint-config")
    mm = manager(tmp_path)
    assert mm.locate("inpaint", "my-inpaint").path == ckpt  # A1111's Stable-diffusion/ sub-folder
    assert mm.architecture("inpaint", "my-inpaint") == "sd15-inpaint"  # from the header, before loading
    pipe = mm.load_pipeline("inpaint", "my-inpaint")
    assert type(pipe) is StableDiffusionInpaintPipeline and pipe.safety_checker is None
    assert same_weights(pipe, reference)


def test_config_folder_beside_the_checkpoint_and_ckpt_format(tiny_inpaint_dir, reference, tmp_path):
    from safetensors.torch import load_file

    st = save_ldm_checkpoint(reference, tmp_path / "shop.safetensors")
    ckpt = tmp_path / "shop-old.ckpt"
    torch.save({"state_dict": load_file(str(st))}, ckpt)
    config_only_copy(tiny_inpaint_dir, tmp_path / "shop.config")
    shutil.copytree(tmp_path / "shop.config", tmp_path / "shop-old.config")
    mm = manager(tmp_path)
    assert same_weights(mm.load_pipeline("inpaint", str(st)), reference)
    assert same_weights(mm.load_pipeline("inpaint", str(ckpt)), reference)


def test_text2img_checkpoint_uses_the_sd15_config(tiny_sd_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    ref = manager(tmp_path / "ref").load_pipeline("text2img", tiny_sd_dir)
    ckpt = save_ldm_checkpoint(ref, tmp_path / "models" / "photo.safetensors")
    assert manager(tmp_path / "models").locate("text2img", "photo").path == ckpt
    config_only_copy(tiny_sd_dir, tmp_path / "models" / "sd15-config")
    mm = manager(tmp_path / "models")
    pipe = mm.load_pipeline("text2img", "photo")
    assert type(pipe) is StableDiffusionPipeline and same_weights(pipe, ref)
    assert mm.load_pipeline("text2img", "photo") is pipe and mm.stats.loads == 1


def test_inpaint_checkpoint_refused_for_text2img(reference, tmp_path):
    ckpt = save_ldm_checkpoint(reference, tmp_path / "inp.safetensors")
    with pytest.raises(OpError) as err:
        manager(tmp_path).load_pipeline("text2img", str(ckpt))
    assert err.value.code == ErrorCode.BAD_PARAM and "inpainting model" in err.value.message


def test_truncated_checkpoint_is_model_broken(tiny_inpaint_dir, reference, tmp_path):
    ckpt = save_ldm_checkpoint(reference, tmp_path / "cut.safetensors")
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) * 2 // 3])
    config_only_copy(tiny_inpaint_dir, tmp_path / "sd15-inpaint-config")
    with pytest.raises(OpError) as err:
        manager(tmp_path).load_pipeline("inpaint", str(ckpt))
    assert err.value.code == ErrorCode.MODEL_BROKEN

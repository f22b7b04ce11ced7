"""Replace's few-step mode: LCM-LoRA + LCMScheduler on the shared pipeline, restored afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.models import ModelManager
from backend.ops import JobContext, OpInputs
from backend.ops.replace import ReplaceOp
from backend.replace import ReplaceParams, ReplacePipeline


def save_tiny_lora(tiny_inpaint_dir, folder):
    """A LoRA on the tiny UNet's attention projections with non-zero weights, saved the diffusers way."""
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(tiny_inpaint_dir, subfolder="unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    torch.manual_seed(1)
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    state = {k: torch.randn_like(v) * 0.5 for k, v in state.items()}
    StableDiffusionInpaintPipeline.save_lora_weights(folder, unet_lora_layers=state, safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def setup(tiny_inpaint_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("fast-models")
    save_tiny_lora(tiny_inpaint_dir, d / "lcm-lora")
    # a separate copy: LoRA loading modifies the UNet, which must not leak into other test modules' pipelines
    import shutil

    shutil.copytree(tiny_inpaint_dir, d / "sd15-inpaint")
    mm = ModelManager(models_dir=d, device="cpu", search_dirs=[], hf_cache_dir=d / "no-hf")
    return mm, mm.load_pipeline("inpaint")


def scene():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    selection = np.zeros((64, 80), np.float32)
    selection[16:44, 20:60] = 1.0
    return image, selection


def test_fast_mode_uses_lcm_then_restores_the_shared_pipeline(setup):
    mm, pipe = setup
    image, selection = scene()
    rp = ReplacePipeline(pipe, lcm_lora=mm.lora_file())
    plain = rp(image, selection, ReplaceParams("a vase", num_inference_steps=3, seed=1)).image
    scheduler_before = type(pipe.scheduler)
    seen: list[tuple] = []

    def spy(stage, i, total):
        if stage == "denoise":
            seen.append((i, total, type(pipe.scheduler).__name__, tuple(pipe.get_active_adapters())))

    fast = rp(
        image,
        selection,
        ReplaceParams("a vase", num_inference_steps=20, guidance_scale=7.5, fast=True, seed=1),
        spy,
    )
    assert [s[:2] for s in seen] == [(i, 8) for i in range(1, 9)]  # capped at 8 steps
    assert {s[2] for s in seen} == {"LCMScheduler"} and {s[3] for s in seen} == {("lcm",)}
    assert not np.array_equal(fast.image, plain)
    assert type(pipe.scheduler) is scheduler_before
    again = rp(image, selection, ReplaceParams("a vase", num_inference_steps=3, seed=1)).image
    assert np.array_equal(again, plain)  # the adapter is off again for normal runs
    fast2 = rp(image, selection, ReplaceParams("a vase", num_inference_steps=20, fast=True, seed=1)).image
    assert np.array_equal(fast2, fast.image)  # loaded once, reproducible


def test_fast_op_through_model_manager(setup):
    mm, _ = setup
    image, selection = scene()
    op = ReplaceOp()
    events: list[tuple] = []
    ctx = JobContext(models=mm, progress_fn=lambda *e: events.append(e[:3]))
    p = op.spec.validate({"prompt": "a vase", "fast": True, "steps": 4, "snap": False, "seed": 2})
    result = op.run(OpInputs(image, selection), p, ctx)
    assert result.meta["fast"] is True and result.image.shape == image.shape
    assert [e for e in events if e[0] == "denoise"][-1] == ("denoise", 4, 4)


def test_fast_without_lora_file_is_an_error(setup):
    _, pipe = setup
    image, selection = scene()
    with pytest.raises(FileNotFoundError):
        ReplacePipeline(pipe)(image, selection, ReplaceParams("a vase", fast=True))

"""The diffusion erase filler (backend/erase/fill_diffusion.py) inside the erase helper's ErasePipeline."""

from __future__ import annotations

import numpy as np
import pytest

from backend.erase import EraseParams, ErasePipeline
from backend.erase.fill_diffusion import DiffusionFiller, diffusion_fillers
from backend.models import ModelManager
from backend.ops import JobCancelled


@pytest.fixture(scope="module")
def models(tiny_inpaint_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("erase-models")
    (d / "sd15-inpaint").symlink_to(tiny_inpaint_dir, target_is_directory=True)
    return ModelManager(models_dir=d, device="cpu", search_dirs=[], hf_cache_dir=d / "no-hf")


class GpuLooking:
    """A ModelManager as seen from a GPU backend (auto erase must not pick diffusion even there); loads stay on
    CPU."""

    def __init__(self, models):
        import torch

        self._models = models
        self.device = torch.device("cuda")

    def __getattr__(self, name):
        return getattr(self._models, name)


def scene(dtype=np.uint8):
    rng = np.random.default_rng(4)
    image = rng.integers(0, 65535 if dtype == np.uint16 else 255, (90, 120, 4)).astype(dtype)
    selection = np.zeros((90, 120), np.float32)
    selection[30:60, 40:80] = 1.0
    return image, selection


def erase(filler, image, selection):
    pipeline = ErasePipeline(snapper=None, fillers={"diffusion": filler})
    return pipeline(image, selection, EraseParams(fill="diffusion"))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_diffusion_fill_through_erase_pipeline(models, dtype):
    image, selection = scene(dtype)
    filler = DiffusionFiller(models.load_pipeline("inpaint"), steps=3)
    assert filler.target == 64  # the tiny model's native size
    out = erase(filler, image, selection)
    assert out.image.shape == image.shape and out.image.dtype == image.dtype
    assert out.meta["fill"] == "diffusion"
    w, h = out.meta["model_size"]
    assert w % 8 == 0 and h % 8 == 0 and max(w, h) == 64
    changed = out.mask > 0
    assert np.array_equal(out.image[~changed], image[~changed])
    assert (out.image[changed] != image[changed]).any()
    # a see-through layer's alpha is filled too (by PatchMatch, test_erase_alpha.py), only inside the edit
    assert (out.image[changed, 3] != image[changed, 3]).any()


def test_fill_progress_seed_and_cancel(models):
    image, selection = scene()
    events: list[tuple] = []
    pipe = models.load_pipeline("inpaint")
    a = erase(DiffusionFiller(pipe, steps=4, seed=3, callback=lambda *e: events.append(e)), image, selection)
    assert events == [("denoise", i, 4) for i in range(1, 5)]
    b = erase(DiffusionFiller(pipe, steps=4, seed=3), image, selection)
    assert np.array_equal(a.image, b.image)

    def cancel_at_2(stage, step, total):
        if step == 2:
            raise JobCancelled()

    with pytest.raises(JobCancelled):
        erase(DiffusionFiller(pipe, steps=6, callback=cancel_at_2), image, selection)


def test_partial_strength_starts_from_classical_prefill(models):
    image, selection = scene()
    filler = DiffusionFiller(models.load_pipeline("inpaint"), steps=4, strength=0.5)
    rgb = np.ascontiguousarray(image[:64, :64, :3])
    hole = np.zeros((64, 64), bool)
    hole[20:40, 20:40] = True
    filled = filler(rgb, hole)
    assert filled.shape == (64, 64, 3) and filled.dtype == np.float32
    odd = filler(rgb[:60, :61], hole[:60, :61])  # sides not multiples of 8 are padded, then cut back
    assert odd.shape == (60, 61, 3)


def test_diffusion_fillers_follow_installed_model(models, tmp_path):
    empty = ModelManager(models_dir=tmp_path, device="cpu", search_dirs=[], hf_cache_dir=tmp_path / "hf")
    assert diffusion_fillers(empty) == {} and diffusion_fillers(None) == {}
    fillers = diffusion_fillers(models, steps=2)
    assert list(fillers) == ["diffusion"] and fillers["diffusion"].steps == 2


def test_erase_op_hook(models, tmp_path):
    from backend.erase.fill_diffusion import erase_model_fillers
    from backend.ops import OpError
    from protocol.errors import ErrorCode

    empty = ModelManager(models_dir=tmp_path, device="cpu", search_dirs=[], hf_cache_dir=tmp_path / "hf")
    assert erase_model_fillers("auto", empty) == {} and erase_model_fillers("telea", models) == {}
    assert (
        erase_model_fillers("patchmatch", GpuLooking(models)) == {}
    )  # what auto becomes without a learned one
    asked = erase_model_fillers("diffusion", GpuLooking(models))
    assert list(asked) == ["diffusion"] and isinstance(asked["diffusion"], DiffusionFiller)
    assert not asked["diffusion"].fast
    assert isinstance(erase_model_fillers("diffusion", models)["diffusion"], DiffusionFiller)
    with pytest.raises(OpError) as err:
        erase_model_fillers("diffusion", empty)
    assert (
        err.value.code == ErrorCode.MODEL_MISSING and "install.py --models sd15-inpaint" in err.value.message
    )
    image, selection = scene()
    out = ErasePipeline(snapper=None, fillers=asked)(image, selection, EraseParams(fill="diffusion"))
    assert out.meta["fill"] == "diffusion"


def test_erase_hook_uses_lcm_when_installed(tiny_inpaint_dir, tmp_path):
    from backend.erase.fill_diffusion import erase_model_fillers
    from tests.test_replace_fast import save_tiny_lora

    (tmp_path / "sd15-inpaint").symlink_to(tiny_inpaint_dir, target_is_directory=True)
    save_tiny_lora(tiny_inpaint_dir, tmp_path / "lcm-lora")
    mm = ModelManager(models_dir=tmp_path, device="cpu", search_dirs=[], hf_cache_dir=tmp_path / "hf")
    filler = erase_model_fillers("diffusion", GpuLooking(mm))["diffusion"]
    assert filler.fast and filler.steps == 6 and filler.lcm_lora == mm.lora_file()


def test_erase_op_runs_diffusion_only_when_asked(models, tmp_path):
    from backend.ops import JobContext, OpError, OpInputs
    from backend.ops.erase import EraseOp
    from protocol.errors import ErrorCode

    image, selection = scene()
    op = EraseOp()
    events: list[tuple] = []
    on_cpu = op.run(OpInputs(image, selection), op.spec.validate({"snap": False}), JobContext(models=models))
    assert on_cpu.meta["fill"] == "patchmatch" and on_cpu.meta["fill_requested"] == "auto"
    ctx = JobContext(models=GpuLooking(models), progress_fn=lambda *e: events.append(e[:3]))
    on_gpu = op.run(OpInputs(image, selection), op.spec.validate({"snap": False}), ctx)
    assert on_gpu.meta["fill"] == "patchmatch" and not any(e[0] == "denoise" for e in events)
    diffusion = {"snap": False, "fill": "diffusion"}
    result = op.run(OpInputs(image, selection), op.spec.validate(diffusion), ctx)
    assert result.meta["fill"] == "diffusion" and ("denoise", 20, 20) in events
    changed = result.mask > 0
    assert np.array_equal(result.image[~changed], image[~changed])
    classical = op.run(OpInputs(image, selection), op.spec.validate({"snap": False, "fill": "telea"}), ctx)
    assert classical.meta["fill"] == "telea"
    empty = ModelManager(models_dir=tmp_path, device="cpu", search_dirs=[], hf_cache_dir=tmp_path / "hf")
    plain = op.run(OpInputs(image, selection), op.spec.validate({"snap": False}), JobContext(models=empty))
    assert plain.meta["fill"] != "diffusion"
    with pytest.raises(OpError) as err:
        op.run(OpInputs(image, selection), op.spec.validate({"fill": "diffusion"}), JobContext(models=empty))
    assert err.value.code == ErrorCode.MODEL_MISSING
    cancel = JobContext(
        models=GpuLooking(models), progress_fn=lambda *e: events.append(e[:3]), cancel_check=lambda: True
    )
    events.clear()
    with pytest.raises(JobCancelled):
        op.run(OpInputs(image, selection), op.spec.validate(diffusion), cancel)

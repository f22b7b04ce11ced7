"""Replace: the pipeline and the op on a tiny random-weight SD inpainting model loaded from disk."""

from __future__ import annotations

import numpy as np
import pytest

from backend.jobs import run_job
from backend.models import ModelManager
from backend.ops import JobCancelled, JobContext, OpError, OpInputs, Registry
from backend.ops.replace import ReplaceOp
from backend.replace import EmptySelectionError, ReplaceParams, ReplacePipeline
from backend.wire_images import array_buffer
from protocol.errors import ErrorCode

H, W = 72, 96


@pytest.fixture(scope="module")
def models(tiny_inpaint_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("replace-models")
    (d / "sd15-inpaint").symlink_to(tiny_inpaint_dir, target_is_directory=True)
    return ModelManager(models_dir=d, device="cpu", search_dirs=[], hf_cache_dir=d / "no-hf")


@pytest.fixture(scope="module")
def pipe(models):
    return models.load_pipeline("inpaint")


def scene(dtype=np.uint8, channels: int | None = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (H, W) if channels is None else (H, W, channels)
    values = rng.random(shape, dtype=np.float32)
    if dtype == np.uint8:
        image = (values * 255).astype(np.uint8)
    elif dtype == np.uint16:
        image = (values * 65535).astype(np.uint16)
    else:
        image = values.astype(dtype)
    selection = np.zeros((H, W), np.float32)
    selection[20:50, 30:70] = 1.0
    return image, selection


def params(**kw) -> ReplaceParams:
    kw.setdefault("num_inference_steps", 3)
    return ReplaceParams(prompt="a red vase", **kw)


@pytest.mark.parametrize(
    "dtype,channels",
    [
        (np.uint8, 3),
        (np.uint8, 4),
        (np.uint16, 3),
        (np.uint16, 4),
        (np.float32, 4),
        (np.float16, 1),
        (np.uint8, 2),
    ],
)
def test_output_like_input_and_bit_exact_outside(pipe, dtype, channels):
    image, selection = scene(dtype, channels)
    out = ReplacePipeline(pipe)(image, selection, params())
    assert out.image.shape == image.shape and out.image.dtype == image.dtype
    edit = out.edit_mask > 0
    assert edit.any() and np.array_equal(out.image[~edit], image[~edit])
    assert (out.image[edit] != image[edit]).any()  # the model really painted inside
    if channels in (2, 4):  # a see-through layer: what the model painted is opaque where the edit is whole
        top = 1.0 if dtype in (np.float16, np.float32) else np.iinfo(dtype).max
        assert (out.image[out.edit_mask == 255][:, -1] == top).all()
    assert out.mask.dtype == np.uint8 and out.mask.shape == (H, W)


def test_edit_region_is_the_grown_snapped_mask(pipe):
    image, selection = scene()
    inner = np.zeros((H, W), np.float32)
    inner[30:40, 45:55] = 1.0  # the "object" the snapper finds inside the rough selection
    out = ReplacePipeline(pipe, snapper=lambda img, sel: inner)(
        image, selection, params(grow_px=3, feather_px=2)
    )
    assert np.array_equal(out.mask > 127, inner > 0)
    edit = out.edit_mask > 0
    ys, xs = np.nonzero(edit)
    assert ys.min() >= 27 and ys.max() <= 42 and xs.min() >= 42 and xs.max() <= 57  # inner grown by 3 px
    assert np.array_equal(out.image[~edit], image[~edit])  # the rest of the rough selection is kept
    assert (out.image[30:40, 45:55] != image[30:40, 45:55]).any()


def test_snapper_that_finds_nothing_falls_back_to_selection(pipe):
    image, selection = scene()
    out = ReplacePipeline(pipe, snapper=lambda img, sel: np.zeros((H, W), np.float32))(
        image, selection, params()
    )
    assert np.array_equal(out.mask > 127, selection > 0)


def test_fixed_seed_reproduces_and_other_seed_differs(pipe):
    image, selection = scene()
    rp = ReplacePipeline(pipe)
    a = rp(image, selection, params(seed=7)).image
    b = rp(image, selection, params(seed=7)).image
    c = rp(image, selection, params(seed=8)).image
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_progress_counts_every_step_and_strength_shortens_the_run(pipe):
    image, selection = scene()
    events: list[tuple[str, int, int]] = []
    ReplacePipeline(pipe)(
        image, selection, params(num_inference_steps=4), callback=lambda *e: events.append(e)
    )
    assert events == [("snap", 1, 1)] + [("denoise", i, 4) for i in range(1, 5)]
    events.clear()
    ReplacePipeline(pipe)(
        image, selection, params(num_inference_steps=10, strength=0.5), callback=lambda *e: events.append(e)
    )
    denoise = [e for e in events if e[0] == "denoise"]
    assert denoise == [("denoise", i, 5) for i in range(1, 6)]


def test_previews_at_latent_resolution(pipe):
    image, selection = scene()
    got: list[tuple] = []
    out = ReplacePipeline(pipe)(image, selection, params(previews=True), callback=lambda *e: got.append(e))
    previews = [e[3] for e in got if e[0] == "denoise"]
    w, h = out.info["model_size"]
    assert len(previews) == 3
    assert all(p.shape == (h // 8, w // 8, 3) and p.dtype == np.uint8 for p in previews)


def test_large_image_small_selection_runs_on_a_crop(pipe):
    image = np.random.default_rng(1).integers(0, 255, (600, 800, 3), dtype=np.uint8)
    selection = np.zeros((600, 800), np.float32)
    selection[300:330, 400:440] = 1.0
    out = ReplacePipeline(pipe)(image, selection, params())
    x0, y0, x1, y1 = out.info["crop_box"]
    assert (x1 - x0) < 200 and (y1 - y0) < 200
    assert max(out.info["model_size"]) == 64  # the tiny UNet's native size (8 latents x 8)
    edit = out.edit_mask > 0
    assert np.array_equal(out.image[~edit], image[~edit])


def test_faint_selection_counts_and_no_callback_with_previews(pipe):
    image, selection = scene()
    out = ReplacePipeline(pipe)(image, selection * 0.3, params(previews=True))
    assert np.array_equal(out.mask > 127, selection > 0)


def test_empty_selection_and_bad_params(pipe):
    image, _ = scene()
    with pytest.raises(EmptySelectionError):
        ReplacePipeline(pipe)(image, np.zeros((H, W), np.float32), params())
    with pytest.raises(ValueError, match="prompt"):
        ReplacePipeline(pipe)(image, scene()[1], ReplaceParams(prompt="  "))


def run_op(models, image, selection, cancel_after: int | None = None, **p):
    op = ReplaceOp()
    events: list[tuple] = []

    def cancel() -> bool:
        return cancel_after is not None and sum(e[0] == "denoise" for e in events) >= cancel_after

    def progress(stage, step, total, preview=None):
        events.append((stage, step, total))
        if stage == "denoise":
            assert preview is not None and preview.dtype == np.uint8 and preview.shape[2] == 3

    ctx = JobContext(models=models, progress_fn=progress, cancel_check=cancel)
    p.setdefault("prompt", "a red vase")
    p.setdefault("steps", 3)
    p.setdefault("snap", False)
    sel = None if selection is None else array_buffer(selection, role="selection")
    result, _, _ = run_job(Registry({"replace": type(op)}), "replace", p, array_buffer(image), sel, ctx)
    return result, events


def test_op_end_to_end_with_snapping_and_seed(models):
    image, selection = scene(np.uint16, 4)
    result, events = run_op(models, image, selection, seed=5, snap=True)
    assert result.image.shape == image.shape and result.image.dtype == np.uint16
    assert result.meta["seed"] == 5 and result.mask.dtype == np.uint8
    assert result.meta["model"] == "sd15-inpaint"
    assert ("denoise", 3, 3) in events
    again, _ = run_op(models, image, selection, seed=5, snap=True)
    assert np.array_equal(result.image, again.image)
    random_seed, _ = run_op(models, image, selection)
    assert 0 <= random_seed.meta["seed"] < 2**31


def test_op_cancel_between_steps(models, pipe):
    image, selection = scene()
    with pytest.raises(JobCancelled):
        run_op(models, image, selection, cancel_after=2, steps=10)
    scheduler = type(pipe.scheduler).__name__
    result, events = run_op(models, image, selection, steps=4)  # the shared pipeline still works
    assert [e for e in events if e[0] == "denoise"][-1] == ("denoise", 4, 4)
    assert type(pipe.scheduler).__name__ == scheduler


def test_op_cancel_counts_steps(models):
    image, selection = scene()
    seen: list[tuple] = []
    op = ReplaceOp()
    ctx = JobContext(
        models=models,
        progress_fn=lambda *e: seen.append(e[:3]),
        cancel_check=lambda: sum(e[0] == "denoise" for e in seen) >= 3,
    )
    with pytest.raises(JobCancelled):
        op.run(OpInputs(image, selection), op.spec.validate({"prompt": "x", "steps": 20, "snap": False}), ctx)
    assert [e for e in seen if e[0] == "denoise"] == [("denoise", i, 20) for i in (1, 2, 3)]


def test_op_errors(models, tmp_path):
    image, selection = scene()
    with pytest.raises(OpError) as err:
        run_op(models, image, np.zeros((H, W), np.float32))
    assert err.value.code == ErrorCode.NO_SELECTION
    with pytest.raises(OpError) as err:
        run_op(models, image, selection, prompt=" ")
    assert err.value.code == ErrorCode.BAD_PARAM
    empty = ModelManager(models_dir=tmp_path, device="cpu", search_dirs=[], hf_cache_dir=tmp_path / "hf")
    with pytest.raises(OpError) as err:
        run_op(empty, image, selection)
    assert err.value.code == ErrorCode.MODEL_MISSING
    assert "python3 install.py --models sd15-inpaint" in err.value.message
    with pytest.raises(OpError) as err:
        run_op(models, image, selection, fast=True)
    assert err.value.code == ErrorCode.MODEL_MISSING and "install.py --models lcm-lora" in err.value.message


def test_op_schema_is_json_and_cli_ready():
    import json

    spec = ReplaceOp.spec
    assert spec.needs_selection and spec.param("prompt").type == "str"
    assert {"prompt", "negative_prompt", "seed", "steps", "guidance", "strength", "fast", "model"} <= {
        p.name for p in spec.params
    }
    json.dumps(spec.to_json())
    with pytest.raises(OpError) as err:
        spec.validate({"prompt": "x", "steps": 0})
    assert err.value.code == ErrorCode.BAD_PARAM


def test_cli_replace_end_to_end(tiny_inpaint_dir, tmp_path):
    """`python -m backend replace` through the real run path, models found via LAYEREDIT_MODELS."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    image, selection = scene(np.uint8, 4)
    Image.fromarray(image).save(tmp_path / "in.png")
    Image.fromarray((selection * 255).astype(np.uint8)).save(tmp_path / "sel.png")
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "sd15-inpaint").symlink_to(tiny_inpaint_dir, target_is_directory=True)
    env = {**os.environ, "LAYEREDIT_MODELS": str(models_dir), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "backend",
        "replace",
        str(tmp_path / "in.png"),
        "--selection",
        str(tmp_path / "sel.png"),
    ]
    args = [
        "--prompt",
        "a vase",
        "--seed",
        "3",
        "--steps",
        "2",
        "--no-snap",
        "--device",
        "cpu",
        "--quiet",
    ]
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [*cmd, *args, "--out", str(tmp_path / "out.png")], cwd=root, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == image.shape
    outside = selection == 0
    outside[10:60, 20:80] = False  # the grown, feathered region and its surroundings may change
    assert np.array_equal(out[outside], image[outside])
    env["LAYEREDIT_MODELS"] = str(tmp_path / "none")
    missing = subprocess.run(
        [*cmd, *args, "--out", str(tmp_path / "x.png")], cwd=root, env=env, capture_output=True, text=True
    )
    assert missing.returncode != 0 and "python3 install.py --models sd15-inpaint" in missing.stderr

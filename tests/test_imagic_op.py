"""The ``imagic`` op through the real ModelManager, the registry and the CLI, on the tiny SD pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.imagic import stages
from backend.jobs import run_job
from backend.ops import JobCancelled, JobContext, OpError, Registry, product_registry
from backend.ops.imagic import ImagicOp
from backend.wire_images import array_buffer
from protocol.errors import ErrorCode

FAST = {"embedding_steps": 2, "finetune_steps": 2, "steps": 2}


@pytest.fixture
def env(tmp_path, monkeypatch, tiny_sd_dir):
    """A ModelManager on CPU, a private tuned-state cache dir, and the tiny model's path as the 'model' ref."""
    from backend.models import ModelManager
    from backend.ops import imagic as op_module

    torch.set_num_threads(1)
    monkeypatch.setenv("LAYEREDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(op_module, "_CACHES", {})
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    mm = ModelManager(models_dir=models_dir, device="cpu", search_dirs=[], hf_cache_dir=tmp_path / "nohf")
    return mm, str(tiny_sd_dir)


def _run(mm, model, image, selection=None, progress=None, cancel=None, **params):
    """Through the door (jobs.run_job: params, image and selection are checked there, as the server does)."""
    params = {"prompt": "a photo of a sitting dog", "model": model, **FAST, **params}
    ctx = JobContext(models=mm, progress_fn=progress, cancel_check=cancel, device="cpu")
    img = None if image is None else array_buffer(image)
    sel = None if selection is None else array_buffer(selection, role="selection")
    return run_job(Registry({"imagic": ImagicOp}), "imagic", params, img, sel, ctx)[0]


def _state(pipe) -> dict:
    return {k: v.clone() for k, v in pipe.unet.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_registered_with_a_float_list_eta_and_cheap_import():
    spec = product_registry().get("imagic").spec
    assert spec.param("eta").type == "float_list"
    assert spec.validate({"prompt": "x", "eta": 0.6})["eta"] == [0.6]
    with pytest.raises(OpError) as err:
        spec.validate({"prompt": "x", "eta": [0.5, 9.0]})
    assert err.value.code == ErrorCode.BAD_PARAM
    names = {p["name"] for p in spec.to_json()["params"]}
    assert {"prompt", "eta", "seed", "model", "finetune", "embedding_steps", "finetune_steps"} <= names


def test_several_etas_come_back_as_candidates_and_reuse_the_tuning(env):
    mm, model = env
    img = np.random.default_rng(0).integers(0, 255, (30, 44, 4), dtype=np.uint8)
    before = _state(mm.load_pipeline("text2img", model))
    stages_seen = []
    first = _run(mm, model, img, eta=[0.5, 0.7, 0.9], progress=lambda s, i, n, p=None: stages_seen.append(s))
    assert first.image.shape == img.shape and first.image.dtype == img.dtype
    assert len(first.extra_images) == 2 and first.meta["etas"] == [0.5, 0.7, 0.9]
    assert not first.meta["cache_hit"] and first.mask is None
    assert {"embedding", "finetune", "generate"} <= set(stages_seen)
    stages_seen.clear()
    slider = _run(mm, model, img, eta=[0.6], seed=9, progress=lambda s, i, n, p=None: stages_seen.append(s))
    assert slider.meta["cache_hit"] and set(stages_seen) == {"generate"}
    np.testing.assert_array_equal(slider.image[..., 3], img[..., 3])
    assert _same(before, _state(mm.load_pipeline("text2img", model)))


def test_one_seed_rule_across_ops_and_the_picked_seed_redoes_the_result(env):
    """Every op with a seed: default -1 = pick one and report it (Imagic was 0, Replace -1: two rules in one
    docker). Sending the reported seed back renders the same pixels."""
    registry = product_registry()
    specs = [registry.get(n).spec for n in registry.names()]
    seeds = {s.name: s.param("seed") for s in specs if any(p.name == "seed" for p in s.params)}
    assert {"replace", "imagic"} <= set(seeds)
    assert {(p.default, p.min) for p in seeds.values()} == {(-1, -1)}
    mm, model = env
    img = np.random.default_rng(2).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    first = _run(mm, model, img)
    seed = first.meta["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**31
    again = _run(mm, model, img, seed=seed)
    assert again.meta["cache_hit"] and again.meta["seed"] == seed
    np.testing.assert_array_equal(again.image, first.image)


def test_selection_outside_is_exact_and_mask_returned(env):
    mm, model = env
    img = np.random.default_rng(1).integers(0, 65535, (48, 64, 3), dtype=np.uint16)
    sel = np.zeros((48, 64), np.float32)
    sel[10:30, 20:44] = 1.0
    out = _run(mm, model, img, selection=sel)
    np.testing.assert_array_equal(out.image[sel == 0], img[sel == 0])
    assert out.mask.dtype == np.uint8 and out.mask[15, 30] == 255 and out.mask[0, 0] == 0


def test_cancel_raises_and_leaves_the_shared_model_intact(env):
    mm, model = env
    before = _state(mm.load_pipeline("text2img", model))
    seen = []
    with pytest.raises(JobCancelled):
        _run(
            mm,
            model,
            np.zeros((32, 32, 3), np.uint8),
            progress=lambda s, i, n, p=None: seen.append(s),
            cancel=lambda: "finetune" in seen,
        )
    assert seen[-1] == "finetune" and seen.count("finetune") == 1  # stopped within one step
    assert _same(before, _state(mm.load_pipeline("text2img", model)))


def test_out_of_memory_becomes_a_coded_error_and_the_model_is_intact(env, monkeypatch):
    mm, model = env
    before = _state(mm.load_pipeline("text2img", model))
    real = stages.finetune_unet

    def oom_after_one_step(*a, **kw):
        real(*a, **{**kw, "steps": 1})
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(stages, "finetune_unet", oom_after_one_step)
    with pytest.raises(OpError) as err:
        _run(mm, model, np.zeros((32, 32, 3), np.uint8), finetune="full")
    assert err.value.code == ErrorCode.OUT_OF_MEMORY and "unchanged" in err.value.message
    assert _same(before, _state(mm.load_pipeline("text2img", model)))


def test_bad_inputs_are_clear_errors(env):
    mm, model = env
    img = np.zeros((32, 32, 3), np.uint8)
    cases = [
        (dict(prompt="   "), None, img, ErrorCode.BAD_PARAM),
        ({}, np.zeros((32, 32), np.float32), img, ErrorCode.NO_SELECTION),
        ({}, None, None, ErrorCode.MISSING_INPUT),
        (dict(model_ref=model + "-missing"), None, img, ErrorCode.MODEL_MISSING),
    ]
    for params, sel, image, code in cases:
        ref = params.pop("model_ref", model)
        with pytest.raises(OpError) as err:
            _run(mm, ref, image, selection=sel, **params)
        assert err.value.code == code, params


def test_cli_runs_imagic_with_an_eta_list(env, tmp_path, tiny_sd_dir):
    import cv2

    from backend import cli

    mm, model = env
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), np.random.default_rng(2).integers(0, 255, (24, 40, 3), dtype=np.uint8))
    out = tmp_path / "out.png"
    argv = ["imagic", str(src), "--prompt", "a photo of a sitting dog", "--out", str(out), "--eta", "0.5,0.7"]
    argv += [
        "--model",
        model,
        "--seed",
        "3",
        "--embedding-steps",
        "2",
        "--finetune-steps",
        "2",
        "--steps",
        "2",
    ]
    code = cli.main([*argv, "--quiet"], models_factory=lambda device: mm)
    assert code == 0
    written = sorted(p.name for p in tmp_path.glob("out*.png"))
    assert written == ["out.candidate0.png", "out.png"]
    assert cv2.imread(str(out)).shape == (24, 40, 3)


def test_released_idle_parts_are_reported_in_the_meta(env):
    """A tuning run on a CPU hands idle parts' weight pages back (backend.models.residency): the result's meta
    says what each part released, as the pipeline's info does; a cache hit tunes and releases nothing."""
    mm, model = env
    img = np.random.default_rng(4).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    first = _run(mm, model, img)
    released = first.meta["released_idle"]
    assert {"text_encoder", "vae_encoder", "vae_decoder"} <= set(released)
    json.dumps(released)
    again = _run(mm, model, img, seed=first.meta["seed"], eta=[0.6])
    assert again.meta["cache_hit"] and "released_idle" not in again.meta


def test_progress_report_json_meta_is_serialisable(env):
    mm, model = env
    out = _run(mm, model, np.zeros((32, 32, 3), np.uint8))
    json.dumps(out.meta)


def test_op_module_imports_without_torch():
    import subprocess
    import sys

    code = "import sys, backend.ops.imagic; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert done.stdout.split() == ["False", "False"]


def test_sdxl_model_is_refused_clearly_before_it_is_loaded(env, monkeypatch):
    """The op asks the model manager what the model is (from its files) and refuses SDXL without loading it."""
    mm, model = env
    monkeypatch.setattr(type(mm), "architecture", lambda self, kind, ref=None: "sdxl")
    with pytest.raises(OpError) as err:
        _run(mm, model, np.zeros((32, 32, 3), np.uint8))
    assert err.value.code == ErrorCode.BAD_PARAM and "SDXL" in err.value.message
    assert mm.stats.loads == 0

"""ImagicPipeline on a tiny random-weight SD pipeline: each stage changes what it should and nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.imagic import ImagicParams, ImagicPipeline, TunedStateCache, stages
from backend.imagic.cache import TunedState

FAST = dict(embedding_steps=3, finetune_steps=3, num_inference_steps=3)


@pytest.fixture
def sd(tiny_sd_dir):
    """A freshly loaded tiny StableDiffusionPipeline (each test may try to break it)."""
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(1)
    return StableDiffusionPipeline.from_pretrained(tiny_sd_dir, local_files_only=True)


def _snapshot(pipe) -> dict:
    """Everything a job could leave changed: tensors, parameter names, grad flags, modes, attributes."""
    snap = {}
    for name in ("unet", "vae", "text_encoder"):
        m = getattr(pipe, name)
        snap[name] = {
            "tensors": {k: v.detach().clone() for k, v in m.state_dict().items()},
            "dtypes": {k: v.dtype for k, v in m.state_dict().items()},
            "grad": {n: p.requires_grad for n, p in m.named_parameters()},
            "training": {n: mod.training for n, mod in m.named_modules()},
            "modules": [type(mod).__name__ for mod in m.modules()],
            "peft": hasattr(m, "peft_config"),
        }
    snap["ckpt"] = pipe.unet.is_gradient_checkpointing
    return snap


def _assert_intact(pipe, snap) -> None:
    now = _snapshot(pipe)
    assert now["ckpt"] == snap["ckpt"]
    for name in ("unet", "vae", "text_encoder"):
        a, b = snap[name], now[name]
        assert a["tensors"].keys() == b["tensors"].keys(), f"{name}: state_dict keys changed"
        for k, v in a["tensors"].items():
            assert torch.equal(v, b["tensors"][k]), f"{name}.{k} changed"
            assert a["dtypes"][k] == b["dtypes"][k]
        assert a["grad"] == b["grad"] and a["training"] == b["training"]
        assert a["modules"] == b["modules"] and a["peft"] == b["peft"]


def _image(h=40, w=56, c=3, dtype=np.uint8, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.random((h, w, c), dtype=np.float32)
    if dtype == np.uint8:
        return (values * 255).astype(np.uint8)
    if dtype == np.uint16:
        return (values * 65535).astype(np.uint16)
    return values.astype(dtype)


def _params(**kw) -> ImagicParams:
    return ImagicParams(**{"prompt": "a photo of a sitting dog", **FAST, **kw})


class _Counter:
    """Wraps a stage function, counting real calls (the wrapped function still runs)."""

    def __init__(self, fn):
        self.fn, self.calls, self.results = fn, 0, []

    def __call__(self, *a, **kw):
        self.calls += 1
        out = self.fn(*a, **kw)
        self.results.append(out)
        return out


# ---- stage A ----------------------------------------------------------------------------------------------------
def test_stage_a_moves_only_the_embedding(sd):
    snap = _snapshot(sd)
    ip = ImagicPipeline.from_pipe(sd)
    ip._freeze()
    device = torch.device("cpu")
    rgb = _image(64, 64, dtype=np.float32)
    latents = stages.encode_image(sd.vae, rgb, device)
    e_tgt = stages.encode_text(sd.text_encoder, sd.tokenizer, "a sitting dog", device)
    e_tgt_copy = e_tgt.clone()
    e_opt, info = stages.optimise_embedding(
        sd.unet,
        sd.scheduler,
        latents,
        e_tgt,
        steps=4,
        lr=1e-2,
        generator=torch.Generator().manual_seed(0),
        precision=stages.Precision.resolve("no", device),
    )
    assert not torch.equal(e_opt, e_tgt), "stage A did not move the embedding"
    assert torch.equal(e_tgt, e_tgt_copy), "stage A changed e_tgt in place"
    assert info["optimizer"] == "adam"
    for name in ("unet", "vae", "text_encoder"):
        for k, v in getattr(sd, name).state_dict().items():
            assert torch.equal(v, snap[name]["tensors"][k]), f"stage A changed {name}.{k}"
        assert all(p.grad is None for p in getattr(sd, name).parameters())


# ---- stage B and the base-model guarantee -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["lora", "full"])
def test_base_model_bit_identical_after_a_job(sd, mode):
    snap = _snapshot(sd)
    out = ImagicPipeline.from_pipe(sd)(_image(), None, _params(finetune=mode))
    assert out.info["trainable_params"] > 0
    _assert_intact(sd, snap)


def test_stage_b_trains_the_adapter_and_keeps_e_opt(sd, monkeypatch):
    embed = _Counter(stages.optimise_embedding)
    monkeypatch.setattr(stages, "optimise_embedding", embed)
    cache = TunedStateCache(None)
    ip = ImagicPipeline.from_pipe(sd, cache=cache)
    out = ip(_image(), None, _params(finetune_lr=1e-2))
    e_opt_after_a = embed.results[0][0]
    state = cache.get(out.info["cache_key"])
    assert isinstance(state, TunedState) and state.mode == "lora"
    assert torch.equal(state.e_opt, e_opt_after_a), "stage B changed e_opt"
    lora_b = [v for k, v in state.weights.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b), "LoRA B starts at zero and should have moved"


def test_lora_changes_the_result(sd):
    ip = ImagicPipeline.from_pipe(sd)
    img = _image(dtype=np.float32)
    with_b = ip(img, None, _params(finetune_lr=5e-2)).images[0]
    without_b = ip(img, None, _params(finetune="none")).images[0]
    assert not np.array_equal(with_b, without_b)


# ---- cache --------------------------------------------------------------------------------------------------------
def test_cache_hit_skips_stages_a_and_b(sd, monkeypatch):
    embed, tune = _Counter(stages.optimise_embedding), _Counter(stages.finetune_unet)
    monkeypatch.setattr(stages, "optimise_embedding", embed)
    monkeypatch.setattr(stages, "finetune_unet", tune)
    ip = ImagicPipeline.from_pipe(sd)
    img = _image()
    first = ip(img, None, _params(etas=[0.7]))
    assert (embed.calls, tune.calls, first.cache_hit) == (1, 1, False)
    again = ip(img, None, _params(etas=[0.4, 0.9], seed=5, guidance_scale=3.0, num_inference_steps=2))
    assert (embed.calls, tune.calls, again.cache_hit) == (1, 1, True)
    assert len(again.images) == 2
    other_text = ip(img, None, _params(prompt="a photo of a cat"))
    assert (embed.calls, other_text.cache_hit) == (2, False)
    other_image = ip(_image(seed=1), None, _params())
    assert (embed.calls, other_image.cache_hit) == (3, False)
    other_tuning = ip(img, None, _params(finetune_steps=4))
    assert (embed.calls, other_tuning.cache_hit) == (4, False)


@pytest.mark.parametrize("precision", ["no", "bf16"])
@pytest.mark.parametrize("mode", ["lora", "full"])
def test_cache_hit_gives_the_same_images(sd, mode, precision):
    snap = _snapshot(sd)
    ip = ImagicPipeline.from_pipe(sd)
    img = _image()
    miss = ip(img, None, _params(finetune=mode, finetune_lr=1e-2, precision=precision))
    hit = ip(img, None, _params(finetune=mode, finetune_lr=1e-2, precision=precision))
    assert not miss.cache_hit and hit.cache_hit
    np.testing.assert_array_equal(miss.images[0], hit.images[0])
    _assert_intact(sd, snap)


def test_tuned_state_is_cached_per_precision(sd):
    """bf16 and fp32 tuning give different states: neither may be served for the other."""
    ip = ImagicPipeline.from_pipe(sd)
    img = _image()
    bf16 = ip(img, None, _params(precision="bf16"))
    fp32 = ip(img, None, _params(precision="no"))
    assert not bf16.cache_hit and not fp32.cache_hit
    assert bf16.info["cache_key"] != fp32.info["cache_key"]
    assert ip(img, None, _params(precision="bf16")).cache_hit


def test_disk_cache_survives_a_new_pipeline(sd, tmp_path, monkeypatch):
    img = _image()
    first = ImagicPipeline.from_pipe(sd, cache=TunedStateCache(tmp_path))(img, None, _params())
    assert list(tmp_path.glob("*.safetensors"))
    embed = _Counter(stages.optimise_embedding)
    monkeypatch.setattr(stages, "optimise_embedding", embed)
    fresh = ImagicPipeline.from_pipe(sd, cache=TunedStateCache(tmp_path))
    second = fresh(img, None, _params())
    assert second.cache_hit and embed.calls == 0
    np.testing.assert_array_equal(first.images[0], second.images[0])


def test_disk_cache_is_bounded_and_tolerates_corrupt_files(tmp_path):
    def state(fill: float) -> TunedState:
        e = torch.full((1, 4, 8), fill)
        return TunedState(e, e + 1, "lora", {"a.lora_A.weight": torch.full((256,), fill)}, {"r": 4})

    one = state(0.0).nbytes
    TunedStateCache(tmp_path / "probe").put("probe", state(0.0))
    file_size = (tmp_path / "probe" / "probe.safetensors").stat().st_size
    cache = TunedStateCache(tmp_path, memory_bytes=one * 2, disk_bytes=int(file_size * 2.5))
    for i in range(4):
        cache.put(f"k{i}", state(float(i)))
    assert len(cache._mem) == 2 and "k0" not in cache._mem
    assert len(list(tmp_path.glob("*.safetensors"))) <= 2
    assert cache.get("k3") is not None
    cache.clear_memory()
    loaded = TunedStateCache(tmp_path).get("k3")
    assert loaded is not None and torch.equal(loaded.e_opt, state(3.0).e_opt) and loaded.config == {"r": 4}
    (tmp_path / "bad.safetensors").write_bytes(b"not a tensor file")
    assert TunedStateCache(tmp_path).get("bad") is None
    assert not (tmp_path / "bad.safetensors").exists()


def test_use_cache_false_stores_nothing(sd):
    cache = TunedStateCache(None)
    ImagicPipeline.from_pipe(sd, cache=cache)(_image(), None, _params(use_cache=False))
    assert not cache._mem


# ---- stage C ------------------------------------------------------------------------------------------------------
def test_eta_endpoints_use_e_opt_and_e_tgt(sd):
    cache = TunedStateCache(None)
    ip = ImagicPipeline.from_pipe(sd, cache=cache)
    seen: list[torch.Tensor] = []

    def capture(module, args, kwargs):
        seen.append(kwargs["encoder_hidden_states"].detach().clone())

    out = ip(_image(), None, _params(etas=[0.0, 1.0, 0.5]))  # tune first: the hook then sees only stage C
    handle = sd.unet.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        ip(_image(), None, _params(etas=[0.0, 1.0, 0.5]))
    finally:
        handle.remove()
    state = cache.get(out.info["cache_key"])
    assert seen and not torch.equal(state.e_opt, state.e_tgt)
    for context in seen:
        cond = context[-3:]  # batch = [uncond x 3, cond x 3] ([uncond, cond x 3] at the first step)
        assert torch.equal(cond[0], state.e_opt[0])
        assert torch.equal(cond[1], state.e_tgt[0])
        assert torch.allclose(cond[2], 0.5 * (state.e_opt[0] + state.e_tgt[0]))


def test_fixed_seed_repeats_and_new_seed_differs(sd):
    img = _image(dtype=np.float32)
    a = ImagicPipeline.from_pipe(sd)(img, None, _params(seed=3, use_cache=False)).images[0]
    b = ImagicPipeline.from_pipe(sd)(img, None, _params(seed=3, use_cache=False)).images[0]
    c = ImagicPipeline.from_pipe(sd)(img, None, _params(seed=4, use_cache=False)).images[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_eta_batch_equals_each_eta_alone(sd):
    ip = ImagicPipeline.from_pipe(sd)
    img = _image(dtype=np.float32)
    etas = [0.3, 0.7, 1.0]
    batch = ip(img, None, _params(etas=etas, seed=11))
    assert len(batch.images) == 3 and batch.etas == etas
    for eta, together in zip(etas, batch.images, strict=True):
        alone = ip(img, None, _params(etas=[eta], seed=11))
        assert alone.cache_hit
        np.testing.assert_allclose(together, alone.images[0], atol=1e-4)
    assert not np.allclose(batch.images[0], batch.images[2])


# ---- cancel, errors, out of memory --------------------------------------------------------------------------------
class Stop(Exception):
    pass


@pytest.mark.parametrize("mode", ["lora", "full"])
@pytest.mark.parametrize("stage", ["embedding", "finetune", "generate"])
def test_cancel_in_any_stage_leaves_base_intact(sd, mode, stage):
    snap = _snapshot(sd)
    seen = []

    def callback(s, step, total):
        seen.append(s)
        if s == stage and step == 2:
            raise Stop()

    cache = TunedStateCache(None)
    with pytest.raises(Stop):
        ImagicPipeline.from_pipe(sd, cache=cache)(_image(), None, _params(finetune=mode), callback)
    assert seen[-1] == stage
    _assert_intact(sd, snap)
    assert bool(cache._mem) == (stage == "generate")  # tuning finished: its state is kept for the next try


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_failure_mid_finetune_leaves_base_intact(sd, monkeypatch, mode):
    snap = _snapshot(sd)
    real = stages.denoising_loss
    calls = {"n": 0}

    def failing(*a, **kw):
        calls["n"] += 1
        if calls["n"] == FAST["embedding_steps"] + 2:  # the second fine-tune step
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*a, **kw)

    monkeypatch.setattr(stages, "denoising_loss", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        ImagicPipeline.from_pipe(sd)(_image(), None, _params(finetune=mode))
    _assert_intact(sd, snap)
    monkeypatch.setattr(stages, "denoising_loss", real)
    out = ImagicPipeline.from_pipe(sd)(_image(), None, _params(finetune=mode))  # the model still works
    assert out.images[0].shape == _image().shape


def test_full_finetune_on_half_precision_model_restores_dtype(sd):
    sd.unet.to(torch.bfloat16)
    snap = _snapshot(sd)
    out = ImagicPipeline.from_pipe(sd)(_image(), None, _params(finetune="full", precision="no"))
    assert out.images[0].dtype == np.uint8
    _assert_intact(sd, snap)


# ---- images, selections -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("c", "dtype"),
    [(3, np.uint8), (4, np.uint8), (4, np.uint16), (3, np.float32), (2, np.float16), (1, np.uint8)],
)
def test_output_keeps_size_dtype_and_alpha(sd, c, dtype):
    img = _image(37, 61, c, dtype)
    out = ImagicPipeline.from_pipe(sd)(img, None, _params(etas=[0.5, 0.8]))
    assert len(out.images) == 2
    for res in out.images:
        assert res.shape == img.shape and res.dtype == img.dtype
        if c in (2, 4):
            np.testing.assert_array_equal(res[..., -1], img[..., -1])
    assert out.info["model_size"][0] == 64  # long side scaled to the tiny model's 64 px


def test_selection_keeps_outside_pixels_exact(sd):
    img = _image(80, 100, 4, np.uint16)
    sel = np.zeros((80, 100), np.float32)
    yy, xx = np.mgrid[:80, :100]
    sel[((yy - 40) / 15) ** 2 + ((xx - 45) / 20) ** 2 <= 1] = 1.0
    out = ImagicPipeline.from_pipe(sd)(img, sel, _params())
    res = out.images[0]
    assert res.shape == img.shape and res.dtype == img.dtype
    np.testing.assert_array_equal(res[sel == 0], img[sel == 0])
    assert not np.array_equal(res[sel > 0], img[sel > 0])
    x0, y0, x1, y1 = out.info["box"]
    assert (
        x0 > 0 and y0 > 0 and x1 < 100 and y1 < 80
    )  # only the region around the selection went to the model


def test_empty_selection_and_bad_params_are_clear_errors(sd):
    ip = ImagicPipeline.from_pipe(sd)
    with pytest.raises(ValueError, match="selection is empty"):
        ip(_image(), np.zeros((40, 56), np.float32), _params())
    with pytest.raises(ValueError, match="prompt"):
        ip(_image(), None, _params(prompt="  "))
    with pytest.raises(ValueError, match="finetune"):
        ip(_image(), None, _params(finetune="dreambooth"))


def test_adam_8bit_falls_back_on_cpu(sd):
    out = ImagicPipeline.from_pipe(sd)(_image(), None, _params(adam_8bit=True))
    assert out.info["embedding"]["optimizer"] == "adam"


def test_cache_dir_follows_environment_then_models_dir(tmp_path, monkeypatch):
    from backend.imagic import default_cache_dir

    monkeypatch.setenv("LAYEREDIT_CACHE", str(tmp_path / "c"))
    assert default_cache_dir(tmp_path) == tmp_path / "c" / "imagic"
    monkeypatch.delenv("LAYEREDIT_CACHE")
    assert default_cache_dir(tmp_path) == tmp_path / "cache" / "imagic"
    assert default_cache_dir(tmp_path / "missing").parts[-3:] == (".cache", "layeredit", "imagic")


def test_op_schema_defaults_match_the_pipeline_defaults():
    from backend.ops.imagic import SPEC, pipeline_params

    p = pipeline_params(SPEC.validate({"prompt": "a dog"}))
    d = ImagicParams("a dog")
    assert (p.etas, p.embedding_steps, p.finetune_steps, p.finetune, p.lr) == (
        d.etas,
        d.embedding_steps,
        d.finetune_steps,
        d.finetune,
        d.lr,
    )
    assert (p.num_inference_steps, p.guidance_scale, p.lora_rank, p.precision) == (
        d.num_inference_steps,
        d.guidance_scale,
        d.lora_rank,
        d.precision,
    )


def test_precision_auto_follows_device_and_weights(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert stages.Precision.resolve("auto", cpu, torch.float16).amp_dtype is None
    monkeypatch.setattr(stages, "cpu_bf16_native", lambda: (True, "AVX512-BF16"))
    native = stages.Precision.resolve("auto", cpu)
    assert native.amp_dtype == torch.bfloat16 and "AVX512-BF16" in native.why
    assert stages.Precision.resolve("no", cpu).amp_dtype is None  # no = fp32 whatever the CPU
    monkeypatch.setattr(stages, "cpu_bf16_native", lambda: (False, "bf16 only emulated"))
    emulated = stages.Precision.resolve("auto", cpu)
    assert emulated.amp_dtype is None and "emulated" in emulated.why
    assert stages.Precision.resolve("auto", gpu, torch.float16).amp_dtype == torch.float16
    assert stages.Precision.resolve("auto", gpu, torch.bfloat16).amp_dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert stages.Precision.resolve("auto", gpu, torch.float32).amp_dtype == torch.float16
    assert stages.Precision.resolve("bf16", cpu).name == "bf16"
    with pytest.raises(ValueError, match="precision"):
        stages.Precision.resolve("fp8", cpu)


def test_bf16_autocast_on_cpu_runs_and_keeps_base(sd):
    snap = _snapshot(sd)
    out = ImagicPipeline.from_pipe(sd)(_image(), None, _params(precision="bf16"))
    assert out.info["precision"] == "bf16" and out.images[0].dtype == np.uint8
    assert out.info["precision_why"] == "bf16 (asked)"
    _assert_intact(sd, snap)


def test_cpu_bf16_check_answers_on_this_machine():
    """The native-bf16 probe never raises and says what it found (bf16 where oneDNN and the ISA have it)."""
    native, found = stages.cpu_bf16_native()
    assert isinstance(native, bool) and found
    if native:
        assert torch.ops.mkldnn._is_mkldnn_bf16_supported()


@pytest.mark.slow
def test_bench_tiny_runs_every_configuration(tmp_path, capsys):
    """The benchmark's plumbing (subprocess per configuration, cache hits, report); no timing is asserted."""
    import json

    from bench import imagic as bench

    out = tmp_path / "r.json"
    configs = "community,lora,full,lora-fp32"
    bench.main(
        [
            "--size",
            "tiny",
            "--work",
            str(tmp_path),
            "--steps",
            "2/2/2",
            "--configs",
            configs,
            "--json",
            str(out),
        ]
    )
    data = json.loads(out.read_text())
    assert data["lora-fp32@2/2/2"]["info"]["precision"] == "fp32"
    assert data["lora@2/2/2"]["info"]["precision_why"].startswith("auto")
    for name in ("lora", "full", "lora-fp32"):
        run = data[f"{name}@2/2/2"]
        assert [r["cache_hit"] for r in run["requests"]] == [False] + [True] * 5
        assert run["batched"]["cache_hit"] and run["preview"]["cache_hit"] and len(run["plain"]) == 2
        assert run["malloc"]["malloc"] == "pinned"
    community = data["community@2/2/2"]
    assert len(community["requests"]) == 6 and "finetune" in community["requests"][0]
    text = capsys.readouterr().out
    assert "each later eta" in text and "Extrapolated edit + 5 etas at E/F/S=500/1000/50" in text

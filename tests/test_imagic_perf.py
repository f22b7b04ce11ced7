"""Issue 15: Imagic's slider speed and full-mode memory, on the tiny SD pipeline (behaviour, never timings).

- the base UNet is recorded on disk (no second copy in RAM), reused while unchanged, rewritten when changed;
- a full fine-tune is cached as a scaled fp16 delta that rebuilds the first render bit for bit;
- gradient checkpointing follows the memory estimate (auto) and says so;
- a cache hit skips the text encoder; a preview samples fewer steps; etas share one UNet call per step;
- the allocator setting of ``python -m backend`` stops the page-fault churn (counted, not timed).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.imagic import ImagicParams, ImagicPipeline, TunedStateCache, stages
from backend.imagic import pipeline_imagic as pi
from backend.imagic.guard import BaseSnapshot, ModelGuard, read_safetensors, write_safetensors
from tests.test_imagic import _assert_intact, _image, _params, _snapshot

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sd(tiny_sd_dir):
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(1)
    return StableDiffusionPipeline.from_pretrained(tiny_sd_dir, local_files_only=True)


class _Calls:
    """Counts forward calls of a module and the batch size each saw."""

    def __init__(self, module):
        self.batches: list[int] = []
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        x = args[0] if args else next(iter(kwargs.values()))
        self.batches.append(int(x.shape[0]))

    def close(self):
        self.handle.remove()


# ---- the base-model record ----------------------------------------------------------------------------------------
def test_write_safetensors_streams_a_file_safetensors_reads(tmp_path):
    from safetensors.torch import load_file

    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.randn(4).to(torch.bfloat16),
        "c": torch.arange(6, dtype=torch.int64).reshape(2, 3).t(),  # not contiguous
        "d": torch.zeros(0),
        "e": torch.randn(2, 2).half(),
    }
    write_safetensors(tmp_path / "x.safetensors", tensors, {"format": "test"})
    back = load_file(str(tmp_path / "x.safetensors"))
    assert back.keys() == tensors.keys()
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    assert not list(tmp_path.glob("*.tmp*"))
    meta, items = read_safetensors(tmp_path / "x.safetensors")  # plain reads, no mapping
    mine = dict(items)
    assert meta == {"format": "test"} and mine.keys() == tensors.keys()
    assert all(mine[k].dtype == v.dtype and torch.equal(mine[k], v) for k, v in tensors.items())
    data = (tmp_path / "x.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-8])
    with pytest.raises(ValueError, match="truncated"):
        dict(read_safetensors(tmp_path / "cut.safetensors")[1])


def test_full_finetune_keeps_no_ram_copy_and_restores_from_disk(sd, tmp_path, monkeypatch):
    snap = _snapshot(sd)
    seen = {}
    real_backup = ModelGuard.backup_weights

    def spy(self):
        where = real_backup(self)
        seen["where"], seen["ram"] = where, self._backup
        seen["path"] = self.snapshot.path if self.snapshot else None
        return where

    monkeypatch.setattr(ModelGuard, "backup_weights", spy)
    ip = ImagicPipeline.from_pipe(sd, spill_dir=tmp_path)
    out = ip(_image(), None, _params(finetune="full", finetune_lr=1e-2))
    assert seen["where"] == "disk" and seen["ram"] is None and out.info["base_record"] == "disk"
    assert seen["path"].parent == tmp_path / "base-snapshots" and seen["path"].exists()
    _assert_intact(sd, snap)


def test_base_record_is_reused_while_unchanged_and_rewritten_after_a_change(sd, tmp_path):
    unet = sd.unet
    first = BaseSnapshot.of(unet, tmp_path)
    mtime = first.path.stat().st_mtime_ns
    assert BaseSnapshot.of(unet, tmp_path) is first and first.path.stat().st_mtime_ns == mtime
    with torch.no_grad():
        next(unet.parameters()).add_(1.0)  # someone changes the base model between two jobs
    changed = _snapshot(sd)
    second = BaseSnapshot.of(unet, tmp_path)
    assert second.matches(unet)
    with ModelGuard(unet, spill_dir=tmp_path) as guard:
        guard.backup_weights()
        with torch.no_grad():
            for p in unet.parameters():
                p.mul_(0.5)
    _assert_intact(sd, changed)  # restored to the changed values, not to the first record


def test_ram_fallback_when_the_record_cannot_be_written(sd, tmp_path, monkeypatch):
    snap = _snapshot(sd)

    def no_disk(*a, **kw):
        raise OSError("No space left on device")

    monkeypatch.setattr(BaseSnapshot, "of", classmethod(lambda cls, *a, **kw: no_disk()))
    out = ImagicPipeline.from_pipe(sd)(_image(), None, _params(finetune="full", finetune_lr=1e-2))
    assert out.info["base_record"] == "ram"
    _assert_intact(sd, snap)


# ---- the compact full-fine-tune cache ---------------------------------------------------------------------------
def test_full_cache_is_an_fp16_delta_that_rebuilds_the_first_render(sd, tmp_path, caplog):
    snap = _snapshot(sd)
    cache = TunedStateCache(tmp_path / "cache", memory_bytes=0)  # disk only: the hit reads the file
    ip = ImagicPipeline.from_pipe(sd, cache=cache, spill_dir=tmp_path)
    img = _image()
    with caplog.at_level(logging.INFO, logger="layeredit.imagic"):
        miss = ip(img, None, _params(finetune="full", finetune_lr=1e-3))
    assert "fp16 delta" in miss.info["full_cache"]
    assert any("imagic cache: stored" in r.message and "GB in" in r.message for r in caplog.records)
    state = cache.get(miss.info["cache_key"])
    deltas = {k: v for k, v in state.weights.items() if k.startswith("delta.")}
    assert deltas and all(v.dtype == torch.float16 for v in deltas.values())
    unet_bytes = sum(v.numel() * v.element_size() for v in sd.unet.state_dict().values())
    assert sum(v.numel() * 2 for v in deltas.values()) <= unet_bytes // 2
    _assert_intact(sd, snap)
    hit = ImagicPipeline.from_pipe(sd, cache=cache, spill_dir=tmp_path)(
        img, None, _params(finetune="full", finetune_lr=1e-3)
    )
    assert hit.cache_hit
    np.testing.assert_array_equal(miss.images[0], hit.images[0])
    _assert_intact(sd, snap)


def test_fp16_delta_keeps_small_changes():
    """A low-lr fine-tune moves weights by ~1e-6: the per-tensor scale keeps them (plain fp16 would flush)."""
    base = torch.nn.Linear(64, 64)
    tuned = torch.nn.Linear(64, 64)
    tuned.load_state_dict(base.state_dict())
    with torch.no_grad():
        tuned.weight.add_(torch.randn_like(tuned.weight) * 1e-6)
    delta = pi.full_delta(tuned, base.state_dict().items())
    assert set(delta) == {"delta.weight", "scale.weight"}  # the bias did not change: nothing kept
    rebuilt = base.weight.detach() + pi._dequant(delta, "weight")
    true = tuned.weight.detach() - base.weight.detach()
    err = (rebuilt - tuned.weight.detach()).abs().max()
    assert err <= 1e-3 * true.abs().max() + 1e-7


def test_disk_cache_evicts_least_recently_used_to_its_cap(tmp_path, caplog):
    from backend.imagic.cache import TunedState

    def state(i: int) -> TunedState:
        e = torch.full((1, 4, 8), float(i))
        return TunedState(e, e, "full", {"delta.w": torch.zeros(4096, dtype=torch.float16)}, {})

    probe = TunedStateCache(tmp_path / "p")
    probe.put("p", state(0))
    size = probe.disk_usage()
    cache = TunedStateCache(tmp_path / "c", memory_bytes=0, disk_bytes=int(size * 2.5))
    with caplog.at_level(logging.INFO, logger="layeredit.imagic"):
        for i in range(3):
            cache.put(f"k{i}", state(i))
            if i == 1:
                assert cache.get("k0") is not None  # k0 used again: k1 is now the oldest
    assert cache.disk_usage() <= cache.disk_bytes
    assert "k0" in cache and "k2" in cache and "k1" not in cache
    assert any("evicted 1" in r.message for r in caplog.records)


# ---- gradient checkpointing: auto -------------------------------------------------------------------------------
@pytest.mark.parametrize(("free", "expect"), [(1 << 40, False), (1 << 10, True)])
def test_gradient_checkpointing_auto_follows_the_memory_estimate(sd, monkeypatch, free, expect):
    monkeypatch.setattr(pi, "free_memory_bytes", lambda device: free)
    seen = []
    real = pi.stages.finetune_unet

    def spy(unet, *a, **kw):
        seen.append(unet.is_gradient_checkpointing)
        return real(unet, *a, **kw)

    monkeypatch.setattr(pi.stages, "finetune_unet", spy)
    snap = _snapshot(sd)
    out = ImagicPipeline.from_pipe(sd)(_image(), None, _params())
    assert seen == [expect] and out.info["gradient_checkpointing"] is expect
    assert out.info["gradient_checkpointing_why"].startswith("auto: tuning needs")
    _assert_intact(sd, snap)


@pytest.mark.parametrize(("value", "expect"), [("on", True), ("off", False), (True, True), (False, False)])
def test_gradient_checkpointing_can_be_forced(sd, monkeypatch, value, expect):
    monkeypatch.setattr(pi, "free_memory_bytes", lambda device: 1 << 10 if not expect else 1 << 40)
    out = ImagicPipeline.from_pipe(sd)(_image(), None, _params(gradient_checkpointing=value))
    assert out.info["gradient_checkpointing"] is expect and "asked" in out.info["gradient_checkpointing_why"]
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        _params(gradient_checkpointing="sometimes").check()


def test_tuning_estimate_grows_with_size_and_full_mode(sd):
    """Full mode adds two fp32 Adam moments per weight plus fp32 gradients: all of them when one optimizer steps
    after the backward pass (fp16 scaler, 8-bit Adam), only the largest tensor's when each steps inside it."""
    small = pi.tuning_bytes(sd.unet, "lora", (64, 64), 8, False)
    big = pi.tuning_bytes(sd.unet, "lora", (256, 256), 8, False)
    sizes = [p.numel() for p in sd.unet.parameters()]
    in_backward = pi.tuning_bytes(sd.unet, "full", (64, 64), 8, False, in_backward=True)
    after = pi.tuning_bytes(sd.unet, "full", (64, 64), 8, False, in_backward=False)
    assert small < big
    assert in_backward - small == 8 * sum(sizes) + 4 * max(sizes)
    assert after - small == 12 * sum(sizes)
    cpu = torch.device("cpu")
    assert stages.steps_in_backward(stages.Precision.resolve("no", cpu), adam_8bit=False)
    assert stages.steps_in_backward(stages.Precision.resolve("bf16", cpu), adam_8bit=False)
    assert not stages.steps_in_backward(stages.Precision.resolve("fp16", cpu), adam_8bit=False)
    assert not stages.steps_in_backward(stages.Precision.resolve("no", cpu), adam_8bit=True)


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_full_finetune_keeps_one_gradient_alive_at_a_time(sd, precision):
    """What the estimate's in-backward count rests on: while a full fine-tune runs, no two gradients coexist."""
    unet = sd.unet
    params = list(unet.parameters())
    seen: list[int] = []

    def count(p: torch.Tensor) -> None:  # registered first, so it runs before that tensor's Adam step
        seen.append(sum(q.grad.numel() for q in params if q.grad is not None))
        assert p.grad is not None

    handles = [p.register_post_accumulate_grad_hook(count) for p in params]
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(1, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    try:
        stages.finetune_unet(
            unet,
            sd.scheduler,
            latents,
            emb,
            params,
            steps=2,
            lr=1e-4,
            generator=torch.Generator().manual_seed(2),
            precision=stages.Precision.resolve(precision, torch.device("cpu")),
        )
    finally:
        for h in handles:
            h.remove()
    assert len(seen) == 2 * len(params)
    assert max(seen) <= max(p.numel() for p in params)
    assert all(p.grad is None for p in params)


# ---- slider ---------------------------------------------------------------------------------------------------------
def test_cache_hit_skips_the_text_encoder_and_batches_the_etas(sd):
    ip = ImagicPipeline.from_pipe(sd)
    img = _image()
    ip(img, None, _params())
    text, unet = _Calls(sd.text_encoder), _Calls(sd.unet)
    try:
        out = ip(img, None, _params(etas=[0.5, 0.6, 0.8, 0.9, 1.0], num_inference_steps=3))
    finally:
        text.close()
        unet.close()
    assert out.cache_hit and len(out.images) == 5
    assert text.batches == []  # e_tgt, e_opt and the empty prompt all come from the cache
    # one UNet call per step for all 5 etas (x2 for guidance); the first step shares one unconditional half
    assert unet.batches == [6, 10, 10]


def test_preview_samples_few_steps_from_the_same_tuning(sd):
    ip = ImagicPipeline.from_pipe(sd)
    img = _image(dtype=np.float32)
    full = ip(img, None, _params(num_inference_steps=20, etas=[0.7]))
    unet = _Calls(sd.unet)
    try:
        draft = ip(img, None, _params(num_inference_steps=20, etas=[0.7], preview=True))
    finally:
        unet.close()
    assert draft.cache_hit and len(unet.batches) == pi.PREVIEW_STEPS
    assert draft.info["preview"] == f"ddim, {pi.PREVIEW_STEPS} steps"
    assert draft.images[0].shape == full.images[0].shape and not np.array_equal(
        draft.images[0], full.images[0]
    )
    again = ip(img, None, _params(num_inference_steps=20, etas=[0.7]))
    np.testing.assert_array_equal(again.images[0], full.images[0])  # the release render is the full one


def test_op_preview_and_checkpointing_params_reach_the_pipeline():
    from backend.ops.imagic import SPEC, pipeline_params

    p = pipeline_params(SPEC.validate({"prompt": "a dog", "preview": True, "gradient_checkpointing": "off"}))
    assert p.preview is True and p.checkpointing == "off"
    d = pipeline_params(SPEC.validate({"prompt": "a dog"}))
    assert (
        d.preview is ImagicParams("a dog").preview and d.checkpointing == ImagicParams("a dog").checkpointing
    )


# ---- allocator ----------------------------------------------------------------------------------------------------
_CHURN = """
import resource, sys, json
import numpy as np
from backend import malloc
state = malloc.configure()
faults = []
for i in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(48 << 18, dtype=np.float32)  # 48 MiB, above glibc's default mmap threshold
    del a
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"state": state, "faults": faults[4:]}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_backend_allocator_setting_stops_refaulting_big_buffers():
    """The same 48 MiB buffer allocated 12 times: with glibc's defaults every round re-faults its pages
    (mmap + munmap); with the setting ``python -m backend`` applies, the pages are reused."""

    def run(env_extra: dict) -> dict:
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env_extra}
        done = subprocess.run(
            [sys.executable, "-c", _CHURN], capture_output=True, text=True, env=env, cwd=ROOT, check=True
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    tuned, default = run({}), run({"LAYEREDIT_MALLOC": "off"})
    if tuned["state"]["malloc"] == "not glibc: unchanged":
        pytest.skip("not glibc")
    assert tuned["state"]["malloc"] == "pinned"
    huge_pages = (48 << 20) // (
        2 << 20
    )  # numpy asks for transparent huge pages: one fault per 2 MiB at least
    assert min(default["faults"]) >= huge_pages  # each round faults the whole buffer in again
    assert max(tuned["faults"]) <= 2  # reused: no new faults


def test_backend_entry_point_configures_the_allocator():
    src = (ROOT / "backend" / "__main__.py").read_text()
    assert src.index("malloc.configure()") < src.index("from backend.cli import main")


# ---- the adapter while sampling -----------------------------------------------------------------------------------
def test_adapter_hooks_compute_what_peft_computes_and_leave_the_unet_untouched(sd):
    from backend.imagic.guard import add_lora, lora_config, lora_weights, remove_lora

    before = {n: p for n, p in sd.unet.named_parameters()}
    config = lora_config(4)
    add_lora(sd.unet, config)
    with torch.no_grad():
        for n, p in sd.unet.named_parameters():
            if "lora_B" in n:
                p.normal_()
    weights = lora_weights(sd.unet)
    x = torch.randn(1, 4, 8, 8)
    ctx = torch.randn(1, 77, sd.unet.config.cross_attention_dim)
    with torch.no_grad():
        wrapped = sd.unet(x, 10, encoder_hidden_states=ctx).sample
    remove_lora(sd.unet)
    del sd.unet.peft_config
    snap = _snapshot(sd)  # peft's injection above froze the base: the guard must keep what it finds
    with ModelGuard(sd.unet) as guard:
        assert guard.attach_lora(config, weights) == len([k for k in weights if "lora_A" in k])
        with torch.no_grad():
            hooked = sd.unet(x, 10, encoder_hidden_states=ctx).sample
        assert not any("lora" in n for n, _ in sd.unet.named_parameters())  # plain layers, no peft
    with torch.no_grad():
        plain = sd.unet(x, 10, encoder_hidden_states=ctx).sample
    adapter_effect = (wrapped - plain).abs().max()
    assert adapter_effect > 1e-2
    assert (hooked - wrapped).abs().max() < 1e-3 * adapter_effect  # the same function
    assert all(p is before[n] for n, p in sd.unet.named_parameters())
    assert not any(m._forward_hooks for m in sd.unet.modules())  # hooks gone
    _assert_intact(sd, snap)


def test_low_rank_hook_on_a_conv_equals_the_merged_conv():
    conv = torch.nn.Conv2d(6, 5, 3, padding=1)
    a, b = torch.randn(2, 6, 3, 3), torch.randn(5, 2, 1, 1)
    merged = torch.nn.Conv2d(6, 5, 3, padding=1)
    with torch.no_grad():
        merged.weight.copy_(conv.weight + 0.5 * (b.flatten(1) @ a.flatten(1)).reshape(conv.weight.shape))
        merged.bias.copy_(conv.bias)
    unet = torch.nn.Sequential(conv)
    x = torch.randn(1, 6, 7, 7)
    with ModelGuard(unet) as guard, torch.no_grad():
        assert guard.attach_deltas([("0", a, b, 0.5), ("missing", a, b, 1.0)]) == 1
        torch.testing.assert_close(unet(x), merged(x), rtol=1e-4, atol=1e-4)
    assert not conv._forward_hooks


# ---- the benchmark's community replica --------------------------------------------------------------------------
def test_community_replica_generates_what_diffusers_generates(sd):
    """With nothing trained and alpha 1 the community call is a plain guided DDIM generation from the prompt:
    the replica must give diffusers' own StableDiffusionPipeline output for the same generator."""
    from bench.community_imagic import CommunityImagicReplica

    replica = CommunityImagicReplica(sd)
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    replica.train(
        "a photo of a sitting dog",
        image,
        text_embedding_optimization_steps=0,
        model_fine_tuning_optimization_steps=0,
    )
    sd.unet.eval()
    ours = replica(
        alpha=1.0, height=64, width=64, num_inference_steps=3, generator=torch.Generator().manual_seed(5)
    )
    ref = sd(
        "a photo of a sitting dog",
        height=64,
        width=64,
        num_inference_steps=3,
        guidance_scale=7.5,
        generator=torch.Generator().manual_seed(5),
        output_type="np",
    ).images[0]
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_community_replica_trains_as_published(sd):
    """Stage A moves only the embedding; stage B moves every UNet weight and leaves the UNet in train mode;
    the noise comes from the global RNG (same seed, same losses)."""
    from bench.community_imagic import CommunityImagicReplica

    image = torch.rand(1, 3, 64, 64) * 2 - 1
    before = {k: v.clone() for k, v in sd.unet.state_dict().items()}
    losses = []
    for _ in range(2):
        sd.unet.load_state_dict(before)
        torch.manual_seed(0)
        replica = CommunityImagicReplica(sd)
        replica.train(
            "a dog",
            image,
            generator=torch.Generator().manual_seed(0),
            text_embedding_optimization_steps=2,
            model_fine_tuning_optimization_steps=2,
            diffusion_model_learning_rate=1e-3,
        )
        losses.append(replica.losses)
    assert losses[0] == losses[1] and len(losses[0]) == 4
    assert not torch.equal(replica.text_embeddings, replica.text_embeddings_orig)
    after = sd.unet.state_dict()
    assert sum(not torch.equal(before[k], after[k]) for k in before) > 0.9 * len(before)
    assert sd.unet.training and all(p.requires_grad for p in sd.unet.parameters())


def test_preview_with_lcm_lora_folds_it_in_for_the_draft_only(sd, tiny_sd_dir, tmp_path):
    from tests.test_replace_fast import save_tiny_lora

    lcm = save_tiny_lora(tiny_sd_dir, tmp_path / "lcm-lora")
    snap = _snapshot(sd)
    ip = ImagicPipeline.from_pipe(sd, lcm_lora=lcm)
    img = _image(dtype=np.float32)
    full = ip(img, None, _params(num_inference_steps=6, etas=[0.7, 0.9]))
    deltas = pi.lcm_deltas(lcm)
    assert deltas and all(scale == 1.0 for *_, scale in deltas)
    unet = _Calls(sd.unet)
    try:
        draft = ip(img, None, _params(num_inference_steps=6, etas=[0.7, 0.9], preview=True))
    finally:
        unet.close()
    assert draft.cache_hit and draft.info["preview"] == f"lcm-lora, 4 steps, {len(deltas)} layers"
    assert unet.batches == [2] * pi.LCM_PREVIEW_STEPS  # guidance 1: no unconditional half, both etas batched
    assert not np.array_equal(draft.images[0], full.images[0])
    _assert_intact(sd, snap)
    again = ip(img, None, _params(num_inference_steps=6, etas=[0.7, 0.9]))
    np.testing.assert_array_equal(again.images[1], full.images[1])  # the LCM layers were taken out again


def test_guidance_one_equals_the_conditional_prediction(sd):
    """Skipping the unconditional half at guidance 1 is exact maths, not an approximation."""
    ip = ImagicPipeline.from_pipe(sd)
    img = _image(dtype=np.float32)
    ip(img, None, _params())
    calls = _Calls(sd.unet)
    try:
        out = ip(img, None, _params(guidance_scale=1.0, etas=[0.3, 0.6, 0.9], num_inference_steps=2))
    finally:
        calls.close()
    assert calls.batches == [3, 3] and len(out.images) == 3


def test_op_uses_an_installed_lcm_lora_for_previews_only(monkeypatch, tmp_path):
    from backend.ops import imagic as op

    class Models:
        def lora_file(self):
            return tmp_path / "lcm.safetensors"

    class NoModels:
        def lora_file(self):
            raise RuntimeError("model_missing")

    assert op._lcm_lora(Models()) == tmp_path / "lcm.safetensors"
    assert op._lcm_lora(NoModels()) is None


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_fp16_weights_with_fp16_autocast_tune_and_restore(sd, mode):
    """What a GPU runs by default (fp16 weights, fp16 autocast with a GradScaler), here on the CPU: the LoRA
    adapter must train in fp32 (the scaler refuses fp16 gradients), the base must come back fp16 and exact."""
    sd.unet.to(torch.float16)
    snap = _snapshot(sd)
    out = ImagicPipeline.from_pipe(sd)(_image(), None, _params(finetune=mode, precision="fp16"))
    assert out.info["precision"] == "fp16" and np.isfinite(out.images[0].astype(np.float32)).all()
    assert out.info["finetune_stats"]["last_loss"] is not None
    _assert_intact(sd, snap)


# ---- sampling fast paths (issue 15: batched etas) -------------------------------------------------------------------
def _generate(sd, etas, fast=True, monkeypatch=None, steps=4, guidance=7.5):
    from backend.imagic import stages

    if not fast:
        monkeypatch.setattr(
            stages, "_fast_sampling", lambda unet, derived=None: __import__("contextlib").nullcontext()
        )
    g = torch.Generator().manual_seed(5)
    e_tgt = torch.randn(1, 77, sd.text_encoder.config.hidden_size, generator=g)
    e_opt = e_tgt + 0.3 * torch.randn(e_tgt.shape, generator=g)
    uncond = torch.randn(e_tgt.shape, generator=g)
    out = stages.generate(
        sd.unet.eval(),
        sd.vae,
        sd.scheduler.config,
        e_tgt,
        e_opt,
        uncond,
        etas,
        latent_hw=(8, 8),
        steps=steps,
        guidance=guidance,
        seed=3,
        precision=stages.Precision.resolve("no", torch.device("cpu")),
    )
    if not fast:
        monkeypatch.undo()
    return out


def test_fast_sampling_paths_give_what_the_plain_layers_give(sd, monkeypatch):
    """Cached context projections and the shared first unconditional prediction change the arithmetic's order
    at most: same images as the plain layers within 1e-5 (of [0, 1]), batched or alone,
    and every layer is back in place afterwards."""
    from backend.imagic import stages

    before = dict(sd.unet.named_modules())
    state = {k: v.clone() for k, v in sd.unet.state_dict().items()}
    etas = [0.3, 0.7, 1.0]
    fast = _generate(sd, etas)
    plain = _generate(sd, etas, fast=False, monkeypatch=monkeypatch)
    assert stages._fast_sampling is not None
    for a, b in zip(fast, plain, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    alone = _generate(sd, [0.7], fast=False, monkeypatch=monkeypatch)
    np.testing.assert_allclose(fast[1], alone[0], atol=1e-4)
    assert not np.allclose(fast[0], fast[2], atol=1e-3)
    after = dict(sd.unet.named_modules())
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert all(torch.equal(v, state[k]) for k, v in sd.unet.state_dict().items())


def test_fast_sampling_projects_each_context_once(sd):
    """The cross-attention key/value layers run once per run on the distinct context rows, not once per step."""
    from diffusers.models.attention_processor import Attention

    cross = [m for m in sd.unet.modules() if isinstance(m, Attention) and m.is_cross_attention]
    assert cross
    k_calls, v_calls = _Calls(cross[0].to_k), _Calls(cross[-1].to_v)
    try:
        _generate(sd, [0.3, 0.7, 1.0], steps=5)
    finally:
        k_calls.close()
        v_calls.close()
    # [uncond, 3 cond] once; the later steps' [3 uncond, 3 cond] rows are picked from its projection
    assert k_calls.batches == v_calls.batches == [4]


def test_adam_step_in_backward_equals_one_adam_and_frees_each_gradient():
    """Stage B's optimizer steps each tensor inside the backward pass (a full fine-tune never holds every
    gradient at once): the weights come out bit-identical to one torch Adam over all of them."""
    from backend.imagic import stages

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))

    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    ours, ref = model(), model()
    live: list[int] = []

    def loss_of(m):
        def loss():
            if m is ours:  # gradients alive when a new forward pass starts (none: all freed in the backward)
                live.append(sum(p.grad is not None for p in m.parameters()))
            return (m(x) ** 2).mean()

        return loss

    info = stages.train_steps(
        "finetune",
        list(ours.parameters()),
        loss_of(ours),
        4,
        1e-2,
        stages.Precision.resolve("no", torch.device("cpu")),
        lambda *a: None,
    )
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    for _ in range(4):
        loss_of(ref)().backward()
        opt.step()
        opt.zero_grad()
    assert info["optimizer"] == "adam (step in backward)" and live == [0, 0, 0, 0]
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(a, b)
    assert all(p.grad is None for p in ours.parameters())


# ---- bf16 on a CPU -------------------------------------------------------------------------------------------------
def _embedding_grad(unet, recast: bool) -> torch.Tensor:
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(1, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    emb.requires_grad_(True)
    wrap = (
        stages.recast_frozen_weights(unet)
        if recast
        else torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)
    )
    with torch.autocast("cpu", dtype=torch.bfloat16), wrap:
        pred = unet(latents, torch.tensor([500]), encoder_hidden_states=emb).sample
    torch.nn.functional.mse_loss(pred.float(), latents).backward()
    return emb.grad


def test_recast_weights_give_autocasts_gradient_and_put_the_weights_back(sd):
    """bf16 training that recasts frozen weights for the backward pass (instead of keeping autocast's copy:
    1.6 GiB on SD-1.5) computes the very same gradient, and every layer keeps its own fp32 Parameter."""
    unet = sd.unet.requires_grad_(False)
    before = {n: p for n, p in unet.named_parameters()}
    snap = {n: p.detach().clone() for n, p in before.items()}
    plain = _embedding_grad(unet, recast=False)
    recast = _embedding_grad(unet, recast=True)
    assert plain.abs().max() > 0
    torch.testing.assert_close(recast, plain, rtol=0, atol=0)
    for n, p in unet.named_parameters():
        assert p is before[n] and p.dtype == torch.float32 and torch.equal(p, snap[n])


def test_bf16_training_on_a_cpu_recasts_and_fp32_does_not(sd):
    cpu, x, ctx = torch.device("cpu"), torch.zeros(1, 4, 8, 8), torch.zeros(1, 77, 32)
    bf16, _ = stages.training_forward(sd.unet, stages.Precision.resolve("bf16", cpu), x, ctx, graphs=True)
    fp32, _ = stages.training_forward(sd.unet, stages.Precision.resolve("no", cpu), x, ctx, graphs=True)
    assert isinstance(bf16, stages._Recast) and not isinstance(fp32, stages._Recast)


def test_recast_weights_restore_a_layer_whose_forward_raised(sd):
    unet = sd.unet.requires_grad_(False)
    conv = unet.conv_in
    weight = conv.weight

    def boom(module, args, output):
        raise RuntimeError("boom")

    h = conv.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"), stages.recast_frozen_weights(unet):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                unet(torch.zeros(1, 4, 8, 8), torch.tensor([1]), encoder_hidden_states=torch.zeros(1, 77, 32))
    finally:
        h.remove()
    assert conv.weight is weight and conv.weight.dtype == torch.float32

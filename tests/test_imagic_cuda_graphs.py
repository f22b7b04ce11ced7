"""CUDA graphs for Imagic's UNet calls: replayed results equal the eager ones, and off a GPU (or when refused)
the eager path runs and says so. The CUDA tests run where a GPU is (the lead's device runs); CPU tests always."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.imagic import ImagicParams, ImagicPipeline, TunedStateCache, cuda_graphs

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
FAST = dict(embedding_steps=3, finetune_steps=3, num_inference_steps=4)


@pytest.fixture
def sd(tiny_sd_dir):
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(1)
    return StableDiffusionPipeline.from_pretrained(tiny_sd_dir, local_files_only=True)


def _inputs(unet, batch: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator("cpu").manual_seed(0)
    x = torch.randn(batch, unet.config.in_channels, 8, 8, generator=g).to(device)
    ctx = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g).to(device)
    return x, torch.tensor(500, device=device), ctx


def test_off_a_gpu_sampling_runs_eagerly_and_says_why(sd):
    unet = sd.unet.requires_grad_(False)
    forward = cuda_graphs.SamplingForward(unet, None, torch.float32, torch.device("cpu"))
    x, t, ctx = _inputs(unet, 2, "cpu")
    outs = [forward(x, t, ctx) for _ in range(3)]
    with torch.no_grad():
        expected = unet(x, t, encoder_hidden_states=ctx).sample.float()
    assert forward.status == "eager (off: cpu device)"
    assert all(torch.equal(o, expected) for o in outs)


def test_a_refused_capture_falls_back_to_the_eager_result_and_says_so(sd, monkeypatch):
    """Forced on where capture cannot work (a CPU): one call is eager with nothing captured, the second tries to
    capture, fails, and still returns the eager prediction; the status says why; later calls stay eager."""
    unet = sd.unet.requires_grad_(False)
    monkeypatch.setattr(cuda_graphs, "graphs_wanted", lambda device: (True, "on"))
    forward = cuda_graphs.SamplingForward(unet, None, torch.float32, torch.device("cpu"))
    x, t, ctx = _inputs(unet, 2, "cpu")
    with torch.no_grad():
        expected = unet(x, t, encoder_hidden_states=ctx).sample.float()
    assert torch.equal(forward(x, t, ctx), expected)
    assert forward.status == "eager (no input shape came twice: nothing to replay)"
    assert torch.equal(forward(x, t, ctx), expected)
    assert forward.status.startswith("eager (capture failed: ")
    assert torch.equal(forward(x, t, ctx), expected) and not forward._graphs


def test_the_switch_turns_graphs_off(monkeypatch):
    monkeypatch.setenv("LAYEREDIT_CUDA_GRAPHS", "0")
    assert cuda_graphs.graphs_wanted(torch.device("cuda")) == (False, "off: LAYEREDIT_CUDA_GRAPHS=0")
    monkeypatch.delenv("LAYEREDIT_CUDA_GRAPHS")
    assert cuda_graphs.graphs_wanted(torch.device("cuda")) == (True, "on")
    assert cuda_graphs.graphs_wanted(torch.device("cpu"))[0] is False


def test_an_imagic_request_on_a_cpu_reports_eager_unet_calls(sd, tmp_path):
    engine = ImagicPipeline.from_pipe(sd, cache=TunedStateCache(tmp_path))
    image = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    out = engine(image, None, ImagicParams("a dog", etas=[0.7], resolution=64, **FAST))
    assert out.info["embedding"]["unet_calls"].startswith("eager (off: cpu")
    assert out.info["finetune_stats"]["unet_calls"].startswith("eager (off: cpu")
    assert out.info["sampling_unet_calls"] == "eager (off: cpu device)"
    assert isinstance(out.info["embedding"]["first_loss"], float)


@cuda
def test_graph_replay_equals_the_eager_forward(sd):
    unet = sd.unet.to("cuda").requires_grad_(False)
    forward = cuda_graphs.SamplingForward(unet, None, torch.float32, torch.device("cuda"))
    x, t, ctx = _inputs(unet, 2, "cuda")
    first = forward(x, t, ctx).clone()  # eager (first sighting)
    for step in range(3):  # captured at the second call, replayed after
        x2 = x + 0.1 * step
        got = forward(x2, t - 10 * step, ctx).clone()
        with torch.no_grad():
            want = unet(x2, t - 10 * step, encoder_hidden_states=ctx).sample.float()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert forward.status == "graphs" and len(forward._graphs) == 1
    torch.testing.assert_close(first, forward._eager(x, t, ctx))


@cuda
def test_graphed_training_forward_gives_the_eager_gradients(sd):
    unet = sd.unet.to("cuda").requires_grad_(False)
    x, t, ctx = _inputs(unet, 1, "cuda")
    t = t.reshape(1)
    e = torch.nn.Parameter(ctx.clone())
    graphed, status = cuda_graphs.graphed_training_forward(unet, None, torch.float32, x, e)
    assert status == "graphs"
    eager = cuda_graphs.UNetCall(unet, None, torch.float32)
    for step in range(2):
        xs = x * (1 + step)
        grads = []
        for fn in (graphed, eager):
            e.grad = None
            fn(xs, t, e).pow(2).mean().backward()
            grads.append(e.grad.clone())
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@cuda
def test_an_imagic_request_on_a_gpu_uses_graphs_and_a_cached_eta_equals_the_first_render(sd, tmp_path):
    sd = sd.to("cuda", torch.float16)
    engine = ImagicPipeline.from_pipe(sd, device=torch.device("cuda"), cache=TunedStateCache(tmp_path))
    image = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    params = dict(resolution=64, **FAST)
    first = engine(image, None, ImagicParams("a dog", etas=[0.7], **params))
    assert first.info["embedding"]["unet_calls"] == "graphs"
    assert first.info["finetune_stats"]["unet_calls"] == "graphs"
    assert first.info["sampling_unet_calls"] == "graphs"
    again = engine(image, None, ImagicParams("a dog", etas=[0.7], **params))
    assert again.cache_hit
    np.testing.assert_array_equal(np.asarray(first.images[0]), np.asarray(again.images[0]))
    batched = engine(image, None, ImagicParams("a dog", etas=[0.5, 0.7], **params))
    np.testing.assert_allclose(np.asarray(batched.images[1]), np.asarray(first.images[0]), atol=2 / 255)

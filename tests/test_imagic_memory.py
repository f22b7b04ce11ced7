"""Idle model parts hand back their mapped weight pages while Imagic tunes, and come back with the same bytes.

``backend.models.residency`` drops clean file pages under a module's weights (``madvise(MADV_DONTNEED)``); the
next use faults them back in from the page cache. These tests check that it releases what it says, never a page
the process wrote or allocated itself, and that an Imagic request which needs a released part again gives the
same images, bit for bit, as one that kept everything resident (tiny models loaded from disk, so mapped)."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch

from backend.imagic import ImagicParams, ImagicPipeline, TunedStateCache, stages
from backend.models.residency import release_file_pages, resident_bytes, storage_ranges

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pagemap/madvise: Linux only")

FAST = dict(embedding_steps=2, finetune_steps=2, num_inference_steps=3)
CPU = torch.device("cpu")


@pytest.fixture
def sd(tiny_sd_dir):
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(1)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, local_files_only=True)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.requires_grad_(False)
    return pipe


def _mapped_or_skip(module) -> None:
    stages_touch = [p.detach().sum() for p in module.parameters()]  # fault every weight page in
    del stages_touch
    clean, _ = resident_bytes(module)
    if clean == 0:
        pytest.skip("the weights are not mapped file pages here (or /proc/self/pagemap is unreadable)")


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_release_hands_back_mapped_pages_and_the_values_come_back(sd):
    te = sd.text_encoder
    _mapped_or_skip(te)
    before = _state(te)
    first = stages.encode_text(te, sd.tokenizer, "a photo of a dog", CPU)
    clean, _ = resident_bytes(te)
    done = release_file_pages(te)
    assert done.released >= clean > 0
    assert resident_bytes(te)[0] == 0, "pages still resident after the release"
    again = stages.encode_text(te, sd.tokenizer, "a photo of a dog", CPU)  # faults them back in
    assert torch.equal(first, again)
    assert resident_bytes(te)[0] > 0
    for k, v in te.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_release_never_drops_a_written_or_an_anonymous_page(sd):
    te = sd.text_encoder
    _mapped_or_skip(te)
    weight = max(te.parameters(), key=lambda p: p.numel())  # spans many pages
    with torch.no_grad():
        weight.add_(1.0)  # copy-on-write: these pages are the process's own now
    expected = weight.detach().clone()
    done = release_file_pages(te)
    assert done.kept >= weight.numel() * weight.element_size() - 2 * 4096
    assert torch.equal(weight, expected), "a written page was dropped: the edit was lost"

    built = torch.nn.Linear(512, 512)  # built in memory: anonymous pages only
    values = built.weight.detach().clone()
    done = release_file_pages(built)
    assert done.released == 0 and "anonymous" in done.why
    assert torch.equal(built.weight, values)
    assert release_file_pages(torch.nn.Linear(2, 2).to("meta")).released == 0


def test_storage_ranges_merge_shared_storages():
    a = torch.nn.Linear(64, 64)
    b = torch.nn.Linear(64, 64)
    b.weight = a.weight  # tied: one storage, counted once
    ranges = storage_ranges([a, b])
    total = sum(hi - lo for lo, hi in ranges)
    expected = sum(t.untyped_storage().nbytes() for t in (a.weight, a.bias, b.bias))
    assert total == expected


def _run(engine, image, prompts_etas):
    out = []
    for prompt, eta in prompts_etas:
        r = engine(image, None, ImagicParams(prompt, etas=[eta], **FAST))
        out.append(r)
    return out


def test_a_second_edit_needing_the_released_parts_is_bit_identical(sd, tmp_path):
    """Edit, edit again with a new prompt (a cache miss: the text encoder, the VAE encoder and, at the end, the
    decoder are needed again after their release), then an eta change: the same images bit for bit as a
    pipeline that keeps every part resident. Fails if a released part comes back wrong."""
    _mapped_or_skip(sd.text_encoder)
    rng = np.random.default_rng(3)
    image = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    steps = [("a photo of a sitting dog", 0.7), ("a photo of a cat", 0.7), ("a photo of a cat", 0.9)]
    kept = ImagicPipeline.from_pipe(sd, cache=TunedStateCache(None), release_idle=False)
    reference = _run(kept, image, steps)
    released = ImagicPipeline.from_pipe(sd, cache=TunedStateCache(None))
    results = _run(released, image, steps)
    for ref, got in zip(reference, results, strict=True):
        assert ref.cache_hit == got.cache_hit
        assert np.array_equal(ref.images[0], got.images[0])
    assert "released_idle" not in reference[1].info
    info = results[1].info["released_idle"]
    # the second edit released pages that its own encoding had faulted back in, and the decoder's from the
    # first edit's render: each part was used again after a release
    assert info["text_encoder"] > 0 and info["vae_encoder"] > 0 and info["vae_decoder"] > 0
    assert results[1].timings["release"] >= 0
    assert "released_idle" not in results[2].info  # a cache hit tunes nothing and releases nothing


def test_weights_in_anonymous_memory_are_left_alone_and_said_so(sd):
    copied = copy.deepcopy(sd)  # the same values in the process's own memory: nothing may be released
    image = np.full((64, 64, 3), 128, np.uint8)
    r = ImagicPipeline.from_pipe(copied, cache=TunedStateCache(None))(
        image, None, ImagicParams("a dog", etas=[0.7], **FAST)
    )
    info = r.info["released_idle"]
    assert info["text_encoder"].startswith("0 (")
    ref = ImagicPipeline.from_pipe(sd, cache=TunedStateCache(None), release_idle=False)(
        image, None, ImagicParams("a dog", etas=[0.7], **FAST)
    )
    assert np.array_equal(r.images[0], ref.images[0])

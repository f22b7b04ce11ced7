"""tests/tiny_models.py, the one builder of SD-shaped random pipelines (tests and benchmarks)."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import KINDS, SD15, TINY, build_tiny_sd, sd_components, sd_pipeline


@pytest.mark.parametrize(("kind", "in_channels"), [("inpaint", 9), ("text2img", 4)])
def test_tiny_pipelines_by_kind(kind, in_channels, tmp_path):
    pipe = sd_pipeline(kind, TINY, workdir=tmp_path)
    assert type(pipe).__name__ == (
        "StableDiffusionInpaintPipeline" if kind == "inpaint" else "StableDiffusionPipeline"
    )
    assert pipe.unet.config.in_channels == in_channels and pipe.unet.config.sample_size == TINY.sample_size
    assert not pipe.unet.training and not pipe.text_encoder.training


def test_same_seed_same_weights_as_the_saved_folder(tmp_path):
    """The conftest fixtures (saved folders) and in-memory pipelines of one seed are the same model."""
    from diffusers import StableDiffusionPipeline

    saved = StableDiffusionPipeline.from_pretrained(build_tiny_sd(tmp_path / "sd"), local_files_only=True)
    fresh = sd_pipeline("text2img", TINY, seed=0, workdir=tmp_path / "w")
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(saved, name).state_dict(), getattr(fresh, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = sd_pipeline("text2img", TINY, seed=1, workdir=tmp_path / "w1")
    assert not torch.equal(other.unet.conv_in.weight, fresh.unet.conv_in.weight)


def test_sd15_shape_has_sd15_parameter_counts(tmp_path):
    """Built on the meta device (no memory, no time): the benchmarks' model has SD-1.5's real sizes."""
    with torch.device("meta"):
        parts = sd_components(SD15, 9, 0, tmp_path)
    counts = {n: sum(p.numel() for p in parts[n].parameters()) for n in ("unet", "vae", "text_encoder")}
    assert counts == {"unet": 859_535_364, "vae": 83_653_863, "text_encoder": 123_060_480}


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="inpaint"):
        sd_pipeline("depth", workdir=tmp_path)
    assert KINDS == ("inpaint", "text2img")

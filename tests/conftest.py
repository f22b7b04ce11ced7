"""Shared fixtures. Model fixtures build tiny random-weight pipelines once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never reach a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_inpaint_dir(tmp_path_factory):
    """A tiny SD-inpainting-shaped diffusers folder on disk (load it through backend.models)."""
    from tests.tiny_models import build_tiny_inpaint

    return build_tiny_inpaint(tmp_path_factory.mktemp("models") / "tiny-inpaint")


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A tiny SD text-to-image diffusers folder on disk (used by Imagic)."""
    from tests.tiny_models import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")

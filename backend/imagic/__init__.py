"""Imagic (Kawar et al. 2022): edit a real image from text alone, tuned state cached so eta changes are cheap."""

from .cache import TunedState, TunedStateCache, default_cache_dir
from .pipeline_imagic import ImagicOutput, ImagicParams, ImagicPipeline

__all__ = [
    "ImagicOutput",
    "ImagicParams",
    "ImagicPipeline",
    "TunedState",
    "TunedStateCache",
    "default_cache_dir",
]

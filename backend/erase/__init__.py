"""Erase: fill the snapped object region with background (classical fillers here; diffusion plugs in)."""

from .fillers import AutoFiller, CloneFiller, Filler, FlatFiller, OpenCVFiller, classical_fillers
from .pipeline_erase import EraseOutput, EraseParams, ErasePipeline, NoBackground, NothingToFill

__all__ = [
    "AutoFiller",
    "CloneFiller",
    "EraseOutput",
    "EraseParams",
    "ErasePipeline",
    "Filler",
    "FlatFiller",
    "NoBackground",
    "NothingToFill",
    "OpenCVFiller",
    "classical_fillers",
]

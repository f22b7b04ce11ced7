"""Erase: fill the snapped object region with background (PatchMatch and classical fillers here; learned and
diffusion fillers plug in)."""

from .fillers import CloneFiller, Filler, FlatFiller, OpenCVFiller, classical_fillers
from .patchmatch import PatchMatchFiller
from .pipeline_erase import EraseOutput, EraseParams, ErasePipeline, NoBackground, NothingToFill

__all__ = [
    "CloneFiller",
    "EraseOutput",
    "EraseParams",
    "ErasePipeline",
    "Filler",
    "FlatFiller",
    "NoBackground",
    "NothingToFill",
    "OpenCVFiller",
    "PatchMatchFiller",
    "classical_fillers",
]

"""Selection -> object mask: GrabCut and u2netp embedded (no downloads), SAM when its weights are installed."""

from .pipeline_snap import METHODS, SnapOutput, SnapParams, SnapPipeline

__all__ = ["METHODS", "SnapOutput", "SnapParams", "SnapPipeline"]

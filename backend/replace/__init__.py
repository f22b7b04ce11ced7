"""Replace: Stable Diffusion inpainting from a prompt inside the selection snapped to the object."""

from .pipeline_replace import EmptySelectionError, ReplaceOutput, ReplaceParams, ReplacePipeline

__all__ = ["EmptySelectionError", "ReplaceOutput", "ReplaceParams", "ReplacePipeline"]

"""Settings of one erase job (remove the snapped object, fill with background)."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.params import group, param

from .snap import SnapParams

DEFAULT_FILL = "auto"
FILL_METHODS = ("auto", "patchmatch", "telea", "ns", "clone", "diffusion", "lama", "migan")
FILL_HELP = (
    "Background fill: auto (a learned eraser when installed: migan before lama when it runs on a CPU, where "
    "big-lama takes ~17 s per crop and MI-GAN ~2 s; lama first on a GPU; else patchmatch), patchmatch "
    "(rebuilds the background from nearby patches: continues texture and straight edges, no download), telea or "
    "ns (smooth, fast; blur texture), clone (copies one nearby patch of real background), lama or migan (learned "
    "object-removal fills, CPU or GPU; need: python3 install.py --models lama, or migan), diffusion (Stable "
    "Diffusion inpainting; needs: python3 install.py --models sd15-inpaint). The result's meta 'fill' says which "
    "filler ran."
)


def fill_needs(methods: tuple[str, ...] = FILL_METHODS) -> tuple[tuple[str, str], ...]:
    """(fill, preset) for the fills that need a model, the one to recommend first: the learned fillers (named
    after their install presets: small, fast on a CPU), then diffusion (the default inpainting model: gigabytes,
    wants a GPU). Hosts show the install hint from this (the schema's ``needs``, in this order)."""
    from backend.models.presets import DEFAULT_PRESET, PRESETS

    learned = [(m, m) for m in methods if m in PRESETS]
    return (*learned, *((("diffusion", DEFAULT_PRESET["inpaint"]),) if "diffusion" in methods else ()))


@dataclass
class EraseParams:
    """What ErasePipeline runs. Fields with ``param`` are the erase op's wire parameters, in this order."""

    snap: SnapParams = group(SnapParams, verb="erase")
    grow: int = param(  # px: swallow the object's anti-aliased edge and shadow fringe
        6,
        help="Pixels the erased region extends past the object, to swallow its edge and shadow fringe.",
        min=0,
        max=256,
        advanced=True,
    )
    feather: int = param(  # px, inward only: soft seam, never outside the region
        2,
        help="Blend width in pixels, inside the erased region (a plainly grown one; the edge-aware region ends "
        "where the object's fringe ends and is replaced whole).",
        min=0,
        max=128,
        advanced=True,
    )
    fill: str = param(DEFAULT_FILL, help=FILL_HELP, choices=FILL_METHODS, needs=fill_needs())
    context: float = 1.0  # crop context (fraction of the region's long side): background to learn from
    max_side: int = 1536  # classical fills run on the crop shrunk to at most this long side

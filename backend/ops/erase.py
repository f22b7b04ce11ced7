"""Op ``erase``: remove the selected object, filling it with background; pixels outside stay identical.

Adapter only: validates parameters, builds the snapper (embedded GrabCut + u2netp, SAM when installed) and
the ErasePipeline with the classical fillers, and maps its failures onto stable error codes.

``fill=auto`` is decided by measurement (docs/benchmarks/erase-fill.md): a learned eraser (LaMa, MI-GAN) when
one is installed, else PatchMatch completion, which keeps texture and straight edges where Telea smears them.
The result carries two masks: the edited region (every changed pixel lies inside it; the first ``mask``
buffer, as before) and the snapped object (a second ``mask`` buffer); ``meta["masks"]`` names them.
"""

from __future__ import annotations

from typing import Any

from protocol.errors import ErrorCode

from .base import JobContext, Op, OpError, OpInputs, OpResult, OpSpec, ParamSpec
from .snap import build_snapper, require_image_and_selection, snap_params, snap_pipeline_method

FILL_METHODS = ("auto", "patchmatch", "telea", "ns", "clone", "diffusion", "lama", "migan")
FILL_HELP = (
    "Background fill: auto (a learned eraser when installed: migan before lama when it runs on a CPU, where "
    "big-lama takes ~17 s per crop and MI-GAN ~2 s; lama first on a GPU; else patchmatch, or telea where "
    "the background is a smooth gradient), patchmatch "
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


class EraseOp(Op):
    spec = OpSpec(
        name="erase",
        help="Erase the selected object and fill its place with background; pixels outside stay identical.",
        needs_selection=True,
        params=(
            *snap_params("erase"),
            ParamSpec(
                "grow",
                "int",
                6,
                "Pixels the erased region extends past the object, to swallow its edge and shadow fringe.",
                min=0,
                max=256,
                advanced=True,
            ),
            ParamSpec(
                "feather",
                "int",
                2,
                "Blend width in pixels, inside the erased region.",
                min=0,
                max=128,
                advanced=True,
            ),
            ParamSpec(
                "fill",
                "enum",
                "auto",
                FILL_HELP,
                choices=FILL_METHODS,
                needs=fill_needs(),
            ),
        ),
    )

    def run(self, inputs: OpInputs, params: dict[str, Any], ctx: JobContext) -> OpResult:
        image, selection = require_image_and_selection(inputs, "erase")
        from backend.erase import EraseParams, ErasePipeline, NoBackground, NothingToFill
        from backend.erase.fill_learned import installed_learned_fill
        from backend.imaging import mask_to_u8
        from backend.snapping import SnapParams

        snapper = build_snapper(ctx, params["snap_method"]) if params["snap"] else None
        job = EraseParams(
            snap=SnapParams(
                enabled=params["snap"],
                method=snap_pipeline_method(params["snap_method"]),
                margin=params["margin"],
            ),
            grow=params["grow"],
            feather=params["feather"],
            fill=params["fill"],
        )
        fill = params["fill"]
        if fill == "auto":  # the pipeline's auto takes the learned filler when we hand it one
            fill = installed_learned_fill(ctx.models) or "auto"
        try:
            out = ErasePipeline(snapper=snapper, fillers=model_fillers(fill, ctx))(
                image, selection, job, callback=ctx.step_callback()
            )
        except NothingToFill as exc:
            raise OpError(
                ErrorCode.NO_SELECTION, f"Nothing to erase: {exc}. Select the object first."
            ) from None
        except NoBackground as exc:
            raise OpError(
                ErrorCode.NO_SELECTION,
                f"Cannot erase: {exc}. Select just the object, leaving some background around it.",
            ) from None
        except LookupError as exc:
            raise OpError(ErrorCode.MODEL_MISSING, f"{exc}; choose another snap method.") from None
        meta = {**out.meta, "masks": ["region", "object"]}
        return OpResult(out.image, mask=mask_to_u8(out.mask), meta=meta, object_mask=mask_to_u8(out.snapped))


def model_fillers(fill: str, ctx: JobContext) -> dict[str, Any]:
    """Fillers that need a model, built only when asked for (the classical ones are always there).

    Extension point for the diffusion-inpainting erase: add its name to FILL_METHODS and return
    ``{name: filler}`` here, where ``filler`` follows ``backend.erase.Filler`` (``name``, ``target`` = the model's
    native long side, ``__call__(rgb_u8, mask_bool) -> HxWx3``); the pipeline crops, scales and composites.
    """
    from backend.erase.fill_diffusion import MODEL_FILLS, erase_model_fillers

    if fill not in MODEL_FILLS:
        return {}
    return erase_model_fillers(
        fill, ctx.model_manager(), callback=ctx.step_callback(), cancelled=lambda: ctx.cancelled
    )

"""Op ``erase``: remove the selected object, filling it with background; pixels outside stay identical.

Adapter only: builds EraseParams (backend/params/erase.py, whose fields are the schema) from the checked parameters,
the snapper (embedded GrabCut + u2netp, SAM when installed) and the ErasePipeline with the classical fillers, and maps its failures onto stable error codes.

``fill=auto`` is decided by measurement (docs/benchmarks/erase-fill.md): a learned eraser (LaMa, MI-GAN) when
one is installed, else PatchMatch completion, which keeps texture and straight edges where Telea smears them.
The result carries two masks: the edited region (every changed pixel lies inside it; the first ``mask``
buffer, as before) and the snapped object (a second ``mask`` buffer); ``meta["masks"]`` names them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backend.params.erase import FILL_HELP, FILL_METHODS, EraseParams, fill_needs
from protocol.errors import ErrorCode

from .base import JobContext, Op, OpError, OpInputs, OpResult, OpSpec
from .snap import build_snapper

__all__ = ["FILL_HELP", "FILL_METHODS", "EraseOp", "fill_needs", "model_fillers"]  # re-exported from params


class EraseOp(Op):
    spec = OpSpec.of(
        "erase",
        "Erase the selected object and fill its place with background; pixels outside stay identical.",
        EraseParams,
        needs_selection=True,
    )

    def run(self, inputs: OpInputs, params: dict[str, Any], ctx: JobContext) -> OpResult:
        from backend.erase import ErasePipeline, NoBackground, NothingToFill
        from backend.erase.fill_learned import installed_learned_fill

        job = self.spec.build(params)  # checked at the door: the image and a selection are there
        snapper = build_snapper(ctx, job.snap.method) if job.snap.enabled else None

        fill = job.fill
        if fill == "auto":  # the pipeline's auto takes the learned filler when we hand it one
            fill = installed_learned_fill(ctx.models) or "auto"
        try:
            out = ErasePipeline(snapper=snapper, fillers=model_fillers(fill, ctx))(
                inputs.image, inputs.selection, job, callback=ctx.step_callback()
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
        # the masks go out as u8 straight from their windows (no full-size float32 copy of either)
        region, snapped = out.region_window.to_u8(), out.snapped_window.to_u8()
        return OpResult(out.image, mask=region, meta=meta, object_mask=snapped)


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


# what the first erase of a ~600 px object in a 4096x4096 layer grew the heap by (bench/erase_fill.py, malloc
# pinned as ``python -m backend`` pins it: ~375 MiB); faulted in at load by ``warm_up`` (backend.malloc.prefault)
ERASE_HEAP = 384 << 20


def warm_up(cancelled: Callable[[], bool] | None = None) -> float:
    """Pay at load what the user's first erase would otherwise pay; returns the seconds taken.

    Measured on bench/erase_fill.py's 600 px object in a 4096x4096 layer, the first erase after
    ``patchmatch.warm_up`` alone was 0.3-0.6 s slower than the later ones: creating the U^2-Net session and its
    first two runs (onnxruntime plans its buffers on the first and faults ~200 MiB in on the second), OpenCV's Lab tables (built on the first RGB->Lab
    conversion, ~0.09 s), the modules erase imports on first use, and ~0.5 s of page faults while the heap grew
    to hold a 4096x4096 layer's buffers. So: the fill's numba kernels (``patchmatch.warm_up``), then one small erase end to end with the embedded snap and fill (a two-tone
    background, so the structure path runs too), then ``ERASE_HEAP`` bytes of heap faulted in and left free
    (``malloc.prefault``; only where ``python -m backend`` pinned malloc's thresholds). A model a context would bring (SAM, a learned filler) is not
    loaded here: those load with their own op. The server runs it at start (``serve --warm-up erase``, the
    default). ``cancelled`` is asked between the steps (the server stopping):
    the rest is skipped, so a stop waits for one step at most (the server joins this thread before it exits:
    leaving it inside onnxruntime's run aborted the process)."""
    import logging
    import time

    import numpy as np

    from backend import malloc
    from backend.erase.patchmatch import warm_up as warm_fill

    from .base import JobContext, OpInputs

    stop = cancelled or (lambda: False)
    t = time.perf_counter()
    warm_fill()
    size = 96
    yy, xx = np.mgrid[:size, :size]
    image = np.where((yy < size // 2)[:, :, None], (70, 110, 160), (150, 120, 80)).astype(np.uint8)
    image[(yy - 50) ** 2 + (xx - 48) ** 2 < 14**2] = (220, 40, 40)  # a disc across the horizon
    selection = ((yy - 50) ** 2 + (xx - 48) ** 2 < 20**2).astype(np.float32)
    for _ in range(2):  # onnxruntime plans its buffers on the first run and allocates them on the second
        if stop():
            return time.perf_counter() - t
        logging.getLogger("layeredit.server").debug("erase warm-up: a small erase")
        EraseOp().run(OpInputs(image, selection), EraseOp.spec.validate({"fill": "auto"}), JobContext())
    if not stop():
        malloc.prefault(ERASE_HEAP)  # last: what the warm-up itself allocates (~0.5 GiB) would use it up
    return time.perf_counter() - t

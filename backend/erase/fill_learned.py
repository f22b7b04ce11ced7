"""Learned erase fillers: LaMa and MI-GAN, object-removal networks run through onnxruntime.

Classical fills smear (Telea/NS) or paste (clone); these networks were trained to remove objects and continue
what is around them (LaMa's Fourier convolutions see the whole crop at once; MI-GAN is a small GAN built for
phones). They plug into ErasePipeline as ``Filler``s: the pipeline hands them the crop around the region
scaled to ``target`` (512, the resolution both were trained at; sides multiples of 8) and composites only
the hole back, bit-exactly outside it.

Each file has its own contract, checked when it is loaded (a file with other inputs is MODEL_BROKEN, never
fed garbage):

- ``lama`` (Carve/LaMa-ONNX ``lama_fp32.onnx``, big-lama): inputs ``image`` float32 [1,3,512,512] RGB in
  [0, 1] and ``mask`` float32 [1,1,512,512], 1 = fill; one output [1,3,512,512] RGB in [0, 255] with the known
  pixels copied from the input. Exports that return [0, 1] exist; the scale is read off the known pixels.
  Exports with dynamic height/width are fed the crop padded to multiples of 8 instead of 512x512.
- ``migan`` (andraniksargsyan/migan ``migan.onnx``, the bare MI-GAN-512-Places2 generator): one input
  float32 [1,4,512,512] = (known - 0.5, RGB in [-1, 1] times known), known = 1 outside the hole; one output
  [1,3,512,512] RGB in [-1, 1].

A crop smaller than the model's fixed 512x512 is padded by mirroring (image and hole alike), so the network
sees plausible surroundings rather than a black frame; the padding is cut off again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from protocol.errors import ErrorCode

Cancelled = Callable[[], bool] | None
LEARNED_FILLS = ("lama", "migan")  # the preference order on a GPU (``learned_fill_order``)
NATIVE_SIDE = 512  # both were trained on 512x512 crops
# crop context (fraction of the region's long side): enough scene around it, while the object keeps detail
CONTEXT = 0.5


def _broken(name: str, message: str):
    from backend.errors import OpError
    from backend.models.presets import install_command

    return OpError(
        ErrorCode.MODEL_BROKEN,
        f"The {name} model file is not the expected one: {message}. Reinstall it with: {install_command(name)}",
        {"model": name},
    )


def _dims(shape: Any) -> list[int | None]:
    """An onnxruntime shape with symbolic dimensions (strings, None) as None."""
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


@dataclass
class _Frame:
    """The spatial size a session takes: fixed (h, w) or dynamic with sides a multiple of ``multiple``."""

    fixed: tuple[int, int] | None
    multiple: int = 8

    def size_for(self, h: int, w: int) -> tuple[int, int]:
        if self.fixed is not None:
            return self.fixed
        m = self.multiple
        return -(-h // m) * m, -(-w // m) * m


class _Contract:
    """What a learned model declares about itself, as IOPaint's model classes do (name, pad rule, minimum
    size), so the filler reads it instead of guessing. What differs between exports of one model (a fixed or a
    dynamic input size) is read off the file and checked against the declaration."""

    name: ClassVar[str]
    native_side: ClassVar[int] = NATIVE_SIDE  # trained at; also the smallest crop it is fed (real context)
    pad_multiple: ClassVar[int] = 8  # the sides a dynamic export takes are multiples of this
    fixed_size: ClassVar[bool] = False  # True: it works only at native_side, whatever the export says
    frame: _Frame

    def _frame_of(self, shape: Any) -> _Frame:
        h, w = _dims(shape)[2:4]
        m = self.pad_multiple
        if h is not None and w is not None:
            if h % m or w % m:
                raise _broken(self.name, f"input size {h}x{w} is not a multiple of {m}")
            return _Frame((h, w), m)
        if self.fixed_size:
            return _Frame((self.native_side, self.native_side), m)
        return _Frame(None, m)


class _LamaIO(_Contract):
    """image [1,3,H,W] in [0,1] + mask [1,1,H,W] (1 = fill) -> RGB in [0,255] (or [0,1])."""

    name = "lama"  # its Fourier convolutions run at any size: a dynamic export is fed the crop as it is

    def __init__(self, session: Any):
        inputs = session.get_inputs()
        by_channels = {(_dims(i.shape) + [None, None])[1]: i for i in inputs if len(i.shape) == 4}
        if len(inputs) != 2 or 3 not in by_channels or 1 not in by_channels:
            got = ", ".join(f"{i.name}{list(i.shape)}" for i in inputs)
            raise _broken(self.name, f"expected inputs image[1,3,512,512] and mask[1,1,512,512], got {got}")
        for i in inputs:
            if i.type != "tensor(float)":
                raise _broken(self.name, f"input {i.name} is {i.type}, expected float32")
        self.image, self.mask = by_channels[3].name, by_channels[1].name
        self.frame = self._frame_of(by_channels[3].shape)
        _check_rgb_output(session, self.name)

    def run(self, session: Any, rgb: np.ndarray, hole: np.ndarray, cancelled: Cancelled = None) -> np.ndarray:
        x = rgb.astype(np.float32).transpose(2, 0, 1)[None] / np.float32(255)
        m = hole.astype(np.float32)[None, None]
        out = _run(session, {self.image: x * (1 - m), self.mask: m}, self.name, cancelled)
        # Carve's export returns 0..255; others return 0..1: whichever reproduces the known pixels is right
        # (a few thousand of them decide it as well as all, at a fraction of the cost)
        idx = np.flatnonzero(~hole.ravel())
        idx = idx[:: max(1, idx.size // 4096)]
        got, want = out.reshape(3, -1)[:, idx], x[0].reshape(3, -1)[:, idx]
        err255 = float(np.abs(got / 255 - want).mean())
        err1 = float(np.abs(got - want).mean())
        scale = 1.0 if err1 < err255 else 255.0
        return np.clip(out.transpose(1, 2, 0) / np.float32(scale), 0, 1)


class _MiganIO(_Contract):
    """[1,4,512,512] = (known - 0.5, RGB in [-1,1] * known) -> RGB in [-1,1]."""

    name = "migan"
    fixed_size = True  # the generator has fixed-size buffers: a dynamic export still only works at 512

    def __init__(self, session: Any):
        inputs = session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or _dims(inputs[0].shape)[1] not in (4, None):
            got = ", ".join(f"{i.name}{list(i.shape)}" for i in inputs)
            raise _broken(self.name, f"expected one input [1,4,512,512] (mask, RGB), got {got}")
        if inputs[0].type != "tensor(float)":
            raise _broken(self.name, f"input {inputs[0].name} is {inputs[0].type}, expected float32")
        self.input = inputs[0].name
        self.frame = self._frame_of(inputs[0].shape)
        _check_rgb_output(session, self.name)

    def run(self, session: Any, rgb: np.ndarray, hole: np.ndarray, cancelled: Cancelled = None) -> np.ndarray:
        known = (~hole).astype(np.float32)[None, None]
        x = rgb.astype(np.float32).transpose(2, 0, 1)[None] / np.float32(127.5) - 1
        feed = np.concatenate([known - 0.5, x * known], axis=1)
        out = _run(session, {self.input: feed}, self.name, cancelled)
        return np.clip((out.transpose(1, 2, 0) + 1) / 2, 0, 1)


def _check_rgb_output(session: Any, name: str) -> None:
    outputs = session.get_outputs()
    if not outputs or len(outputs[0].shape) != 4 or _dims(outputs[0].shape)[1] not in (3, None):
        got = ", ".join(f"{o.name}{list(o.shape)}" for o in outputs)
        raise _broken(name, f"expected an RGB output [1,3,H,W], got {got}")


def _run(session: Any, feeds: dict[str, np.ndarray], name: str, cancelled: Cancelled = None) -> np.ndarray:
    """The first output's first image, CHW float32; an onnxruntime failure is MODEL_BROKEN.

    One call of big-lama takes seconds on a CPU (tens on a slow one): with ``cancelled`` given, a watcher
    thread polls it and sets onnxruntime's terminate flag, which stops the run between two graph nodes; the
    caller then gets JobCancelled instead of waiting for the whole pass."""
    options, done = None, threading.Event()
    if cancelled is not None:
        import onnxruntime as ort

        options = ort.RunOptions()
        options.terminate = bool(cancelled())  # already cancelled: onnxruntime stops before the first node

        def watch() -> None:
            while not done.wait(0.05):
                if cancelled():
                    options.terminate = True
                    return

        threading.Thread(target=watch, name="learned-fill-cancel", daemon=True).start()
    try:
        out = session.run(None, feeds, options)[0]
    except Exception as exc:  # onnxruntime's errors share no public base class
        if cancelled is not None and cancelled():
            from backend.errors import JobCancelled

            raise JobCancelled() from None
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise _broken(name, f"running it failed ({first})") from exc
    finally:
        done.set()
    h, w = next(iter(feeds.values())).shape[2:]
    out = np.asarray(out, np.float32)
    if out.ndim != 4 or out.shape[1] != 3 or out.shape[2:] != (h, w):
        raise _broken(name, f"it returned shape {list(out.shape)} for a {h}x{w} input")
    return out[0]


_CONTRACTS: dict[str, type[_Contract]] = {c.name: c for c in (_LamaIO, _MiganIO)}


@dataclass
class LearnedFiller:
    """A ``Filler`` around one onnxruntime session of LaMa or MI-GAN (``name`` picks the contract).

    Returns the whole crop as float32 RGB in [0, 1] (the pipeline keeps only the hole). The session comes
    from ``ModelManager.load_onnx`` and is shared across jobs; this object is cheap."""

    name: str
    session: Any
    target: int | None = None  # None: the model's declared native side
    context: float = CONTEXT
    min_crop: int | None = (
        None  # None: the native side (a small object gets real surroundings, not upscaling)
    )
    cancelled: Cancelled = None  # polled during the model call (the job's cancel flag): stops it mid-pass
    io: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.name not in _CONTRACTS:
            raise ValueError(f"unknown learned fill {self.name!r}; have: {', '.join(_CONTRACTS)}")
        self.io = _CONTRACTS[self.name](self.session)
        self.target = self.io.native_side if self.target is None else self.target
        self.min_crop = self.io.native_side if self.min_crop is None else self.min_crop

    def __call__(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        hole = np.asarray(mask, bool)
        h, w = hole.shape
        fh, fw = self.io.frame.size_for(h, w)
        if h > fh or w > fw:  # bigger than a fixed-size model takes (the pipeline plans <= 512): shrink
            return self._shrunk(rgb, hole, fh, fw)
        pad = ((0, fh - h), (0, fw - w))
        big = np.pad(np.asarray(rgb, np.uint8), (*pad, (0, 0)), mode="symmetric")
        big_hole = np.pad(hole, pad, mode="symmetric")
        return self.io.run(self.session, big, big_hole, self.cancelled)[:h, :w]

    def _shrunk(self, rgb: np.ndarray, hole: np.ndarray, fh: int, fw: int) -> np.ndarray:
        from backend.imaging import resize

        h, w = hole.shape
        s = min(fh / h, fw / w)
        size = (max(1, int(w * s)), max(1, int(h * s)))
        small = self(resize(np.asarray(rgb, np.uint8), size), resize(hole, size) > 0)
        return resize(small, (w, h))


def learned_filler(name: str, models: Any, cancelled: Cancelled = None) -> LearnedFiller:
    """The ``name`` filler ("lama" or "migan") with its model loaded: MODEL_MISSING naming the install
    command when it is not installed, MODEL_BROKEN when its file is damaged or not the expected model.
    ``cancelled`` (e.g. the job's cancel flag) stops a running model call: JobCancelled."""
    return LearnedFiller(name, models.load_onnx(name), cancelled=cancelled)


def learned_fill_order(models: Any) -> tuple[str, ...]:
    """The order in which ``fill=auto`` prefers the learned fillers: MI-GAN before LaMa where the ONNX session
    runs on a CPU, LaMa first where it runs on a GPU.

    Measured on the project's 2-core CPU with the real architectures (docs/benchmarks/learned-fill.md):
    big-lama ~17 s per 512 px crop (440 GFLOPs), MI-GAN ~2.3 s (29 GFLOPs, built for CPUs). An erase that
    takes 17 s is not interactive, so on a CPU the fast model wins; on a GPU both are well under a second and
    LaMa, the better-known quality (IOPaint's default eraser), goes first. A GPU counts only when onnxruntime
    can use it (the CUDA provider), as ``ModelManager.load_onnx`` decides."""
    device = str(getattr(models, "device", "cpu") or "cpu")
    if device.startswith("cuda"):
        try:
            import onnxruntime as ort

            if "CUDAExecutionProvider" in ort.get_available_providers():
                return LEARNED_FILLS
        except ImportError:  # pragma: no cover - onnxruntime is a runtime dependency
            pass
    return tuple(reversed(LEARNED_FILLS))


def installed_learned_fill(models: Any) -> str | None:
    """The name of the learned filler that is installed, in ``learned_fill_order`` (MI-GAN before LaMa on a
    CPU, LaMa first on a GPU), or None; loads nothing.

    A model whose folder is there but broken (a download cut short) counts as installed: using it then
    raises MODEL_BROKEN with the reinstall command instead of silently filling another way."""
    from backend.errors import OpError

    if models is None:
        return None
    for name in learned_fill_order(models):
        try:
            models.onnx_file(name)
        except OpError as exc:
            if exc.code == ErrorCode.MODEL_MISSING:
                continue
            return name  # broken: say so when it is used
        return name
    return None


def installed_learned_filler(models: Any, cancelled: Cancelled = None) -> LearnedFiller | None:
    """For ``fill=auto``: the installed learned filler, loaded, or None when
    neither is installed (``learned_fill_order``). Raises MODEL_BROKEN when the installed one cannot be used."""
    name = installed_learned_fill(models)
    return None if name is None else learned_filler(name, models, cancelled)


__all__ = [
    "LEARNED_FILLS",
    "LearnedFiller",
    "installed_learned_fill",
    "installed_learned_filler",
    "learned_fill_order",
    "learned_filler",
]

"""Test-only ops and helpers for the server, protocol and CLI tests (never registered in the product).

``LAYEREDIT_REGISTRY=tests.test_server_support:registry`` makes ``python -m backend`` use these ops.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from backend.ops import JobContext, Op, OpError, OpInputs, OpResult, OpSpec, ParamSpec, Registry
from backend.server import Server, ServerConfig
from protocol.errors import ErrorCode, ProtocolError


class Echo(Op):
    """Returns the image unchanged (inverted if asked), the aligned selection as the mask, and what it saw."""

    spec = OpSpec(
        name="echo",
        help="Return the image as received (test op).",
        params=(
            ParamSpec("invert", "bool", False, "invert the colour channels"),
            ParamSpec("gains", "float_list", [1.0], "ignored list parameter", min=0.0, max=10.0),
            ParamSpec("label", "str", "", "free text echoed in meta"),
            ParamSpec("mode", "enum", "plain", "an enum", choices=("plain", "fancy")),
            ParamSpec("count", "int", 1, "an int", min=0, max=5),
        ),
    )

    def run(self, inputs: OpInputs, params: dict, ctx: JobContext) -> OpResult:
        image = inputs.image
        assert image is not None
        out = image
        if params["invert"]:
            out = image.copy()
            c = 3 if image.shape[2] >= 3 else 1
            top = np.iinfo(image.dtype).max if image.dtype.kind == "u" else 1.0
            out[:, :, :c] = top - image[:, :, :c]
        mask = None
        if inputs.selection is not None:
            mask = np.rint(inputs.selection * 255).astype(np.uint8)
        meta = {
            "shape": list(image.shape),
            "dtype": str(image.dtype),
            "first_pixel": image[0, 0].tolist(),
            "origin": list(inputs.origin),
            "params": params,
            "selection_sum": float(inputs.selection.sum()) if inputs.selection is not None else None,
        }
        return OpResult(out, mask, meta)


class Steps(Op):
    """Sleeps in steps, reporting progress and honouring cancel between steps (like a diffusion loop)."""

    spec = OpSpec(
        name="steps",
        help="Sleep in steps with progress (test op).",
        params=(
            ParamSpec("steps", "int", 5, "number of steps", min=1, max=10000),
            ParamSpec("delay", "float", 0.01, "seconds per step", min=0.0, max=10.0),
            ParamSpec("preview", "bool", False, "send a small preview with each step"),
        ),
    )

    def run(self, inputs: OpInputs, params: dict, ctx: JobContext) -> OpResult:
        for i in range(params["steps"]):
            ctx.check_cancelled()
            time.sleep(params["delay"])
            preview = np.full((4, 4, 3), i % 256, np.uint8) if params["preview"] else None
            ctx.progress("sleep", i + 1, params["steps"], preview)
        return OpResult(inputs.image, meta={"steps": params["steps"]})


class Boom(Op):
    spec = OpSpec(name="boom", help="Raise an exception (test op).", params=())

    def run(self, inputs: OpInputs, params: dict, ctx: JobContext) -> OpResult:
        raise RuntimeError("kaboom")


class Refuse(Op):
    spec = OpSpec(name="refuse", help="Raise an OpError (test op).", params=())

    def run(self, inputs: OpInputs, params: dict, ctx: JobContext) -> OpResult:
        raise OpError(ErrorCode.MODEL_MISSING, "no model; install it with: python3 install.py --models x")


class NeedsSelection(Op):
    spec = OpSpec(name="needsel", help="Needs a selection (test op).", params=(), needs_selection=True)

    def run(self, inputs: OpInputs, params: dict, ctx: JobContext) -> OpResult:
        assert inputs.selection is not None
        return OpResult(inputs.image, np.rint(inputs.selection * 255).astype(np.uint8))


class Candidates(Op):
    spec = OpSpec(name="candidates", help="Return two extra images (test op).", params=())

    def run(self, inputs: OpInputs, params: dict, ctx: JobContext) -> OpResult:
        img = inputs.image
        assert img is not None
        return OpResult(img, extra_images=[img.copy(), img.copy()], meta={"n": 2})


class BadShape(Op):
    spec = OpSpec(name="badshape", help="Return a wrongly shaped image (test op).", params=())

    def run(self, inputs: OpInputs, params: dict, ctx: JobContext) -> OpResult:
        return OpResult(np.zeros((2, 2, 4), np.float64))


def registry() -> Registry:
    reg = Registry()
    for op in (Echo, Steps, Boom, Refuse, NeedsSelection, Candidates, BadShape, MaskOnly):
        reg.register(op)
    return reg


@contextmanager
def running_server(tmp_path: Path, **config):
    """A real server on a free loopback port, in a thread, with its connection file in ``tmp_path``."""
    config.setdefault("report_models", False)
    cfg = ServerConfig(connection_file=tmp_path / "backend.json", **config)
    server = Server(cfg, registry(), models_factory=None).start()
    try:
        yield server
    finally:
        server.stop()


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except ProtocolError:  # e.g. the job has not reached the server yet
            pass
        time.sleep(0.01)
    return False


__all__ = ["registry", "running_server", "wait_until"]


class MaskOnly(Op):
    spec = OpSpec(
        name="maskonly", help="Return only a mask (test op, like snap).", params=(), needs_selection=True
    )

    def run(self, inputs: OpInputs, params: dict, ctx: JobContext) -> OpResult:
        assert inputs.selection is not None
        return OpResult(None, np.rint(255 - inputs.selection * 255).astype(np.uint8))

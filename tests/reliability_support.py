"""Test-only ops for the reliability tests (faults, load, fuzzing); never registered in the product.

``LAYEREDIT_REGISTRY=tests.reliability_support:registry`` serves them (plus the ops of test_server_support).
"""

from __future__ import annotations

import threading

import numpy as np

from backend.ops import JobContext, Op, OpInputs, OpResult, OpSpec, ParamSpec, Registry
from tests import test_server_support


class Spin(Op):
    """Burns CPU in pure Python (holds the GIL between switches), like an op with a Python-level hot loop."""

    spec = OpSpec(
        name="spin",
        help="Pure-Python CPU loop (test op).",
        params=(ParamSpec("seconds", "float", 1.0, "how long to spin", min=0.0, max=60.0),),
        needs_image=False,
    )

    def run(self, inputs: OpInputs, params: dict, ctx: JobContext) -> OpResult:
        import time

        end, n = time.perf_counter() + params["seconds"], 0
        while time.perf_counter() < end:
            for i in range(10_000):
                n += i * i % 7
        return OpResult(None, np.zeros((1, 1), np.uint8), meta={"n": n % 1000})


class Oom(Op):
    """Runs out of memory part-way, the way torch reports it (or as a plain MemoryError)."""

    spec = OpSpec(
        name="oom",
        help="Raise an out-of-memory error (test op).",
        params=(ParamSpec("kind", "enum", "torch", "which error", choices=("torch", "python")),),
    )
    weights: np.ndarray = np.arange(16, dtype=np.float32)  # the "base model": must survive the failure

    def run(self, inputs: OpInputs, params: dict, ctx: JobContext) -> OpResult:
        scratch = self.weights.copy()  # like a fine-tune working on a copy / adapter, never the base in place
        scratch += 1.0
        if params["kind"] == "torch":
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        raise MemoryError("cannot allocate 20 GiB")


class Recorder(Op):
    """Records every params dict its run() saw: validation must have happened before any op code."""

    calls: list[dict] = []
    lock = threading.Lock()
    spec = OpSpec(
        name="recorder",
        help="Record the params run() receives (test op).",
        params=(
            ParamSpec("strength", "float", 0.5, "a bounded float", min=0.0, max=1.0),
            ParamSpec("steps", "int", 10, "a bounded int", min=1, max=50),
            ParamSpec("prompt", "str", "", "free text", max_length=100),
            ParamSpec("mode", "enum", "a", "an enum", choices=("a", "b")),
            ParamSpec("flag", "bool", False, "a bool"),
            ParamSpec("etas", "float_list", [0.7], "a list", min=0.0, max=1.0, max_items=4),
        ),
        needs_image=False,
    )

    def run(self, inputs: OpInputs, params: dict, ctx: JobContext) -> OpResult:
        with self.lock:
            self.calls.append(dict(params))
        return OpResult(None, np.zeros((1, 1), np.uint8), meta={"ok": True})


def registry() -> Registry:
    reg = test_server_support.registry()
    for op in (Spin, Oom, Recorder):
        reg.register(op)
    return reg

"""What every op shares through JobContext and backend.errors: the step callback (progress + cancel), the one
out-of-memory mapping, and the model manager each op gets the same way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.errors import JobCancelled, OpError, is_out_of_memory, out_of_memory_guard
from backend.ops import JobContext, OpInputs
from protocol.errors import ErrorCode

ROOT = Path(__file__).resolve().parents[1]


def test_step_callback_reports_every_step_and_stops_at_the_first_step_after_a_cancel():
    seen: list[tuple] = []
    cancel = {"now": False}
    ctx = JobContext(progress_fn=lambda *event: seen.append(event), cancel_check=lambda: cancel["now"])
    step = ctx.step_callback()
    step("fill", 1, 3)  # pipelines without previews call it with three arguments
    preview = np.zeros((2, 2, 3), np.uint8)
    step("denoise", 2, 3, preview)  # replace's denoise loop passes a preview as a fourth
    assert seen == [("fill", 1, 3, None), ("denoise", 2, 3, preview)]
    cancel["now"] = True
    with pytest.raises(JobCancelled):
        step("denoise", 3, 3)
    assert seen[-1] == ("denoise", 3, 3, None)  # the step is still reported, then the run stops


def test_step_callback_without_a_progress_sink_still_cancels():
    step = JobContext(cancel_check=lambda: True).step_callback()
    with pytest.raises(JobCancelled):
        step("snap", 0, 1)
    JobContext().step_callback()("snap", 0, 1)  # no sink, no cancel: nothing happens


def test_model_manager_is_the_given_one_or_made_once_for_the_contexts_device():
    given = object()
    assert JobContext(models=given).model_manager() is given
    ctx = JobContext(device="cpu")
    made = ctx.model_manager()
    assert made.device == "cpu" and ctx.models is made and ctx.model_manager() is made


@pytest.mark.parametrize(
    "exc",
    [
        MemoryError("cannot allocate 20 GiB"),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"),
    ],
)
def test_out_of_memory_in_any_form_becomes_one_coded_error_with_the_advice(exc):
    with pytest.raises(OpError) as err:
        with out_of_memory_guard("Lower 'resolution'."):
            raise exc
    assert err.value.code == ErrorCode.OUT_OF_MEMORY
    assert (
        err.value.message.startswith("Lower 'resolution'. (") and str(exc).split(".")[0] in err.value.message
    )
    assert err.value.__cause__ is exc


def test_torchs_own_out_of_memory_error_is_recognised():
    torch = pytest.importorskip("torch")
    assert is_out_of_memory(torch.OutOfMemoryError("Tried to allocate 20.00 MiB"))  # no "out of memory" text


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("steps must be positive"),
        RuntimeError("expected scalar type Float"),
        JobCancelled(),
        OpError(ErrorCode.MODEL_MISSING, "The model ran out of memory once; install it again."),
    ],
)
def test_other_errors_pass_the_guard_unchanged(exc):
    with pytest.raises(type(exc)) as err:
        with out_of_memory_guard("advice"):
            raise exc
    assert err.value is exc


def test_errors_module_stays_a_leaf_without_torch():
    code = "import sys, backend.errors; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.split() == ["False"]


def test_imagic_and_replace_get_their_model_manager_the_same_way(tmp_path, monkeypatch):
    """Without a manager in the context both build one (on the context's device) and so both report the
    missing model with its stable code; yesterday Imagic refused to run at all without one."""
    from backend.ops.imagic import ImagicOp
    from backend.ops.replace import ReplaceOp

    monkeypatch.setenv("LAYEREDIT_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("LAYEREDIT_MODEL_PATHS", "")
    image = np.zeros((16, 16, 3), np.uint8)
    selection = np.ones((16, 16), np.float32)
    missing = str(tmp_path / "no-such-model")
    for op in (ImagicOp(), ReplaceOp()):
        params = op.spec.validate({"prompt": "a red vase", "model": missing})
        ctx = JobContext(device="cpu")
        with pytest.raises(OpError) as err:
            op.run(OpInputs(image, selection), params, ctx)
        assert err.value.code == ErrorCode.MODEL_MISSING, op.spec.name
        assert ctx.models is not None and ctx.models.device == "cpu"


def test_replace_maps_running_out_of_memory_to_its_advice(tiny_inpaint_dir, tmp_path, monkeypatch):
    """The guard around Replace's pipeline call: torch's OOM becomes OUT_OF_MEMORY naming what to lower."""
    torch = pytest.importorskip("torch")
    from backend.models import ModelManager
    from backend.ops.replace import ReplaceOp
    from backend.replace import ReplacePipeline

    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(ReplacePipeline, "__call__", oom)
    mm = ModelManager(models_dir=tmp_path, device="cpu", search_dirs=[], hf_cache_dir=tmp_path / "hf")
    selection = np.zeros((32, 32), np.float32)
    selection[8:24, 8:24] = 1
    params = ReplaceOp.spec.validate({"prompt": "a red vase", "model": str(tiny_inpaint_dir), "snap": False})
    with pytest.raises(OpError) as err:
        ReplaceOp().run(OpInputs(np.zeros((32, 32, 3), np.uint8), selection), params, JobContext(models=mm))
    assert err.value.code == ErrorCode.OUT_OF_MEMORY
    assert "lower 'resolution'" in err.value.message and "Tried to allocate" in err.value.message

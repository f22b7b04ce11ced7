"""A seeded Replace gives the same bytes on any thread, whatever ran on that thread before.

A CPU convolution sums in an order that depends on how many threads split it. OpenMP keeps that count per thread,
and numba's OpenMP pool sets it, on the thread that starts the pool (the first erase's fill: a CLI erase, a server
worker's), to numba's own count, not OMP_NUM_THREADS (torch's default is the physical cores). Torch reads it once
per thread, so a Replace on a thread that had erased ran on another count than one on a fresh thread: with
OMP_NUM_THREADS=1, tests/test_hostkit_region.py's host Replace differed from the CLI's in 10 pixels after an
erase test had run the CLI's erase on the main thread. Here the thread's OpenMP count is changed the way numba's
pool does it (``omp_set_num_threads`` in the library torch runs on), on threads of the test's own, so nothing
leaks into other tests.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from backend.jobs import run_job
from backend.models import ModelManager
from backend.models.device import pin_torch_threads, torch_threads
from backend.ops import JobContext, Op, OpResult, OpSpec, Registry
from backend.params import ReplaceParams
from backend.replace import ReplacePipeline
from backend.replace.pipeline_replace import inpaint

torch = pytest.importorskip("torch")


def _openmp() -> Any:
    """The OpenMP runtime torch runs on (already loaded with torch: opening it again by name returns it)."""
    for name in ("libgomp.so.1", "libomp.so", "libomp.dylib", "libiomp5.so"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    pytest.skip("torch runs on no OpenMP runtime that can be found here")


def _other_count() -> int:
    """An OpenMP thread count that is not the process's torch count."""
    return 1 if torch_threads() > 1 else 2


def _on_a_thread(fn: Callable[[], Any], change_openmp_to: int | None = None) -> Any:
    """``fn()`` on a new thread, after torch initialised there and, when asked, OpenMP's count on it changed
    behind torch's back (as numba's pool start does)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            torch.get_num_threads()  # torch reads the count once per thread: here, before the change
            if change_openmp_to is not None:
                _openmp().omp_set_num_threads(change_openmp_to)
                box["changed"] = torch.get_num_threads()
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            box["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    if change_openmp_to is not None and box["changed"] != change_openmp_to:
        pytest.skip("OpenMP's per-thread count does not reach torch here")
    return box["value"]


def test_pin_gives_a_thread_the_processs_count_after_openmp_changed_under_it():
    want, other = torch_threads(), _other_count()
    assert _on_a_thread(torch.get_num_threads) == want
    assert _on_a_thread(torch.get_num_threads, change_openmp_to=other) == other  # the trap, as it was
    assert _on_a_thread(pin_torch_threads, change_openmp_to=other) == want
    assert (
        _on_a_thread(lambda: (pin_torch_threads(), torch.get_num_threads())[1], change_openmp_to=other)
        == want
    )
    assert torch_threads() == want  # pinning set the count torch already had: the process's stays


@pytest.fixture(scope="module")
def pipe(tiny_inpaint_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("threads-models")
    (d / "sd15-inpaint").symlink_to(tiny_inpaint_dir, target_is_directory=True)
    return ModelManager(models_dir=d, device="cpu", search_dirs=[], hf_cache_dir=d / "no-hf").load_pipeline(
        "inpaint"
    )


def test_a_replace_after_openmp_changed_on_its_thread_is_the_one_on_a_fresh_thread(pipe):
    """The model call itself (no op around it: the erase's diffusion filler calls ``inpaint`` right after its
    alpha PatchMatch may have started numba's pool on the thread), and the pipeline's composited pixels. Without
    the pin 17,131 of the 18,432 model-output values differed at 1 vs 2 threads (by ~1e-5: this scene's bytes
    happened to round alike, the host test's did not)."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    selection = np.zeros((64, 96), np.float32)
    selection[16:48, 30:70] = 1
    params = ReplaceParams(prompt="a vase", seed=3, num_inference_steps=2, grow_px=8)

    def model() -> np.ndarray:
        return inpaint(pipe, image, selection, params)

    def replace() -> np.ndarray:
        return ReplacePipeline(pipe)(image, selection, params).image

    other = _other_count()
    fresh = _on_a_thread(model)
    changed = _on_a_thread(model, change_openmp_to=other)
    differ = int((changed != fresh).sum())
    assert differ == 0, f"{differ} of {fresh.size} values differ on {other} threads"
    fresh = _on_a_thread(replace)
    assert (fresh != image).any()
    assert np.array_equal(_on_a_thread(replace, change_openmp_to=other), fresh)


class _CountOp(Op):
    """Reports the torch thread count an op starts with."""

    spec = OpSpec(
        name="count-threads", help="Reports torch's thread count (test op).", params=(), needs_image=False
    )

    def run(self, inputs: Any, params: dict[str, Any], ctx: JobContext) -> OpResult:
        return OpResult(None, meta={"threads": torch.get_num_threads()})


def test_every_op_starts_on_the_processs_count_on_the_clis_and_the_servers_path():
    """``run_job`` (the CLI) and the server's workers both go through ``execute``: an Imagic or a SAM snap on a
    worker that erased before runs on the process's count too."""
    registry = Registry()
    registry.register(_CountOp)

    def count() -> int:
        return run_job(registry, "count-threads", {}, None, None, JobContext())[0].meta["threads"]

    assert _on_a_thread(count, change_openmp_to=_other_count()) == torch_threads()

"""The fill's melding vote (_vote_with_steps) runs on numba's threads: the same bytes on one thread as on
several, and safe when two completions run at once (the backend runs ops on a worker thread while its warm-up
thread may still be completing), on a thread-safe layer only (numba's workqueue aborts the process there)."""

from __future__ import annotations

import threading

import cv2
import numba
import numpy as np
import pytest

from backend.erase import patchmatch
from backend.erase.patchmatch import EMBEDDED_DEFAULTS, complete


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Stripes under blocky noise with an elliptic hole: every kernel runs (melding included), and a vote that
    summed in another order would show in the bytes."""
    h, w = 150, 200
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (190, 180, 160)
    img[((xx + 2 * yy) // 9) % 2 == 0] = (60, 80, 120)
    noise = cv2.resize(rng.integers(-30, 30, (h // 3, w // 3, 3)).astype(np.int16), (w, h))
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    hole = ((yy - h / 2) / 30) ** 2 + ((xx - w / 2) / 40) ** 2 < 1
    return img, hole


def _fill(img: np.ndarray, hole: np.ndarray) -> np.ndarray:
    return complete(img, hole, meld=EMBEDDED_DEFAULTS["meld"], seed=3)


def test_the_fill_gives_the_same_bytes_on_one_thread_and_on_two():
    if not patchmatch.PARALLEL or numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("the kernels run serially here (no thread-safe numba layer, or one CPU)")
    img, hole = _scene()
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)  # per thread: other threads keep theirs
        one = _fill(img, hole)
        numba.set_num_threads(2)
        two = _fill(img, hole)
    finally:
        numba.set_num_threads(before)
    assert one.tobytes() == two.tobytes()
    assert (one[~hole] == img[~hole]).all() and (one[hole] != img[hole]).any()


def test_two_completions_at_once_give_the_bytes_of_one_alone():
    img, hole = _scene()
    alone = _fill(img, hole)
    start = threading.Barrier(2)
    results: list[np.ndarray | None] = [None, None]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait(30)
            for _ in range(2):  # overlapping for most of both runs
                results[i] = _fill(img, hole)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert all(r is not None and r.tobytes() == alone.tobytes() for r in results)
    if patchmatch.PARALLEL:
        assert numba.threading_layer() in ("tbb", "omp"), numba.threading_layer()


def test_without_a_thread_safe_layer_the_kernels_stay_serial(monkeypatch):
    import importlib

    real = importlib.import_module

    def no_pools(name: str, *args):
        if name in ("numba.np.ufunc.tbbpool", "numba.np.ufunc.omppool"):
            raise ImportError(f"{name}: its library is missing here")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_pools)
    assert patchmatch._threadsafe_layer() is False
    monkeypatch.setattr(importlib, "import_module", real)
    assert patchmatch._threadsafe_layer() is True or not patchmatch.PARALLEL

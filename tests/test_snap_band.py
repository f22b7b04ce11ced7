"""bench/snap_band.py's outline refinement (measured on the real photos and not shipped: it does not raise
boundary F held out). These check that it does what it was measured as, so the negative result is the idea's,
not a bug: it moves an offset outline onto a known edge, keeps a thin strip, stays put where there is no
edge, and is deterministic."""

from __future__ import annotations

import cv2
import numpy as np

from bench.snap_band import contour_refine


def _disc(shape: tuple[int, int], cx: int, cy: int, r: int) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.circle(m, (cx, cy), r, 1, -1)
    return m > 0


def _picture(obj: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.where(obj[..., None], np.array([200.0, 170, 60]), np.array([60.0, 80, 130]))
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def _outline(m: np.ndarray) -> np.ndarray:
    m8 = m.astype(np.uint8)
    return (m8 - cv2.erode(m8, np.ones((3, 3), np.uint8))) > 0


def _far(a: np.ndarray, b: np.ndarray) -> float:
    """Share of a's outline pixels more than 1 px from b's outline."""
    d = cv2.distanceTransform((~_outline(b)).astype(np.uint8), cv2.DIST_L2, 5)
    return float((d[_outline(a)] > 1.0).mean())


def test_an_offset_outline_moves_onto_the_edge_within_a_pixel():
    truth = _disc((120, 120), 60, 60, 32)
    image = _picture(truth)
    for r in (29, 35):  # 3 px inside, 3 px outside
        start = _disc(truth.shape, 60, 60, r)
        got = contour_refine(image, start, reach=4)
        assert _far(got, truth) < 0.02 and _far(truth, got) < 0.02, r
        assert _far(start, truth) > 0.9  # it did move


def test_a_blurred_edge_is_found_at_its_middle():
    truth = _disc((120, 120), 60, 60, 32)
    image = cv2.GaussianBlur(_picture(truth), (0, 0), 1.5)
    got = contour_refine(image, _disc(truth.shape, 60, 60, 35), reach=4)
    assert _far(got, truth) < 0.05 and _far(truth, got) < 0.05


def test_a_4px_strip_keeps_its_width():
    obj = _disc((140, 100), 50, 100, 25)
    obj[10:80, 48:52] = True  # a 4 px handle
    image = _picture(obj)
    got = contour_refine(image, obj, reach=4)
    assert got[10:80, 48:52].all()
    assert (got ^ obj).sum() <= 0.01 * obj.sum()


def test_no_edge_leaves_the_mask_alone_and_it_is_deterministic():
    rng = np.random.default_rng(3)
    flat = np.clip(rng.normal(120, 4, (100, 100, 3)), 0, 255).astype(np.uint8)
    mask = _disc((100, 100), 50, 50, 25)
    assert (contour_refine(flat, mask, reach=4) == mask).all()
    truth = _disc((100, 100), 50, 50, 22)
    image = _picture(truth, seed=5)
    a = contour_refine(image, mask, reach=4, alpha=0.5)
    b = contour_refine(image.copy(), mask.copy(), reach=4, alpha=0.5)
    assert (a == b).all()

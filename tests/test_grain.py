"""The fill's grain raised toward its ring's (backend/imaging/grain.py, PatchMatchFiller's ``grain`` option).

A hole in grain whose nearest sources are grainy but whose wider surround is flatter: the search copies the
flatter sources (they match the blurred estimate best), and the fill reads as a smooth patch. The gain raises
the fill's detail toward the ring's; a step through the hole (an edge, a seam) keeps its size."""

from __future__ import annotations

import cv2
import numpy as np

from backend.erase.patchmatch import PatchMatchFiller
from backend.imaging.grain import raise_grain

SIZE = 160
RADIUS = 30  # the hole: a disc in the middle


def _scene(step: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grain (RMS 12-14 levels) within 48 px of the centre, half as much beyond; ``step`` levels between the
    left and right halves. Returns the image, the hole and the distance from the centre."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    dist = np.hypot(yy - SIZE // 2, xx - SIZE // 2)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32), (0, 0), 0.8)
    noise = noise / noise.std() * (14.0 if step == 0 else 12.0)
    amp = np.where(dist < 48, 1.0, 0.5).astype(np.float32)
    base = np.where(xx < SIZE // 2, 120.0 - step / 2, 120.0 + step / 2).astype(np.float32)
    img = np.clip(base + noise * amp, 0, 255)[:, :, None].repeat(3, axis=2).astype(np.uint8)
    return img, dist < RADIUS, dist


def _detail_rms(img: np.ndarray, where: np.ndarray) -> float:
    f = img.astype(np.float32)
    d = f - cv2.GaussianBlur(f, (0, 0), 3.0)
    return float(np.sqrt((d[where] ** 2).mean()))


def test_a_fill_flatter_than_its_ring_is_raised_to_the_rings_grain():
    img, hole, dist = _scene(0.0, seed=0)
    ring = ~hole & (dist < RADIUS + 15)
    inner = cv2.erode(hole.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    want = _detail_rms(img, ring)
    flat = PatchMatchFiller(options={"grain": {}})(img, hole)  # without the gain
    out = PatchMatchFiller()(img, hole)
    assert _detail_rms(flat, inner) < 0.7 * want  # the cause: copies from the flatter surround (0.63)
    assert _detail_rms(out, inner) > 0.75 * want  # raised to within 25 % of the ring's (0.79)
    assert _detail_rms(out, inner) < 1.05 * want  # and not past it
    assert np.array_equal(out[~hole], img[~hole])


def test_a_step_through_the_hole_keeps_its_size():
    img, hole, _ = _scene(80.0, seed=1)
    flat = PatchMatchFiller(options={"grain": {}})(img, hole)
    out = PatchMatchFiller()(img, hole)
    change = np.abs(out.astype(int) - flat.astype(int)).max(axis=2)
    xx = np.arange(SIZE)[None, :].repeat(SIZE, axis=0)
    beside = hole & (np.abs(xx - SIZE // 2) <= 4)
    assert change[hole & ~beside].mean() > 0.3  # the grain was raised away from the step ...
    assert change[beside].max() <= 1  # ... and the step and its flanks were left as they were
    rows = slice(SIZE // 2 - 25, SIZE // 2 + 25)

    def contrast(im: np.ndarray) -> float:
        g = im.astype(np.float64).mean(axis=2)[rows]
        return float(g[:, SIZE // 2 + 3 : SIZE // 2 + 7].mean() - g[:, SIZE // 2 - 6 : SIZE // 2 - 2].mean())

    assert abs(contrast(out) - contrast(flat)) < 0.5


def test_a_smooth_ring_and_a_coherent_seam_get_no_gain():
    rng = np.random.default_rng(2)
    # a smooth ring (grain below a level): the fill is left alone
    smooth = np.clip(128 + rng.normal(0, 0.4, (80, 80, 3)), 0, 255).astype(np.uint8)
    hole = np.zeros((80, 80), bool)
    hole[25:55, 25:55] = True
    filled = smooth.copy()
    filled[hole] = 128
    assert np.array_equal(raise_grain(filled, hole, 2.0, sigma=3.0), filled)
    # grain around, and in the hole a flat fill with a seam (a 30-level line between two copies): the grain is
    # raised, the seam's line is not
    grainy = np.clip(128 + rng.normal(0, 10, (80, 80, 3)), 0, 255).astype(np.uint8)
    filled = grainy.copy()
    filled[hole] = np.clip(128 + rng.normal(0, 4, (int(hole.sum()), 3)), 0, 255).astype(np.uint8)
    filled[25:55, 40] = 158
    out = raise_grain(filled, hole, 2.0, sigma=3.0)
    inner = hole.copy()
    inner[:, 33:48] = False
    assert _detail_rms(out, inner) > 1.5 * _detail_rms(filled, inner)
    assert np.abs(out[25:55, 40].astype(int) - filled[25:55, 40].astype(int)).max() <= 1
    # nor its flanks: raising the line's blurred flank would draw a dark halo along it (-2.8 levels, calm=0)
    flank = np.s_[30:50, 38:40]
    assert abs(out[flank].astype(float).mean() - filled[flank].astype(float).mean()) < 0.5
    halo = raise_grain(filled, hole, 2.0, sigma=3.0, calm=0.0)
    assert halo[flank].astype(float).mean() < filled[flank].astype(float).mean() - 2.0

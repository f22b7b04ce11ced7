"""A regular texture keeps its grid across the hole: the surround's dominant offsets (He & Sun 2012) start the
fill from copies a whole period away and join the search (backend/erase/patchmatch.py, ``_dominant_offsets``)."""

from __future__ import annotations

import cv2
import numpy as np

from backend.erase.patchmatch import PatchMatchFiller, _dominant_offsets

STEP, GROUT = 26, 3


def _tiles(size: int = 192, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tiles of a random tint each between dark grout lines (the bench's s07-tiles, smaller); the grout mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    grout = ((xx % STEP) < GROUT) | ((yy % STEP) < GROUT)
    tint = rng.uniform(0.85, 1.0, (size // STEP + 1, size // STEP + 1)).astype(np.float32)
    img = tint[yy // STEP, xx // STEP][:, :, None] * np.array([210, 190, 150], np.float32)
    img[grout] = (70, 70, 70)
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), grout


def _thin_hole(size: int, y: float, slope: float, thickness: int = 9) -> np.ndarray:
    """A thin bar almost along a horizontal grout line: the line runs inside the hole for ~100 px, and the
    patches on it see only plain tile in their known part (why s07-tiles lost its line)."""
    hole = np.zeros((size, size), np.uint8)
    x0, x1 = 40, 150
    cv2.line(hole, (x0, int(y)), (x1, int(y + slope * (x1 - x0))), 1, thickness)
    return hole > 0


def test_grout_line_inside_a_thin_hole_is_continued() -> None:
    rgb, grout = _tiles()
    hole = _thin_hole(rgb.shape[0], y=4 * STEP + 1, slope=0.02)
    image = rgb.copy()
    image[hole] = (20, 120, 60)  # the object
    filled = PatchMatchFiller()(image, hole)
    on_line = hole & grout
    assert on_line.sum() > 200
    err = np.abs(filled.astype(np.float32) - rgb.astype(np.float32)).mean(axis=2)
    # the grout pixels in the hole are grout (dark, within a few levels of the truth), not blank tile (~100 off);
    # on main the horizontal line was missing over most of the bar: median error ~100 levels
    assert float(np.median(err[on_line])) < 15.0
    assert float(np.mean(filled[on_line].astype(np.float32))) < 95.0
    # and the tiles stay tiles: the plain tile pixels in the hole are not darkened into grout
    plain = hole & ~cv2.dilate(grout.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert float(np.median(err[plain])) < 15.0


def test_dominant_offsets_are_the_grid_and_nothing_on_irregular_surfaces() -> None:
    rgb, _ = _tiles()
    hole = _thin_hole(rgb.shape[0], y=4 * STEP + 1, slope=0.02)
    far = cv2.distanceTransform((~hole).astype(np.uint8), cv2.DIST_L2, 3)
    band = (far <= 60) & ~hole
    found = _dominant_offsets(rgb, band, 7, 0.5)
    # the lattice's two shortest vectors come first (sub-pixel, within half a px of the period)
    assert found.shape[0] >= 2
    first = sorted((abs(round(dy)), abs(round(dx))) for dy, dx in found[:2])
    assert first == [(0, STEP), (STEP, 0)]
    assert np.abs(np.abs(found[:2]).max(axis=1) - STEP).max() <= 0.5
    # random grain, a smooth gradient and straight stripes (a ridge: any shift along them matches) give no
    # offset along the stripes; noise and gradients none at all
    rng = np.random.default_rng(1)
    grain = cv2.GaussianBlur(rng.normal(128, 30, (192, 192, 3)).astype(np.float32), (0, 0), 1.5)
    grain = np.clip(grain, 0, 255).astype(np.uint8)
    assert _dominant_offsets(grain, band, 7, 0.5).shape == (0, 2)
    yy, xx = np.mgrid[0:192, 0:192].astype(np.float32)
    ramp = np.clip(np.dstack([yy, xx, yy + xx]) * 0.6, 0, 255).astype(np.uint8)
    assert _dominant_offsets(ramp, band, 7, 0.5).shape == (0, 2)
    stripes = np.where(((yy // 6) % 2 == 0)[:, :, None], 220, 60).astype(np.uint8).repeat(3, 2)
    across = _dominant_offsets(stripes, band, 7, 0.5)
    assert across.shape[0] >= 1
    assert np.all(
        np.abs(across[:, 0]) >= 11.5
    )  # across the stripes, at their period (12 px), never along them

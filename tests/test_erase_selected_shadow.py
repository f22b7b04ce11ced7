"""The object's soft cast shadow that the user selected with it is erased too (``_selected_shadow``).

A user who lassos a spoon draws around its shadow; the snap keeps the spoon, and the edge-aware region leaves a
soft shade out (each pixel of it is close to the surface just beyond). After the erase its darkest part outlined
the object (the README coffee's bowl). Only pixels the user selected are taken: a selection that is the object
changes nothing, and a dark neighbour of another hue inside the selection is not a shadow.
"""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np

from backend.erase import ErasePipeline
from backend.erase.pipeline_erase import _region_weights
from backend.params.erase import EraseParams

SIZE = 140
CY, CX, RADIUS = 70, 60, 16
LIT = np.array([200.0, 140.0, 100.0])  # a warm lit surface (the coffee's saucer is such a red)
SHADE = 0.22  # the shadow's darkest, at the object's edge: 22 % under the lit surface
SPREAD = 14.0  # px: it fades out linearly over this


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _scene(neighbour: bool = False):
    """A silver disk on a lit surface with its soft shadow to the right (bool masks: the disk, the shadow where it
    is at least 3 % deep), optionally a dark blue block left of the disk, 9-15 px from its edge."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    d = np.hypot(yy - CY, xx - CX) - RADIUS
    img = LIT + rng.normal(0, 1.5, (SIZE, SIZE, 3))
    side = np.clip((xx - CX + RADIUS * 0.3) / (RADIUS * 0.6), 0, 1)  # the shadow falls to the right
    depth = SHADE * np.clip(1 - d / SPREAD, 0, 1) * side * (d > 0)
    img *= (1 - depth)[:, :, None]
    disk = d <= 0
    img[disk] = [150, 150, 160]
    img[disk & (np.hypot(yy - CY + 5, xx - CX + 5) < 5)] = [245, 245, 250]  # a highlight
    block = np.zeros((SIZE, SIZE), bool)
    if neighbour:
        block = (xx >= CX - RADIUS - 15) & (xx < CX - RADIUS - 9) & (abs(yy - CY) < 8)
        img[block] = [40, 60, 120]
    return np.clip(img, 0, 255).astype(np.uint8), disk, depth > 0.03, block


class _Snapper:
    """Snaps any selection to the disk (the real snap's job, done exactly)."""

    def __init__(self, disk: np.ndarray):
        self.disk = disk.astype(np.float32)

    def __call__(self, image, selection, params):
        return SimpleNamespace(mask=self.disk, method="test", meta={})


def _erase(img, disk, selection):
    out = ErasePipeline(snapper=_Snapper(disk))(img, selection.astype(np.float32), EraseParams(fill="auto"))
    region = out.mask > 0
    # the region's promise: every pixel outside it is the input's, bit for bit
    assert np.array_equal(out.image[~region], img[~region])
    return out, region


def test_a_lasso_around_the_object_and_its_shadow_erases_the_shadow():
    img, disk, shadow, _ = _scene()
    lasso = np.hypot(np.mgrid[:SIZE, :SIZE][0] - CY, np.mgrid[:SIZE, :SIZE][1] - CX) <= RADIUS + SPREAD + 4
    out, region = _erase(img, disk, lasso)
    # the shadow is in the region (without the rule: only its first 6 px, about half of it)
    assert (region & shadow).sum() >= 0.95 * shadow.sum()
    # and the surface where it lay is even: within a few levels of the lit surface
    lit = _luma(LIT[None, None, :])[0, 0]
    assert np.abs(_luma(out.image[shadow]) - lit).mean() < 5.0
    assert np.abs(_luma(out.image[shadow]) - lit).max() < 12.0


def test_a_selection_of_the_object_alone_takes_no_shadow():
    img, disk, shadow, _ = _scene()
    precise = cv2.dilate(disk.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    _, region = _erase(img, disk, precise)
    # the region is the edge-aware region of the object, as without a selection
    assert np.array_equal(region, _region_weights(disk.astype(np.float32), 6, 2, img) > 0)
    far = shadow & (np.hypot(*(np.mgrid[:SIZE, :SIZE] - np.array([CY, CX])[:, None, None])) > RADIUS + 8)
    assert not (region & far).any()


def test_a_dark_neighbour_of_another_hue_inside_the_selection_is_not_a_shadow():
    img, disk, _, block = _scene(neighbour=True)
    box = np.zeros((SIZE, SIZE), bool)
    box[CY - RADIUS - 20 : CY + RADIUS + 20, CX - RADIUS - 20 : CX + RADIUS + 20] = True
    _, region = _erase(img, disk, box)
    assert not (region & block).any()


def _left_band(edge_rgb, ramp: bool, inner: float = 0.0):
    """The scene (no shadow on the left) with a band hugging the disk's left side, ``inner``-12 px out:
    ``edge_rgb`` at its inner edge, either ramping to the lit surface at 12 px (``ramp``) or flat and ending
    there."""
    img, disk, _, _ = _scene()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    d = np.hypot(yy - CY, xx - CX) - RADIUS
    band = (d > inner) & (d < 12) & (xx < CX - RADIUS * 0.6)  # 5 px of lit surface from the real shadow
    t = np.clip(d / 12, 0, 1)[:, :, None] if ramp else np.zeros((SIZE, SIZE, 1))
    painted = (1 - t) * np.asarray(edge_rgb, np.float64) + t * LIT
    img = np.where(band[:, :, None], np.clip(painted, 0, 255).astype(np.uint8), img)
    box = np.zeros((SIZE, SIZE), bool)
    box[CY - RADIUS - 20 : CY + RADIUS + 20, CX - RADIUS - 20 : CX + RADIUS + 20] = True
    return img, disk, band, box


def test_a_soft_shade_of_another_hue_hugging_the_object_is_not_its_shadow():
    """A bluish shade fading into the warm surface, hugging the disk's left side inside the selection, has every
    other mark of a soft shadow (darker, lightening outward, along the outline): the hue rule keeps it out."""
    img, disk, band, box = _left_band((110, 110, 170), ramp=True)
    _, region = _erase(img, disk, box)
    plain = _region_weights(disk.astype(np.float32), 6, 2, img) > 0
    assert (region & band & ~plain).sum() == 0


def test_a_deep_dark_band_of_the_same_hue_beside_the_object_is_not_a_soft_shadow():
    """A band 60 % under the surface (the same hue), 5-12 px from the disk (mostly past what the edge-aware rule
    takes, within the shadow rule's reach), is another dark surface or an umbra, not a faint cast shadow: the
    depth cap keeps it out."""
    img, disk, band, box = _left_band(LIT * 0.4, ramp=False, inner=5.0)
    _, region = _erase(img, disk, box)
    plain = _region_weights(disk.astype(np.float32), 6, 2, img) > 0
    assert (region & band & ~plain).sum() == 0

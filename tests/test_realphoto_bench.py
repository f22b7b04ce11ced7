"""bench/realphoto.py: the hand labels load, and the scores mean what they say."""

from __future__ import annotations

import numpy as np
import pytest

from bench.realphoto import KINDS, boundary_f, iou, load_cases, rasterise


@pytest.fixture(scope="module")
def cases():
    return load_cases({"astro_patch", "rocket_mast", "clock"})


def test_labels_make_objects_and_rough_selections(cases):
    assert [c.kind for c in cases[:3]] == list(KINDS)
    for c in cases:
        assert c.truth.any() and c.truth.shape == c.image.shape[:2] == c.selection.shape
        assert not (c.ignore & ~c.truth).all()
        covered = (c.selection > 0.5)[c.truth & ~c.ignore].mean()
        assert covered > 0.9, c.name  # a rough selection holds (nearly) the whole object
        assert (c.selection > 0).sum() > 1.3 * c.truth.sum()  # and is loose around it
    brush = cases[2].selection
    assert ((brush > 0) & (brush < 1)).any()  # the brush is soft


def test_scores(cases):
    c = cases[0]
    assert iou(c.truth.astype(np.float32), c) == 1.0 and boundary_f(c.truth, c) == 1.0
    shifted = np.roll(c.truth, 4, axis=1)
    assert iou(shifted, c) < 0.95 and boundary_f(shifted, c) < 0.5
    assert iou(np.zeros_like(c.truth), c) == 0.0 and boundary_f(np.zeros_like(c.truth), c) == 0.0


def test_rasterise_uses_pixel_edges():
    square = rasterise([[[2, 2], [5, 2], [5, 5], [2, 5]]], (8, 8))
    assert square.sum() == 9 and square[2:5, 2:5].all()

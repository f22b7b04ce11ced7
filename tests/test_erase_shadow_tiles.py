"""The selected-shadow step in tiles gives the whole window's weights byte for byte (``_selected_shadow``).

The step's per-pixel tests (colour conversion, blurs, box filters, each ring pixel's nearest band pixel) run
in tiles along the region's outline only, each with the neighbourhood its tests read; the shadow's pieces are
labelled over the whole window (one may run along the whole outline, across many tiles). Small tiles here, so
every piece crosses tile borders; objects by the layer's edge, where the band is cut off and a tile cannot be
sure (the whole window is evaluated there).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from backend.erase import pipeline_erase
from backend.erase.pipeline_erase import _region_weights


def _scene(seed: int):
    """A random object on a lit, grainy surface with a soft shadow on some sides, a lasso 8-24 px around it
    (wobbly, sometimes soft), sometimes a dark neighbour of another hue, sometimes by the layer's edge."""
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(240, 340, 2))
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    lit = rng.uniform(90, 230, 3)
    img = lit + rng.normal(0, rng.uniform(0.5, 6), (h, w, 3)) + (xx / w * rng.uniform(-20, 20))[:, :, None]
    obj = np.zeros((h, w), np.uint8)
    near_edge = seed % 4 == 3
    cy = float(rng.uniform(20, 60)) if near_edge else h / 2 + float(rng.uniform(-20, 20))
    cx = w / 2 + float(rng.uniform(-20, 20))
    for _ in range(int(rng.integers(1, 4))):  # a union of ellipses and boxes: concave, with thin parts
        ay, ax = int(rng.integers(15, 80)), int(rng.integers(15, 90))
        oy, ox = int(cy + rng.uniform(-30, 30)), int(cx + rng.uniform(-40, 40))
        if rng.random() < 0.5:
            cv2.ellipse(obj, (ox, oy), (ax, ay), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            cv2.rectangle(obj, (ox - ax, oy - ay // 3), (ox + ax, oy + ay // 3), 1, -1)
    obj = obj > 0
    d = cv2.distanceTransform((~obj).astype(np.uint8), cv2.DIST_L2, 5)
    angle = rng.uniform(0, 2 * np.pi)
    side = np.clip(((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / 30 + 0.5, 0, 1)
    spread = rng.uniform(6, 22)
    depth = rng.uniform(0.05, 0.4) * np.clip(1 - d / spread, 0, 1) * side * (d > 0)
    img *= (1 - depth)[:, :, None]
    img[obj] = rng.uniform(0, 255, 3)
    if seed % 3 == 1:  # a dark neighbour of another hue inside the lasso
        y0, x0 = np.argwhere(obj)[0]
        img[max(0, y0 - 16) : max(0, y0 - 10), x0 : x0 + 30] = (40, 60, 120)
    reach = rng.uniform(8, 24)
    wobble = cv2.GaussianBlur(rng.normal(0, 6, (h, w)).astype(np.float32), (0, 0), 6)
    sel = (d <= reach + wobble).astype(np.float32)
    if seed % 5 == 2:  # painted soft: a ramp across the threshold
        sel *= np.clip(1.5 - d / (2 * reach), 0, 1)
    return np.clip(img, 0, 255).astype(np.uint8), obj.astype(np.float32), sel


def _layer(img: np.ndarray, kind: int) -> np.ndarray:
    """The scene in another sample type (the tests read it as the fringe rule does, per crop)."""
    if kind == 1:
        return np.rint(img.astype(np.float32) / 255 * 65535).astype(np.uint16)
    if kind == 2:
        return np.dstack([img.astype(np.float32) / 255, np.ones(img.shape[:2], np.float32)])
    return img


@pytest.mark.parametrize("tile", [21, 32, 57])
def test_the_shadow_in_tiles_is_the_whole_windows_byte_for_byte(monkeypatch, tile):
    calls = {"window": 0}
    whole = pipeline_erase._shadow_cands

    def counted(*args):
        calls["window"] += 1
        return whole(*args)

    monkeypatch.setattr(pipeline_erase, "_shadow_cands", counted)
    taken = tiled = 0
    for seed in range(16):
        img, obj, sel = _scene(seed)
        layer = _layer(img, seed % 3)
        ref = _region_weights(obj, 6, 2, layer, selection=sel, shadow_tile=0)
        before = calls["window"]
        got = _region_weights(obj, 6, 2, layer, selection=sel, shadow_tile=tile)
        assert got.tobytes() == ref.tobytes(), (seed, int((got != ref).sum()))
        tiled += calls["window"] == before
        plain = _region_weights(obj, 6, 2, layer)
        taken += bool((ref > plain).any())
    # the tiles did the work (not the whole window they fall back to), and shadows were taken
    assert tiled >= 12, tiled
    assert taken >= 6, taken


def test_the_readme_coffees_shadow_in_tiles_is_the_whole_windows(monkeypatch):
    """The README's lasso and photo, the real snap: the step's arguments captured as erase calls it."""
    from backend.cli import load_registry
    from backend.jobs import run_job
    from backend.ops.base import JobContext
    from backend.wire_images import array_buffer

    examples = Path(__file__).resolve().parents[1] / "examples"
    rgb = np.asarray(Image.open(examples / "coffee.png").convert("RGB"))
    lasso = np.asarray(Image.open(examples / "coffee-spoon-selection.png").convert("L"))
    seen = []
    step = pipeline_erase._selected_shadow

    def captured(image, core, box, selection, tile=pipeline_erase.SHADOW_TILE):
        seen.append((image, core.copy(), box, selection))
        return step(image, core, box, selection, tile)

    monkeypatch.setattr(pipeline_erase, "_selected_shadow", captured)
    run_job(
        load_registry(),
        "erase",
        {"fill": "telea"},
        array_buffer(rgb, order="RGB"),
        array_buffer(lasso[:, :, None], role="selection"),
        JobContext(),
    )
    assert len(seen) == 1
    ref = step(*seen[0], None)
    assert ref is not None and ref.positive_box() is not None  # the spoon's soft shadow is taken (101cc99)
    for tile in (21, 40, 64):
        got = step(*seen[0], tile)
        assert got.box == ref.box and got.data.tobytes() == ref.data.tobytes(), tile

"""Erase on layers that are not opaque: the region's alpha is filled too (review 10).

An object on its own transparent layer used to come back as an opaque black silhouette: the fill saw the
transparent pixels' colour (black) and the composite kept the object's alpha. Now the alpha is filled from the
alpha around the region, the colour fill copies only real colours, and the blend is premultiplied.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.imaging import bleed_colours, composite, see_through, to_float
from backend.ops.base import JobContext, OpInputs
from backend.ops.erase import EraseOp

H, W = 120, 180
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _disc(cy: int, cx: int, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


def _as(layer_u8: np.ndarray, dtype) -> np.ndarray:
    f = layer_u8.astype(np.float32) / 255.0
    if dtype == np.uint8:
        return layer_u8
    if dtype == np.uint16:
        return np.rint(f * 65535).astype(np.uint16)
    return f.astype(dtype)


def _erase(layer: np.ndarray, selection: np.ndarray, **params):
    return EraseOp().run(
        OpInputs(layer, selection.astype(np.float32)), EraseOp.spec.validate(params), JobContext()
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
def test_an_object_on_a_transparent_layer_becomes_transparent(dtype):
    layer = np.zeros((H, W, 4), np.uint8)
    layer[_disc(60, 90, 22)] = (220, 40, 40, 255)
    layer = _as(layer, dtype)
    res = _erase(layer, _disc(60, 90, 28))
    alpha = to_float(res.image[..., 3])
    assert alpha[_disc(60, 90, 22)].max() <= 2 / 255  # no opaque (black) silhouette left
    outside = res.mask == 0
    assert res.image[outside].tobytes() == layer[outside].tobytes()


@pytest.mark.parametrize("channels", [2, 4])
def test_an_object_over_a_layers_transparent_edge_keeps_the_edge(channels):
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:H, :W]
    layer = np.zeros((H, W, 4), np.uint8)
    paper = (150 + 25 * np.sin(xx / 4.0))[..., None] + rng.normal(0, 4, (H, W, 3))
    layer[:, :100, :3] = np.clip(paper, 0, 255)[:, :100]
    layer[:, :100, 3] = 255
    obj = _disc(60, 100, 14)
    layer[obj] = (20, 200, 20, 255)
    if channels == 2:
        layer = np.dstack([layer[..., 1], layer[..., 3]])  # gray + alpha
    res = _erase(layer, _disc(60, 100, 19))
    out = res.image
    alpha = out[..., -1]
    assert (alpha[:, 102:] <= 2).all() and (alpha[:, 100:] > 2).sum() <= 16  # right of the edge stays clear
    left = obj & (xx < 97)
    assert (alpha[left] >= 253).all()  # left of it stays opaque
    assert set(np.unique(alpha[res.mask > 0])) <= {0, 255}  # a cut-out alpha stays cut out: no haze, no dents
    colour = out[..., 0 if channels == 2 else 1].astype(np.float32)  # green: object 200, paper ~150, black 0
    assert 120 < colour[left].mean() < 180, colour[left].mean()
    shown = (res.mask > 0) & (alpha > 0)
    assert colour[shown].min() > 90  # no black copied from the transparent side, up to the layer's edge
    if channels == 4:  # nor the erased object's own green, bled into the clear pixels beside it
        green = out[..., 1].astype(int) - out[..., 0].astype(int)
        assert (green[shown] <= 25).all(), int((green[shown] > 25).sum())


def test_an_opaque_layer_is_filled_exactly_as_without_alpha():
    rng = np.random.default_rng(5)
    rgb = np.clip(rng.normal(128, 30, (H, W, 3)), 0, 255).astype(np.uint8)
    rgb[_disc(60, 90, 15)] = (250, 250, 20)
    rgba = np.dstack([rgb, np.full((H, W), 255, np.uint8)])
    a = _erase(rgb, _disc(60, 90, 20), fill="telea")
    b = _erase(rgba, _disc(60, 90, 20), fill="telea")
    assert b.image[..., :3].tobytes() == a.image.tobytes()
    assert (b.image[..., 3] == 255).all()


def test_see_through_is_none_for_opaque_or_alpha_free_layers():
    assert see_through(np.zeros((4, 4, 3), np.uint8)) is None
    assert see_through(np.full((4, 4, 4), 65535, np.uint16)) is None
    assert see_through(np.ones((4, 4, 2), np.float32)) is None
    f = np.ones((4, 4, 4), np.float32)
    f[1, 2, 3] = 0.5
    got = see_through(f)
    assert got.dtype == np.uint8 and got[1, 2] == 128 and got[0, 0] == 255


def test_bleed_colours_takes_the_nearest_solid_pixel():
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 255, (23, 31, 3), dtype=np.uint8)
    solid = rng.random((23, 31)) < 0.05
    out = bleed_colours(rgb, solid)
    assert out[solid].tobytes() == rgb[solid].tobytes()
    sy, sx = np.nonzero(solid)
    for y, x in zip(*np.nonzero(~solid), strict=True):
        d = (sy - y) ** 2 + (sx - x) ** 2
        nearest = {tuple(rgb[sy[i], sx[i]]) for i in np.flatnonzero(d == d.min())}
        # OpenCV's mask-5 distance is within ~2 % of the true one: the colour comes from a near-nearest pixel
        near = {tuple(rgb[sy[i], sx[i]]) for i in np.flatnonzero(d <= d.min() * 1.1 + 1)}
        assert tuple(out[y, x]) in near | nearest


def test_a_soft_edge_into_transparency_keeps_the_objects_colour():
    orig = np.zeros((1, 3, 4), np.uint8)
    orig[..., 0] = 200  # opaque red
    orig[..., 3] = 255
    edited = np.zeros((1, 3, 4), np.float32)  # transparent black
    mask = np.array([[0.0, 0.5, 1.0]], np.float32)
    out = composite(orig, edited, mask, keep_alpha=False)
    assert out[0, 0].tolist() == [200, 0, 0, 255]  # outside: exact
    assert out[0, 1, 0] == 200 and abs(int(out[0, 1, 3]) - 128) <= 1  # half as opaque, still red
    assert out[0, 2, 3] == 0


def test_one_clear_pixel_far_away_does_not_change_the_fill():
    """A photo layer whose crop holds a transparent pixel (Krita sends every layer with alpha) is filled as if
    opaque: every pixel that is not clear keeps its own colour for the fill, the hint ring's included (the
    coffee: bleeding the whole hole changed 10,667 px)."""
    photo = np.asarray(Image.open(EXAMPLES / "coffee.png").convert("RGB"))
    selection = np.asarray(Image.open(EXAMPLES / "coffee-spoon-selection.png").convert("L"), np.float32) / 255
    opaque = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    holed = opaque.copy()
    holed[5, 200, 3] = 0  # inside the erase's crop, far from the spoon
    a = _erase(opaque, selection)
    b = _erase(holed, selection)
    differ = (a.image != b.image).any(axis=2)
    assert a.meta["crop"][0] <= 200 < a.meta["crop"][2] and a.meta["crop"][1] <= 5 < a.meta["crop"][3]
    assert differ.sum() <= 1 and not differ[np.arange(differ.shape[0]) != 5].any()

"""Shared image maths: formats round-trip, crop plans on odd shapes, bit-exact compositing for every dtype."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.imaging import (
    bbox,
    binarize,
    composite,
    feather_inward,
    from_float,
    grow,
    mask_to_float,
    mask_to_u8,
    plan_crop,
    resize,
    shrink,
    split_alpha,
    to_float,
    to_gray_float,
    to_rgb_u8,
)

DTYPES = [np.uint8, np.uint16, np.float16, np.float32]
CHANNELS = [None, 1, 2, 3, 4]  # None: a bare HxW gray image


def _random_image(rng: np.random.Generator, h: int, w: int, dtype, channels) -> np.ndarray:
    shape = (h, w) if channels is None else (h, w, channels)
    if dtype == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if dtype == np.uint16:
        return rng.integers(0, 65536, shape, dtype=np.uint16)
    return rng.random(shape).astype(dtype)


# ---- formats -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", CHANNELS)
def test_float_round_trip_is_exact(dtype, channels):
    img = _random_image(np.random.default_rng(0), 7, 5, dtype, channels)
    f = to_float(img)
    assert f.dtype == np.float32 and f.shape == img.shape
    assert f.min() >= 0 and f.max() <= 1
    back = from_float(f, img)
    assert back.dtype == img.dtype
    np.testing.assert_array_equal(back, img)


def test_from_float_clips_and_rounds_ints_but_not_floats():
    vals = np.array([-0.5, 0.0, 0.5, 1.0, 2.0], np.float32)
    np.testing.assert_array_equal(from_float(vals, np.uint8), [0, 0, 128, 255, 255])
    np.testing.assert_array_equal(from_float(vals, np.uint16), [0, 0, 32768, 65535, 65535])
    np.testing.assert_array_equal(from_float(vals, np.float32), vals)  # HDR values survive


def test_unsupported_dtype_is_rejected():
    with pytest.raises(TypeError, match="unsupported"):
        to_float(np.zeros((2, 2), np.int32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", CHANNELS)
def test_to_rgb_u8_shapes(dtype, channels):
    img = _random_image(np.random.default_rng(1), 6, 9, dtype, channels)
    rgb = to_rgb_u8(img)
    assert rgb.shape == (6, 9, 3) and rgb.dtype == np.uint8
    if channels in (None, 1, 2):
        assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_split_alpha_and_gray():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 3] = 200
    rgba[..., 1] = 255
    col, alpha = split_alpha(rgba)
    assert col.shape == (2, 3, 3) and (alpha == 200).all()
    assert split_alpha(rgba[..., :3])[1] is None
    np.testing.assert_allclose(to_gray_float(rgba), 0.587, atol=1e-6)


# ---- masks ---------------------------------------------------------------------------------------------


def test_mask_helpers():
    m = np.zeros((10, 12), np.uint8)
    m[2:5, 3:8] = 255
    assert bbox(m) == (3, 2, 8, 5)
    assert bbox(np.zeros((4, 4))) is None
    f = mask_to_float(m)
    assert f.dtype == np.float32 and f.max() == 1.0
    np.testing.assert_array_equal(mask_to_u8(f), m)
    assert binarize(f).sum() == 15
    grown = grow(m, 1)
    assert bbox(grown) == (2, 1, 9, 6)
    assert shrink(grown, 1).sum() == pytest.approx(f.sum())
    soft = f * 0.4
    assert grow(soft, 2).max() == pytest.approx(0.4)  # soft stays soft


def test_shrink_does_not_eat_from_the_image_border():
    full = np.ones((8, 8), np.float32)
    assert shrink(full, 3).min() == 1.0


# ---- crop plans ----------------------------------------------------------------------------------------


def test_big_photo_small_object_runs_at_model_size():
    mask = np.zeros((4000, 6000), np.uint8)
    mask[1800:2100, 2900:3200] = 1  # a 300 px object
    plan = plan_crop(mask, mask.shape, target=512)
    assert max(plan.model_size) == 512
    assert all(s % 8 == 0 for s in plan.model_size)
    x0, y0, x1, y1 = plan.box
    assert x0 <= 2900 and x1 >= 3200 and y0 <= 1800 and y1 >= 2100
    assert (x1 - x0) < 1000  # context, not the whole frame
    img = np.zeros((4000, 6000, 3), np.uint8)
    assert plan.to_model(img).shape == (plan.model_size[1], plan.model_size[0], 3)
    back = plan.from_model(np.zeros((plan.model_size[1], plan.model_size[0], 3), np.float32))
    assert back.shape == (y1 - y0, x1 - x0, 3)


def test_tiny_selection_is_upscaled():
    mask = np.zeros((300, 300), np.float32)
    mask[150:154, 150:156] = 1.0
    plan = plan_crop(mask, mask.shape, target=1024)
    assert max(plan.model_size) == 1024 and plan.scale > 10
    no_up = plan_crop(mask, mask.shape, target=512, allow_upscale=False)
    assert no_up.scale < 1.3  # only the rounding to multiples of 8 may enlarge it


def test_empty_mask_has_no_plan():
    assert plan_crop(np.zeros((5, 5)), (5, 5)) is None


@pytest.mark.parametrize("shape", [(1, 4000), (4000, 1), (1, 1), (3, 7), (511, 513), (17, 4001)])
def test_extreme_and_odd_shapes(shape):
    mask = np.ones(shape, np.float32)
    plan = plan_crop(mask, shape, target=512)
    x0, y0, x1, y1 = plan.box
    assert 0 <= x0 < x1 <= shape[1] and 0 <= y0 < y1 <= shape[0]
    w, h = plan.model_size
    assert w >= 8 and h >= 8 and w % 8 == 0 and h % 8 == 0 and max(w, h) <= 512
    img = np.random.default_rng(0).random((*shape, 4)).astype(np.float16)
    model = plan.to_model(img)
    assert model.shape == (h, w, 4) and model.dtype == np.float16
    back = plan.from_model(model)
    assert back.shape == (y1 - y0, x1 - x0, 4)
    native = plan_crop(mask, shape, target=None)
    assert native.model_size == native.crop_size


def test_crop_is_clamped_and_pastes_back():
    img = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30)
    mask = np.zeros((20, 30), np.uint8)
    mask[0:3, 27:30] = 1  # at the corner: context is clamped to the image
    plan = plan_crop(mask, img.shape, min_context=5, context=0.0, target=None)
    assert plan.box == (22, 0, 30, 8)
    pasted = plan.paste(img, np.zeros_like(plan.crop(img)))
    assert pasted[0:8, 22:30].max() == 0 and (pasted[:, :22] == img[:, :22]).all()


def test_resize_keeps_rank_and_dtype():
    gray = np.zeros((10, 10, 1), np.uint8)
    assert resize(gray, (4, 6)).shape == (6, 4, 1)
    labels = np.zeros((10, 10), bool)
    labels[:5] = True
    assert resize(labels, (20, 20), smooth=False).dtype == np.bool_


# ---- compositing ---------------------------------------------------------------------------------------


def _blob_mask(h: int, w: int, soft: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - h / 2, xx - w / 2)
    m = (r < min(h, w) / 3).astype(np.float32)
    if soft:
        m *= np.clip((min(h, w) / 3 - r) / 4, 0, 1)
    return m


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("edited_dtype", [np.uint8, np.float32])
def test_composite_is_bit_exact_outside_the_mask(dtype, channels, edited_dtype):
    rng = np.random.default_rng(3)
    orig = _random_image(rng, 33, 41, dtype, channels)
    edited = _random_image(rng, 33, 41, edited_dtype, 3)
    mask = feather_inward(_blob_mask(33, 41, soft=True), 3)
    out = composite(orig, edited, mask)
    assert out.shape == orig.shape and out.dtype == orig.dtype
    outside = mask == 0
    assert outside.any() and (mask > 0).any()
    assert out[outside].tobytes() == orig[outside].tobytes()
    if channels in (2, 4):  # alpha is kept everywhere
        assert out[..., -1].tobytes() == orig[..., -1].tobytes()
    # inside, fully masked pixels take the edit
    full = mask >= 1.0
    if channels == 3 and full.any():
        np.testing.assert_array_equal(out[full], from_float(to_float(edited[full]), orig.dtype))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_non_finite_samples_inside_the_edit_are_replaced_and_kept_outside(dtype):
    """A float layer with NaN/inf pixels under the selection gets the edit there (a NaN blended with anything is
    NaN, so the erased object used to stay); outside the mask the NaN stays, bit for bit."""
    orig = np.full((6, 8, 3), 0.25, dtype)
    orig[1, 1] = np.nan  # fully inside
    orig[2, 3, 1] = np.inf  # on the soft edge: one channel
    orig[4, 6] = -np.inf  # outside
    edited = np.full((6, 8, 3), 0.75, np.float32)
    mask = np.zeros((6, 8), np.float32)
    mask[0:4, 0:4] = 1.0
    mask[2, 3] = 0.5
    out = composite(orig, edited, mask)
    assert np.isfinite(out[mask > 0]).all()
    np.testing.assert_array_equal(out[1, 1], [0.75, 0.75, 0.75])
    assert out[2, 3, 1] == dtype(0.75) and out[2, 3, 0] == pytest.approx(0.5, abs=3e-3)  # u8 weight grid
    assert out[mask == 0].tobytes() == orig[mask == 0].tobytes()


def test_composite_blends_alpha_when_asked():
    orig = np.zeros((4, 4, 4), np.uint8)
    edited = np.full((4, 4, 3), 255, np.uint8)
    mask = np.zeros((4, 4), np.float32)
    mask[1:3, 1:3] = 1.0
    out = composite(orig, edited, mask, keep_alpha=False)
    assert (out[1:3, 1:3, 3] == 255).all() and (out[0, :, 3] == 0).all()


def test_feather_inward_never_leaks_and_keeps_soft_values():
    m = _blob_mask(64, 64, soft=False)
    f = feather_inward(m, 6)
    assert (f[m == 0] == 0).all() and (f <= m).all()
    assert f.max() == 1.0 and 0 < f[m > 0].min() < 1.0
    soft = m * 0.5
    assert feather_inward(soft, 6).max() == pytest.approx(0.5)
    full = np.ones((10, 10), np.float32)
    assert (feather_inward(full, 4) == 1.0).all()  # the image border is not an edge


def test_composite_with_an_empty_mask_is_the_original():
    orig = np.random.default_rng(0).random((9, 11, 4)).astype(np.float16)
    out = composite(orig, np.zeros((9, 11, 3), np.float32), np.zeros((9, 11), np.float32))
    assert out.tobytes() == orig.tobytes() and out is not orig


def test_keep_size_slides_the_crop_inside_instead_of_cutting_it():
    mask = np.zeros((100, 200), bool)
    mask[0:10, 0:20] = True  # in the corner
    cut = plan_crop(mask, mask.shape, context=1.0, target=None)
    kept = plan_crop(mask, mask.shape, context=1.0, target=None, keep_size=True)
    assert cut.box == (0, 0, 40, 30)
    assert kept.box == (0, 0, 60, 50)  # the full 20 px of context on both sides, all inward
    small = np.zeros((30, 30), bool)
    small[10:20, 10:20] = True
    clamped = plan_crop(small, small.shape, context=5.0, target=None, keep_size=True)
    assert clamped.box == (0, 0, 30, 30)  # never larger than the image


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 300),
    w=st.integers(1, 300),
    data=st.data(),
    target=st.sampled_from([None, 64, 512, 1024]),
    keep_size=st.booleans(),
)
def test_crop_plans_always_cover_the_mask_inside_the_image(h, w, data, target, keep_size):
    y0 = data.draw(st.integers(0, h - 1))
    x0 = data.draw(st.integers(0, w - 1))
    y1 = data.draw(st.integers(y0 + 1, h))
    x1 = data.draw(st.integers(x0 + 1, w))
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    plan = plan_crop(mask, (h, w), target=target, keep_size=keep_size)
    bx0, by0, bx1, by1 = plan.box
    assert 0 <= bx0 <= x0 and 0 <= by0 <= y0 and x1 <= bx1 <= w and y1 <= by1 <= h
    mw, mh = plan.model_size
    if target is None:
        assert (mw, mh) == plan.crop_size
    else:
        assert mw % 8 == 0 and mh % 8 == 0 and 8 <= min(mw, mh) and max(mw, mh) <= target
    crop = plan.to_model(np.ones((h, w, 3), np.uint8))
    assert crop.shape == (mh, mw, 3)
    assert plan.from_model(crop).shape == (by1 - by0, bx1 - bx0, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_composite_weights_below_the_u8_mask_step_change_nothing(dtype):
    """A weight that the returned u8 mask rounds to 0 must not move a u16/float sample (issue 11)."""
    rng = np.random.default_rng(5)
    orig = _random_image(rng, 31, 27, dtype, 4)
    edited = _random_image(rng, 31, 27, np.float32, 3)
    mask = np.zeros((31, 27), np.float32)
    mask[3:20, 5:17] = rng.random((17, 12)).astype(np.float32) * 0.01  # many weights under 0.5/255
    mask[10:14, 8:12] = 1.0
    out = composite(orig, edited, mask)
    returned = mask_to_u8(mask)
    changed = (out != orig).any(axis=2)
    assert not (changed & (returned == 0)).any()
    assert out[returned == 0].tobytes() == orig[returned == 0].tobytes()
    assert changed[10:14, 8:12].all() or dtype == np.uint8  # the full-weight block took the edit

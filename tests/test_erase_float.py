"""Erase on float layers beyond 8-bit sRGB: HDR values above 1 and linear-light darks (review 10).

The fill works on an 8-bit copy. Clipping float layers to [0, 1] for it filled an HDR sky (2.8-3.2) with
exactly 1.0, and 256 even steps gave a linear dark gradient 3 values. ``FillEncoding`` maps a float crop's own
range through a power that gives its darks levels, and maps the fill back.
"""

from __future__ import annotations

import numpy as np
import pytest

from backend.imaging import FillEncoding, to_float, to_rgb_u8
from backend.ops.base import JobContext, OpInputs
from backend.ops.erase import EraseOp

YY, XX = np.mgrid[:160, :200]
DISC = (YY - 80) ** 2 + (XX - 100) ** 2 < 15**2


def _erase(layer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    params = EraseOp.spec.validate({"snap": False})
    res = EraseOp().run(OpInputs(layer, DISC.astype(np.float32)), params, JobContext())
    return res.image, np.asarray(res.mask) >= 1


def test_an_hdr_sky_is_filled_with_its_own_values():
    sky = (2.0 + 2.0 * XX / 200)[..., None].repeat(3, 2).astype(np.float32)
    layer = sky.copy()
    layer[DISC] = 0.1
    out, full = _erase(layer)
    assert full.sum() > 500
    assert np.abs(out[full] - sky[full]).max() < 0.1  # was 2.16: the sky came back as 1.0


def test_a_linear_dark_gradient_keeps_its_levels():
    rng = np.random.default_rng(1)
    srgb = (8 + 32 * XX / 200 + rng.normal(0, 1.5, XX.shape)) / 255
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    layer = linear.astype(np.float32)[..., None].repeat(3, 2)
    layer[DISC] = 0.8
    out, full = _erase(layer)
    assert len(np.unique(out[full][:, 0])) >= 8  # was 3 (posterised)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_integer_layers_keep_the_plain_8_bit_copy(dtype):
    rng = np.random.default_rng(2)
    layer = rng.integers(0, np.iinfo(dtype).max, (9, 11, 4)).astype(dtype)
    enc = FillEncoding.for_crop(layer)
    assert enc.identity and enc.encode(layer).tobytes() == to_rgb_u8(layer).tobytes()


def test_a_float_layer_in_0_1_with_a_bright_median_is_the_plain_copy():
    layer = np.linspace(0.2, 1.0, 300, dtype=np.float32).reshape(10, 10, 3)
    assert FillEncoding.for_crop(layer).identity


def test_the_encoding_round_trips_within_one_code():
    rng = np.random.default_rng(3)
    layer = (rng.random((20, 30, 3)) ** 4 * 5.0 - 0.5).astype(np.float32)  # dark-heavy, above 1 and below 0
    enc = FillEncoding.for_crop(layer)
    assert enc.lo == pytest.approx(float(np.percentile(layer, 0.1)))
    assert enc.hi == pytest.approx(float(np.percentile(layer, 99.9)))
    assert enc.gamma < 1
    back = enc.decode(to_float(enc.encode(layer)))
    step = (enc.hi - enc.lo) / 255 / enc.gamma  # one code's width at the top of the curve (the widest)
    inside = (layer >= enc.lo) & (layer <= enc.hi)
    assert inside.mean() > 0.99 and np.abs(back - layer)[inside].max() <= step
    assert (back >= enc.lo - 1e-6).all() and (back <= enc.hi + 1e-6).all()  # beyond the range: clipped to it


def test_a_hot_pixel_does_not_posterise_an_hdr_fill():
    rng = np.random.default_rng(4)
    sky = (
        (3.0 + 0.2 * np.sin(XX / 9.0) + rng.normal(0, 0.03, XX.shape))[..., None]
        .repeat(3, 2)
        .astype(np.float32)
    )
    layer = sky.copy()
    layer[DISC] = 0.1
    layer[79:81, 127:129] = 1000.0  # a sun, a firefly: outside the region, inside the crop
    out, full = _erase(layer)
    assert len(np.unique(out[full][:, 0])) >= 20  # the range ignored the hot pixel (3 values without it)
    assert np.abs(out[full] - sky[full]).mean() < 0.15

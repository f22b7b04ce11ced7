"""Erase is exact outside its returned mask in every sample type, on odd sizes and offsets (issue 11).

An independent client found u16/f16/f32 pixels changed just outside the returned mask: blend weights under half
a u8 step (soft snapped edges) rounded to 0 in the mask but still moved high-precision samples. Each case runs
the op through the single run path (``run_job``) with wire buffers at odd offsets, the selection offset from
the image, soft edges everywhere.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from backend.cli import load_registry
from backend.imaging import to_float
from backend.jobs import run_job
from backend.ops.base import JobContext
from backend.wire_images import array_buffer, buffer_array
from tests.test_snap import make_scene


def _layer(image: np.ndarray, dtype) -> np.ndarray:
    f = image.astype(np.float32) / 255.0
    alpha = np.linspace(0.3, 1.0, f.shape[1], dtype=np.float32)[None, :].repeat(f.shape[0], 0)
    f = np.dstack([f, alpha])
    f[..., :3] += np.random.default_rng(1).random(f[..., :3].shape).astype(np.float32) / 300  # fine detail
    if dtype == np.uint8:
        return np.rint(np.clip(f, 0, 1) * 255).astype(np.uint8)
    if dtype == np.uint16:
        return np.rint(np.clip(f, 0, 1) * 65535).astype(np.uint16)
    return f.astype(dtype)


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
@pytest.mark.parametrize("fill", ["telea", "patchmatch"])
def test_every_changed_pixel_is_inside_the_returned_mask(registry, dtype, fill):
    image, _, _, sel = make_scene(161, seed=2)
    image = image[:, :157]  # odd width and height
    layer = _layer(image, dtype)
    h, w = layer.shape[:2]
    # the host's selection: soft-edged, bigger than the layer and offset from it by odd amounts
    big = np.zeros((h + 9, w + 5), np.float32)
    big[3 : 3 + h, 3 : 3 + w] = cv2.GaussianBlur(sel[:, :w], (0, 0), 3)  # image (y, x) = big (y + 3, x + 3)
    selection = array_buffer(np.rint(big * 65535).astype(np.uint16), x=-6, y=8, role="selection")
    img_buf = array_buffer(layer, order="RGBA", x=-3, y=11)
    result, buffers, _ = run_job(
        registry, "erase", {"fill": fill, "snap_method": "combined"}, img_buf, selection, JobContext()
    )
    out = result.image
    assert out.shape == layer.shape and out.dtype == layer.dtype
    region = result.mask
    changed = (out != layer).any(axis=2)
    assert changed.sum() > 500  # the object went
    assert not (changed & (region == 0)).any(), int((changed & (region == 0)).sum())
    assert out[region == 0].tobytes() == layer[region == 0].tobytes()
    # the layer's alpha is a ramp the object does not change: the filled alpha continues it (to a few levels)
    assert np.abs(to_float(out[..., 3]) - to_float(layer[..., 3])).max() <= 6 / 255
    # the wire: the image in the host's format and origin, then the region, then the snapped object
    assert [b.role for b in buffers] == ["image", "mask", "mask"]
    assert (buffers[0].x, buffers[0].y) == (-3, 11)
    assert buffer_array(buffers[0]).tobytes() == out.tobytes()
    assert result.meta["masks"] == ["region", "object"]
    wire_region, wire_object = (buffer_array(b)[:, :, 0] for b in buffers[1:])
    assert (wire_region == region).all()
    obj = wire_object > 0
    assert obj.any() and (region[obj] > 0).all()  # the edited region covers the snapped object
    assert (region > 0).sum() > obj.sum()  # grown past it


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_the_coffee_in_high_precision_changes_nothing_outside_the_returned_mask(registry, dtype):
    """The README's photo and lasso (a real snap with soft edges that fade over many pixels): blend weights under
    half a u8 step must not move a high-precision sample outside the u8 mask the host gets (review 10: the
    synthetic scene above passes even with the unrounded weights; the coffee then changes 73 / 175 px)."""
    from pathlib import Path

    from PIL import Image

    examples = Path(__file__).resolve().parents[1] / "examples"
    rgb = np.asarray(Image.open(examples / "coffee.png").convert("RGB"))
    lasso = np.asarray(Image.open(examples / "coffee-spoon-selection.png").convert("L"))
    layer = (
        np.rint(rgb.astype(np.float32) / 255 * 65535).astype(np.uint16)
        if dtype == np.uint16
        else (rgb.astype(np.float32) / 255)
    )
    selection = array_buffer(lasso[:, :, None], role="selection")
    result, _, _ = run_job(registry, "erase", {}, array_buffer(layer, order="RGB"), selection, JobContext())
    out, region = result.image, result.mask
    changed = (out != layer).any(axis=2)
    assert changed.sum() > 5000  # the spoon went
    assert not (changed & (region == 0)).any(), int((changed & (region == 0)).sum())

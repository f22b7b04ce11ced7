"""Erase keeps its masks in windows around the object (``MaskWindow``): the same bytes as the whole-layer path.

``_whole_layer`` is ErasePipeline as it was before the windowing (main 3879f74): the snap's mask, the region and
the hole weights as full-size float32 arrays, the crop planned on a full-size bool mask. The windowed pipeline
must give the same result, region and snapped mask byte for byte, in every sample type, on odd sizes, with
objects touching the layer's edges, soft and out-of-range selections, a filler that takes a hint and one with a
native size (the learned fillers' crop plan); through the op too, with the host's selection larger than the layer
and offset from it. And it must not allocate full-size masks: a small object in a large layer costs little more
than the result layer itself.
"""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest

from backend.erase import EraseParams, ErasePipeline
from backend.erase.pipeline_erase import _fill_alpha, _model_hole, _region_weights
from backend.imaging import (
    FillEncoding,
    MaskWindow,
    bbox,
    bbox_positive,
    bleed_colours,
    composite,
    mask_to_u8,
    plan_crop,
    see_through,
    to_float,
)
from backend.jobs import run_job
from backend.ops import Registry
from backend.ops.base import JobContext
from backend.ops.erase import EraseOp
from backend.snapping import SnapPipeline
from backend.wire_images import array_buffer
from tests.test_snap import make_scene


def _whole_layer(pipe: ErasePipeline, image: np.ndarray, selection: np.ndarray, params: EraseParams):
    """(result, region, snapped) the way ErasePipeline computed them before the windowing, full-size arrays."""
    filler = pipe.fillers[pipe.resolve(params.fill)]
    sel = np.asarray(selection, np.float32)
    if pipe.snapper is not None and params.snap.enabled:
        snapped = pipe.snapper(image, sel, params.snap).mask
    else:
        snapped = sel.copy()
    weights = _region_weights(
        snapped, params.grow, params.feather, image if pipe.edge_aware else None, tile=pipe.fringe_tile
    )
    hinted = bool(getattr(filler, "takes_hint", False)) and pipe.edge_aware
    hole_weights = np.maximum(_region_weights(snapped, params.grow, 0), weights) if hinted else weights
    min_crop = getattr(filler, "min_crop", None)
    context = 16
    if min_crop:
        box = bbox(hole_weights > 0)
        context = max(16, -(-(int(min_crop) - max(box[2] - box[0], box[3] - box[1])) // 2))
    plan = plan_crop(
        hole_weights > 0,
        sel.shape,
        context=getattr(filler, "context", None) or params.context,
        keep_size=True,
        multiple=8 if filler.target is not None else 1,
        target=filler.target if filler.target is not None else params.max_side,
        allow_upscale=filler.target is not None,
        min_context=context,
    )
    hole_crop = plan.crop(hole_weights) > 0
    encoding = FillEncoding.for_crop(plan.crop(image))
    colour = encoding.encode(plan.crop(image))
    alpha = see_through(plan.crop(image))  # the layers here are not opaque: their alpha is filled too
    if alpha is not None:
        bled = bleed_colours(colour, (alpha > 0) & ~hole_crop)
        colour = np.where((alpha == 0)[:, :, None], bled, colour)
    rgb = plan.to_model(colour)
    hole, reach = _model_hole(plan, hole_crop, plan.crop(weights) > 0)
    hint = None
    if hinted:
        clean = plan.to_model((hole_crop & (plan.crop(weights) <= 0)).astype(np.uint8), smooth=False) > 0
        hint = clean & hole & ~reach
        filled = filler(rgb, hole, hint=hint)
    else:
        filled = filler(rgb, hole)
    filled = encoding.decode(plan.from_model(to_float(filled)))
    if alpha is not None:
        filled = np.dstack([filled, _fill_alpha(plan, alpha, hole, hint)])
    out = image.copy()
    x0, y0, x1, y1 = plan.box
    out[y0:y1, x0:x1] = composite(plan.crop(image), filled, plan.crop(weights), keep_alpha=alpha is None)
    return out, weights, snapped


class _ShapedFiller:
    """A learned filler's shape (a native size, a minimum crop, a hint), filling with Telea; the hinted pixels
    are inverted so that a hint in the wrong place changes the result."""

    name = "shaped"
    target = 96
    min_crop = 128
    takes_hint = True

    def __call__(self, rgb: np.ndarray, hole: np.ndarray, hint: np.ndarray | None = None) -> np.ndarray:
        out = cv2.inpaint(np.ascontiguousarray(rgb), hole.astype(np.uint8), 3, cv2.INPAINT_TELEA)
        if hint is not None:
            out[hint] = 255 - out[hint]
        return out


def _layer(image: np.ndarray, dtype, alpha: bool = True) -> np.ndarray:
    f = image.astype(np.float32) / 255.0
    if alpha:
        a = np.linspace(0.3, 1.0, f.shape[1], dtype=np.float32)[None, :].repeat(f.shape[0], 0)
        f = np.dstack([f, a])
    if dtype == np.uint8:
        return np.rint(np.clip(f, 0, 1) * 255).astype(np.uint8)
    if dtype == np.uint16:
        return np.rint(np.clip(f, 0, 1) * 65535).astype(np.uint16)
    return f.astype(dtype)


def _placed(where: str, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """An odd-sized 331x297 layer with a scene's object near its middle or cut by one of its edges, and a
    soft-edged selection around it."""
    image, _, _, sel = make_scene(121, seed=seed)
    h, w = 331, 297
    big = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    big = cv2.GaussianBlur(big, (0, 0), 2)  # a background of the same colours
    mask = np.zeros((h, w), np.float32)
    y, x = {"middle": (107, 93), "top-left": (-37, -41), "bottom-right": (h - 84, w - 80)}[where]
    sy0, sx0 = max(0, -y), max(0, -x)
    ty0, tx0 = max(0, y), max(0, x)
    ty1, tx1 = min(h, y + 121), min(w, x + 121)
    crop = np.s_[sy0 : sy0 + ty1 - ty0, sx0 : sx0 + tx1 - tx0]
    big[ty0:ty1, tx0:tx1] = image[crop]
    mask[ty0:ty1, tx0:tx1] = cv2.GaussianBlur(sel, (0, 0), 2)[crop]
    return big, mask


def _same(got, want) -> None:
    out, region, snapped = want
    assert got.image.dtype == out.dtype and got.image.shape == out.shape
    assert got.image.tobytes() == out.tobytes()
    assert got.mask.dtype == region.dtype and got.mask.tobytes() == region.tobytes()
    assert got.snapped.dtype == snapped.dtype and got.snapped.tobytes() == snapped.tobytes()
    assert got.region_window.to_u8().tobytes() == mask_to_u8(region).tobytes()
    assert got.snapped_window.to_u8().tobytes() == mask_to_u8(snapped).tobytes()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
@pytest.mark.parametrize("where", ["middle", "top-left", "bottom-right"])
def test_windowed_erase_is_the_whole_layer_erase(dtype, where):
    rgb, sel = _placed(where)
    image = _layer(rgb, dtype)
    for fill, snapper, params in (
        ("telea", SnapPipeline(), {}),
        ("shaped", None, {"grow": 12, "feather": 3}),
        ("shaped", SnapPipeline(), {}),
    ):
        pipe = ErasePipeline(snapper=snapper, fillers={"shaped": _ShapedFiller()})
        p = EraseParams(fill=fill, **params)
        _same(pipe(image, sel, p), _whole_layer(pipe, image, sel, p))


def test_windowed_erase_with_other_snappers_and_odd_selections():
    rgb, sel = _placed("bottom-right", seed=5)
    image = _layer(rgb, np.uint8, alpha=False)
    raw = sel * 300.0 - 20.0  # out of [0, 1] on both sides: the snap clips it, the plain path keeps it
    raw[5, 5] = np.nan
    for snapper, selection, params in (
        (SnapPipeline(), raw, EraseParams(fill="telea")),
        (None, sel, EraseParams(fill="telea", grow=0, feather=0)),
        (None, sel, EraseParams(fill="shaped")),
        (SnapPipeline(), (sel > 0.5).astype(np.uint8) * 255, EraseParams(fill="telea")),
        # a snapper that is not a SnapPipeline (a full-size mask back): windowed by the pipeline
        (
            lambda img, s, p: type(
                "S", (), {"mask": (s > 0.6).astype(np.float32), "method": "x", "meta": {}}
            ),
            sel,
            EraseParams(fill="shaped"),
        ),
    ):
        pipe = ErasePipeline(snapper=snapper, fillers={"shaped": _ShapedFiller()})
        _same(pipe(image, selection, params), _whole_layer(pipe, image, selection, params))


@pytest.mark.parametrize("dtype", [np.uint8, np.float16])
def test_erase_op_windowed_with_a_selection_larger_than_the_layer(dtype, monkeypatch):
    """Through the single run path: the host's selection bigger than the layer and offset from it by odd
    amounts; the op's result and both masks are the whole-layer path's."""
    rgb, sel = _placed("top-left")
    layer = _layer(rgb, dtype)
    h, w = layer.shape[:2]
    big = np.zeros((h + 40, w + 31), np.float32)
    big[7 : 7 + h, 9 : 9 + w] = sel
    big[:7] = 1.0  # selected beyond the layer: cut off by the decoder
    selection = array_buffer(np.rint(big * 255).astype(np.uint8), x=-12, y=-4, role="selection")
    image = array_buffer(layer, order="RGBA", x=-3, y=3)
    registry = Registry({"erase": EraseOp})
    got = run_job(
        registry, "erase", {"fill": "telea", "snap_method": "combined"}, image, selection, JobContext()
    )

    def whole(self, image, selection, params=None, callback=None):
        out, region, snapped = _whole_layer(self, image, selection, params)
        return type(
            "Out",
            (),
            {
                "image": out,
                "mask": region,
                "snapped": snapped,
                "meta": {},
                "region_window": MaskWindow.whole(region),
                "snapped_window": MaskWindow.whole(snapped),
            },
        )

    monkeypatch.setattr(ErasePipeline, "__call__", whole)
    want = run_job(
        registry, "erase", {"fill": "telea", "snap_method": "combined"}, image, selection, JobContext()
    )
    assert got[0].image.tobytes() == want[0].image.tobytes()
    assert got[0].mask.tobytes() == want[0].mask.tobytes()
    assert got[0].object_mask.tobytes() == want[0].object_mask.tobytes()
    assert (got[0].mask > 0).sum() > 500  # something was erased


def test_a_small_object_in_a_large_layer_allocates_no_full_size_masks():
    """A 40 px object in a 2048x2048 RGBA layer: the result layer (16 MiB) is the one full-size array the
    pipeline allocates; the whole-layer path held four float32 masks of 16 MiB each besides it."""
    rgb, sel = _placed("middle")
    image = np.zeros((2048, 2048, 4), np.uint8)
    image[..., :3] = rgb[0, 0]
    image[..., 3] = 255
    selection = np.zeros((2048, 2048), np.float32)
    image[1500:1831, 700:997, :3] = rgb
    selection[1500:1831, 700:997] = sel
    pipe = ErasePipeline(snapper=SnapPipeline(), fillers={"shaped": _ShapedFiller()})
    pipe(image, selection, EraseParams(fill="shaped"))  # imports, caches
    tracemalloc.start()
    try:
        out = pipe(image, selection, EraseParams(fill="shaped"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (out.image != image).any()
    assert peak < image.nbytes + (8 << 20), peak / 2**20


def test_bbox_positive_is_bbox_of_positive():
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (3, 1), (1, 2050), (700, 1601), (2049, 517)):
        for density in (0.0, 1e-6, 0.01, 0.5):
            m = np.where(rng.random(shape) < density, rng.random(shape).astype(np.float32), 0).astype(
                np.float32
            )
            m[rng.random(shape) < 0.01] = -1.0  # negatives and NaN are not positive
            m[rng.random(shape) < 0.01] = np.nan
            assert bbox_positive(m) == bbox(m > 0), (shape, density)
            assert bbox_positive(m > 0.5) == bbox(m > 0.5)
            u8 = (np.nan_to_num(m).clip(0, 1) * 255).astype(np.uint8)
            assert bbox_positive(u8) == bbox(u8 > 0)


def test_mask_window_is_its_full_mask():
    rng = np.random.default_rng(1)
    shape = (53, 71)
    a = MaskWindow(rng.random((20, 30)).astype(np.float32), (10, 5, 40, 25), shape)
    b = MaskWindow(rng.random((30, 12)).astype(np.float32), (55, 20, 67, 50), shape)
    fa, fb = a.full(), b.full()
    outside = np.ones(shape, bool)
    outside[5:25, 10:40] = False
    assert fa.shape == shape and (fa[5:25, 10:40] == a.data).all() and not fa[outside].any()
    for box in ((0, 0, 71, 53), (12, 7, 20, 9), (35, 0, 60, 30), (60, 40, 71, 53), (0, 0, 0, 0)):
        x0, y0, x1, y1 = box
        assert a.crop(box).tobytes() == fa[y0:y1, x0:x1].tobytes()
    assert a.maximum(b).full().tobytes() == np.maximum(fa, fb).tobytes()
    assert a.to_u8().tobytes() == mask_to_u8(fa).tobytes()
    assert a.positive_box() == bbox(fa > 0)
    empty = MaskWindow.empty(shape)
    assert empty.positive_box() is None and not empty.full().any() and not empty.to_u8().any()
    assert empty.maximum(a) is a and a.maximum(empty) is a
    whole = MaskWindow.whole(fb)
    assert whole.full() is not fb and whole.full().tobytes() == fb.tobytes()
    assert whole.positive_box() == bbox(fb > 0)


def test_the_output_does_not_alias_the_callers_selection():
    """With the snap off the snapped mask is the selection: a copy, read later, not the caller's array."""
    rgb, sel = _placed("middle")
    image = _layer(rgb, np.uint8, alpha=False)
    selection = sel.copy()
    out = ErasePipeline(snapper=None)(image, selection, EraseParams(fill="telea"))
    selection[:] = 0.0
    assert out.snapped.tobytes() == sel.tobytes()

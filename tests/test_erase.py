"""ErasePipeline, fillers and the erase op: the object goes, everything outside stays bit-identical."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from backend.erase import (
    EraseParams,
    ErasePipeline,
    Filler,
    NoBackground,
    NothingToFill,
    classical_fillers,
)
from backend.imaging import to_float
from backend.jobs import run_job
from backend.ops import Registry
from backend.ops.base import JobCancelled, JobContext, OpError, OpInputs
from backend.ops.erase import EraseOp
from backend.snapping import SnapParams, SnapPipeline
from backend.wire_images import array_buffer
from tests.test_snap import make_scene


@pytest.fixture(scope="module")
def scene():
    return make_scene(160)


def _err_inside(img: np.ndarray, truth: np.ndarray, where: np.ndarray) -> float:
    return float(np.abs(img[where].astype(np.float32) - truth[where].astype(np.float32)).mean())


@pytest.mark.parametrize("fill", sorted(classical_fillers()))
def test_erase_removes_the_object(scene, fill):
    image, background, obj, sel = scene
    out = ErasePipeline(snapper=SnapPipeline())(image, sel, EraseParams(fill=fill))
    before = _err_inside(image, background, obj)
    after = _err_inside(out.image, background, obj)
    assert after < before / 3, (fill, before, after)
    assert out.meta["fill"] == fill or (fill == "auto" and out.meta["fill"] in ("patchmatch", "telea"))
    # snapped, then grown: the region hugs the object instead of the loose selection
    assert (out.mask > 0).sum() < (sel > 0).sum()
    assert (out.mask[obj] > 0).all()


def _convert(image: np.ndarray, dtype, channels) -> np.ndarray:
    f = image.astype(np.float32) / 255.0
    if channels == "gray":
        f = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
    elif channels == "gray1":
        f = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)[:, :, None]
    elif channels == "graya":
        gray = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
        f = np.dstack(
            [gray, np.linspace(0.2, 1.0, f.shape[1], dtype=np.float32)[None, :].repeat(f.shape[0], 0)]
        )
    elif channels == "rgba":
        alpha = np.linspace(0.2, 1.0, f.shape[1], dtype=np.float32)[None, :].repeat(f.shape[0], 0)
        f = np.dstack([f, alpha])
    if dtype == np.uint8:
        return np.rint(f * 255).astype(np.uint8)
    if dtype == np.uint16:
        return np.rint(f * 65535).astype(np.uint16)
    return f.astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
@pytest.mark.parametrize("channels", ["rgb", "rgba", "gray", "gray1", "graya"])
def test_erase_op_is_bit_exact_outside_the_edit_for_every_type(scene, dtype, channels):
    image, background, obj, sel = scene
    layer = _convert(image, dtype, channels)
    params = EraseOp.spec.validate({"snap_method": "grabcut"})
    res = EraseOp().run(OpInputs(layer, sel), params, JobContext())
    assert res.image.shape == layer.shape and res.image.dtype == layer.dtype
    outside = res.mask == 0
    assert outside.sum() > 0.5 * outside.size
    assert res.image[outside].tobytes() == layer[outside].tobytes()
    if channels == "rgba":
        # the alpha ramp runs under the object: the region's alpha is filled from it and continues it
        assert np.abs(to_float(res.image[..., 3]) - to_float(layer[..., 3])).max() <= 6 / 255
    # and the object is gone in this type too
    truth = _convert(background, dtype, channels)
    assert _err_inside(res.image, truth, obj) < _err_inside(layer, truth, obj) / 3


def test_no_snap_erases_the_selection_as_drawn(scene):
    image, _, _, sel = scene
    params = EraseOp.spec.validate({"snap": False, "grow": 0, "feather": 0})
    res = EraseOp().run(OpInputs(image, sel), params, JobContext())
    np.testing.assert_array_equal(res.mask > 0, sel > 0)
    assert res.meta["snap"]["method"] == "selection"


def test_empty_selection_is_a_no_selection_error(scene):
    image, _, _, sel = scene
    registry = Registry({"erase": EraseOp})  # the door (jobs.admit) refuses it before the op runs
    for selection in (array_buffer(np.zeros_like(sel), role="selection"), None):
        with pytest.raises(OpError) as err:
            run_job(registry, "erase", {}, array_buffer(image), selection, JobContext())
        assert err.value.code.value == "no_selection"
    with pytest.raises(NothingToFill):
        ErasePipeline()(image, np.zeros_like(sel))


def test_full_selection_has_no_background_to_fill_from(scene):
    image, _, _, sel = scene
    full = np.ones_like(sel)
    with pytest.raises(NoBackground):
        ErasePipeline()(image, full)
    with pytest.raises(OpError) as err:
        EraseOp().run(OpInputs(image, full), EraseOp.spec.validate({"snap": False}), JobContext())
    assert err.value.code.value == "no_selection"
    assert "background" in err.value.message


class _FlatModelFiller:
    """A stand-in for a model filler: works at a fixed resolution and paints one colour."""

    name = "model"
    target = 64

    def __init__(self):
        self.seen: list[tuple[int, ...]] = []

    def __call__(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.seen.append(rgb.shape)
        out = np.zeros(rgb.shape, np.float32)
        out[...] = (0.0, 0.5, 1.0)
        return out


def test_a_pluggable_filler_runs_at_its_resolution(scene):
    image, _, _, sel = scene
    filler = _FlatModelFiller()
    assert isinstance(filler, Filler)
    big = cv2.resize(image, (640, 640), interpolation=cv2.INTER_NEAREST)
    big_sel = cv2.resize(sel, (640, 640), interpolation=cv2.INTER_NEAREST)
    pipe = ErasePipeline(fillers={"model": filler})
    out = pipe(big, big_sel, EraseParams(fill="model", snap=SnapParams(enabled=False), feather=0))
    assert max(filler.seen[0][:2]) == 64 and all(s % 8 == 0 for s in filler.seen[0][:2])
    inside = out.mask >= 1
    assert (out.image[inside] == (0, 128, 255)).all()
    assert out.meta["model_size"][0] <= 64


def test_unknown_fill_is_rejected(scene):
    image, _, _, sel = scene
    with pytest.raises(KeyError, match="unknown fill"):
        ErasePipeline()(image, sel, EraseParams(fill="nope"))
    with pytest.raises(OpError) as err:
        EraseOp.spec.validate({"fill": "nope"})
    assert err.value.code.value == "bad_param"


def test_progress_is_reported_and_cancel_stops_between_stages(scene):
    image, _, _, sel = scene
    seen = []
    ctx = JobContext(progress_fn=lambda stage, i, n, preview: seen.append(stage))
    EraseOp().run(OpInputs(image, sel), EraseOp.spec.validate({"snap_method": "grabcut"}), ctx)
    assert seen[0] == "snap" and "fill" in seen and seen[-1] == "composite"

    stages = []

    def progress(stage, i, n, preview):
        stages.append(stage)

    ctx = JobContext(progress_fn=progress, cancel_check=lambda: "fill" in stages)
    with pytest.raises(JobCancelled):
        EraseOp().run(OpInputs(image, sel), EraseOp.spec.validate({}), ctx)
    assert stages == ["snap", "fill"]  # nothing ran after the cancel


def test_erase_and_snap_from_the_command_line(scene, tmp_path):
    from PIL import Image

    from backend.cli import main

    image, _, obj, sel = scene
    Image.fromarray(image).save(tmp_path / "in.png")
    Image.fromarray((sel * 255).astype(np.uint8)).save(tmp_path / "sel.png")
    args = ["erase", str(tmp_path / "in.png"), "--selection", str(tmp_path / "sel.png"), "--quiet"]
    outputs = ["--out", str(tmp_path / "out.png"), "--mask-out", str(tmp_path / "m.png")]
    assert main([*args, *outputs, "--region-out", str(tmp_path / "r.png")], None, None) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    mask = np.asarray(Image.open(tmp_path / "r.png"))  # the edited region: nothing changed outside it
    assert out.shape == image.shape and (out[mask == 0] == image[mask == 0]).all()
    assert (mask[obj] > 0).all()
    snapped = (
        np.asarray(Image.open(tmp_path / "m.png")) > 127
    )  # --mask-out: the snapped object, as documented
    assert (snapped & obj).sum() / (snapped | obj).sum() > 0.9
    assert (mask[snapped] > 0).all() and (mask > 0).sum() > snapped.sum()
    assert main([*args, "--out", str(tmp_path / "raw.png"), "--no-snap"], None, None) == 0
    raw_mask_area = (np.asarray(Image.open(tmp_path / "raw.png")) != image).any(axis=2).sum()
    assert raw_mask_area > (mask > 0).sum() * 0.9  # the unsnapped erase covers the loose selection
    snap_args = ["snap", str(tmp_path / "in.png"), "--selection", str(tmp_path / "sel.png"), "--quiet"]
    assert main([*snap_args, "--out", str(tmp_path / "snapped.png"), "--method", "grabcut"], None, None) == 0
    snapped = np.asarray(Image.open(tmp_path / "snapped.png"))
    assert snapped.shape == sel.shape and snapped.dtype == np.uint8
    assert ((snapped > 127) == obj).mean() > 0.98


def test_classical_fillers_keep_shape_and_fill_only_what_they_must():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    hole = np.zeros((50, 70), bool)
    hole[20:30, 25:40] = True
    for name, filler in classical_fillers().items():
        out = filler(rgb, hole)
        assert out.shape == rgb.shape and out.dtype == rgb.dtype, name
        assert out[~hole].tobytes() == rgb[~hole].tobytes(), name  # the known pixels come back as they were
        assert (out[hole] != rgb[hole]).any(), name  # and the hole was filled
        assert filler.target is None


def test_meta_is_json(scene):
    image, _, _, sel = scene
    res = EraseOp().run(OpInputs(image, sel), EraseOp.spec.validate({}), JobContext())
    json.dumps(res.meta)


def test_a_filler_may_ask_for_less_context(scene):
    image, _, _, sel = scene
    wide, tight = _FlatModelFiller(), _FlatModelFiller()
    tight.context = 0.1
    params = EraseParams(fill="model", snap=SnapParams(enabled=False))
    big = ErasePipeline(fillers={"model": wide})(image, sel, params).meta["crop"]
    small = ErasePipeline(fillers={"model": tight})(image, sel, params).meta["crop"]
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    assert area(small) < area(big)

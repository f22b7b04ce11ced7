"""SnapPipeline and the snap op: snapping quality on a synthetic scene, margin, off switch, soft selections."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from backend.imaging import grow
from backend.jobs import run_job
from backend.ops import Registry
from backend.ops.base import JobContext, OpError, OpInputs
from backend.ops.snap import SnapOp
from backend.snapping import SnapParams, SnapPipeline
from backend.snapping.u2net import find_u2netp, shared_u2netp
from backend.wire_images import array_buffer


def make_scene(size: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image u8 RGB, true background, true object mask, loose lasso selection) of a textured background
    with a distinct blob on it; the selection runs 5-15 px outside the object."""
    rng = np.random.default_rng(seed)
    small = rng.random((size // 8, size // 8, 3)).astype(np.float32)
    bg = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC) * 0.35 + 0.15
    bg += rng.normal(0, 0.02, bg.shape).astype(np.float32)
    background = np.clip(bg * 255, 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    c = size / 2
    obj = (((yy - c) / (size * 0.22)) ** 2 + ((xx - c) / (size * 0.3)) ** 2) < 1
    image = background.copy()
    colour = np.array([230, 200, 40], np.float32) + rng.normal(0, 8, (size, size, 3))
    image[obj] = np.clip(colour[obj], 0, 255).astype(np.uint8)
    dist = cv2.distanceTransform((~obj).astype(np.uint8), cv2.DIST_L2, 5)
    wobble = 10 + 5 * np.sin(np.arctan2(yy - c, xx - c) * 3)
    selection = (dist <= wobble).astype(np.float32)
    return image, background, obj, selection


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def scene():
    return make_scene()


def test_grabcut_snaps_a_loose_selection_to_the_object(scene):
    image, _, obj, sel = scene
    out = SnapPipeline()(image, sel, SnapParams(method="grabcut"))
    assert out.mask.shape == sel.shape and out.mask.dtype == np.float32
    assert iou(out.mask, obj) > 0.9 > iou(sel, obj) + 0.2
    assert out.method == "grabcut"


@pytest.mark.skipif(find_u2netp() is None, reason="u2netp.onnx not installed")
@pytest.mark.parametrize("method", ["combined", "u2netp", "auto"])
def test_embedded_methods_snap(scene, method):
    image, _, obj, sel = scene
    out = SnapPipeline(u2net=shared_u2netp())(image, sel, SnapParams(method=method))
    assert iou(out.mask, obj) > 0.85


@pytest.mark.parametrize("margin", [0, 3, 10])
def test_snap_never_reaches_beyond_the_margin(scene, margin):
    image, _, _, sel = scene
    everything = SnapPipeline(u2net=lambda rgb: np.ones(rgb.shape[:2], np.float32))  # a greedy segmenter
    out = everything(image, sel, SnapParams(method="u2netp", margin=margin))
    allowed = grow(sel, margin) > 0
    assert (out.mask[~allowed] == 0).all()
    assert (out.mask[sel > 0] > 0).all()  # and the greedy segmenter's mask is kept wherever it was selected
    assert (out.mask > 0).sum() >= (sel > 0).sum()


@pytest.mark.parametrize("params", [SnapParams(enabled=False), SnapParams(method="none")])
def test_snapping_off_returns_the_selection(scene, params):
    image, _, _, sel = scene
    soft = sel * 0.7
    out = SnapPipeline()(image, soft, params)
    np.testing.assert_array_equal(out.mask, soft)
    assert out.method == "selection"


def test_soft_selection_stays_soft_where_painted_soft(scene):
    image, _, obj, sel = scene
    # the user painted the right half of the selection at 40 %: partial alpha on the object's boundary there
    soft = sel.copy()
    soft[:, soft.shape[1] // 2 :] *= 0.4
    out = SnapPipeline()(image, soft, SnapParams(method="grabcut"))
    right = np.zeros_like(obj)
    right[:, obj.shape[1] // 2 + 2 :] = True
    assert out.mask[right & obj].max() <= 0.4 + 1e-6
    assert np.median(out.mask[right & obj]) == pytest.approx(0.4, abs=1e-6)  # not lost either
    left = ~right
    left[:, obj.shape[1] // 2 - 2 :] = False
    assert np.median(out.mask[left & obj]) == 1.0  # where painted fully, the snap decides


def test_empty_selection_gives_an_empty_mask(scene):
    image = scene[0]
    out = SnapPipeline()(image, np.zeros(image.shape[:2], np.float32))
    assert not out.mask.any()


def test_falls_back_to_the_selection_when_every_candidate_looks_wrong():
    # a flat image: nothing to find, GrabCut has no colour evidence
    image = np.full((120, 120, 3), 128, np.uint8)
    sel = np.zeros((120, 120), np.float32)
    sel[30:90, 30:90] = 1
    out = SnapPipeline()(image, sel, SnapParams(method="combined"))
    assert out.method in ("selection", "grabcut")
    assert iou(out.mask, sel) > 0.9


@pytest.mark.parametrize(
    "convert",
    [
        lambda im: im.astype(np.uint16) * 257,
        lambda im: (im / 255.0).astype(np.float32),
        lambda im: (im / 255.0).astype(np.float16),
        lambda im: np.dstack([im, np.full(im.shape[:2], 255, np.uint8)]),
        lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2GRAY),
    ],
    ids=["u16", "f32", "f16", "rgba", "gray"],
)
def test_every_sample_type_snaps(scene, convert):
    image, _, obj, sel = scene
    out = SnapPipeline()(convert(image), sel, SnapParams(method="grabcut"))
    assert out.mask.shape == sel.shape
    assert iou(out.mask, obj) > 0.8


def test_progress_is_reported(scene):
    image, _, _, sel = scene
    seen = []
    SnapPipeline()(image, sel, SnapParams(method="grabcut"), callback=lambda *a: seen.append(a))
    assert seen[0] == ("snap", 0, 2) and seen[-1] == ("snap", 2, 2)


def test_bad_inputs_are_rejected(scene):
    image, _, _, sel = scene
    with pytest.raises(ValueError, match="unknown snap method"):
        SnapPipeline()(image, sel, SnapParams(method="magic"))
    with pytest.raises(ValueError, match="does not match"):
        SnapPipeline()(image, sel[:-1])
    with pytest.raises(LookupError, match="SAM"):
        SnapPipeline()(image, sel, SnapParams(method="sam"))


# ---- the op --------------------------------------------------------------------------------------------


def test_snap_op_returns_a_mask_and_no_image(scene):
    image, _, obj, sel = scene
    params = SnapOp.spec.validate({"method": "grabcut", "margin": 16})
    res = SnapOp().run(OpInputs(image, sel), params, JobContext())
    assert res.image is None
    assert res.mask.dtype == np.uint8 and res.mask.shape == sel.shape
    assert iou(res.mask / 255.0, obj) > 0.9
    assert res.meta["method"] == "grabcut"


def test_snap_op_errors(scene, tmp_path, monkeypatch):
    image, _, _, sel = scene
    op, registry = SnapOp(), Registry({"snap": SnapOp})  # inputs are refused at the door (jobs.admit)
    with pytest.raises(OpError) as err:
        run_job(registry, "snap", {}, array_buffer(image), array_buffer(np.zeros_like(sel)), JobContext())
    assert err.value.code.value == "no_selection"
    with pytest.raises(OpError) as err:
        run_job(registry, "snap", {}, None, array_buffer(sel), JobContext())
    assert err.value.code.value == "missing_input"
    empty_models_dirs(tmp_path, monkeypatch)
    with pytest.raises(OpError) as err:  # SAM asked for, not installed where a bare context's manager looks
        op.run(OpInputs(image, sel), SnapOp.spec.validate({"method": "sam"}), JobContext(device="cpu"))
    assert err.value.code.value == "model_missing"
    with pytest.raises(OpError) as err:
        SnapOp.spec.validate({"method": "magic"})
    assert err.value.code.value == "bad_param"


def test_u2netp_is_found_without_downloads(tmp_path, monkeypatch):
    from backend.snapping.u2net import U2NetP

    shipped = find_u2netp()
    if shipped is None:
        pytest.skip("u2netp.onnx not installed")
    monkeypatch.setenv("LAYEREDIT_MODELS", str(tmp_path))
    (tmp_path / "u2net").mkdir()
    copy = tmp_path / "u2net" / "u2netp.onnx"
    copy.write_bytes(shipped.read_bytes())
    assert find_u2netp() == copy  # the models folder wins over the package copy
    assert find_u2netp(tmp_path / "nope.onnx") == copy  # a missing explicit path falls through
    prob = U2NetP(copy, threads=1)(np.zeros((40, 60, 3), np.uint8))
    assert prob.shape == (40, 60) and prob.dtype == np.float32 and 0 <= prob.min() <= prob.max() <= 1


def test_missing_u2netp_is_a_clear_error(tmp_path, monkeypatch):
    import backend.snapping.u2net as u2

    monkeypatch.delenv("LAYEREDIT_MODELS", raising=False)
    monkeypatch.setattr(u2.importlib.util, "find_spec", lambda name: None)
    assert u2.find_u2netp() is None
    with pytest.raises(FileNotFoundError, match="u2netp.onnx not found"):
        u2.U2NetP()


def empty_models_dirs(tmp_path, monkeypatch) -> None:
    """Where a bare JobContext's model manager looks (models folder, extra folders, HF cache): all empty."""
    import huggingface_hub.constants

    monkeypatch.setenv("LAYEREDIT_MODELS", str(tmp_path / "no-models"))
    monkeypatch.setenv("LAYEREDIT_MODEL_PATHS", "")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "no-hf"))

"""SAM plumbing with a tiny random-weight SamModel (no real weights exist here): prompts, candidate choice,
refinement, embedding cache, margin. Real-weight quality is checked only when SAM is installed."""

from __future__ import annotations

import numpy as np
import pytest

from backend.imaging import grow
from backend.snapping import SnapParams, SnapPipeline
from backend.snapping.sam import SamSegmenter, negative_points, positive_points
from tests.test_snap import iou, make_scene

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_sam_dir(tmp_path_factory):
    """A tiny random SamModel + processor saved to disk, loaded back offline like real weights would be."""
    from transformers import SamConfig, SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    torch.manual_seed(0)
    config = SamConfig(
        vision_config=dict(
            hidden_size=32,
            output_channels=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            global_attn_indexes=[1],
            mlp_dim=64,
            num_pos_feats=16,
        ),
        prompt_encoder_config=dict(hidden_size=32),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )
    path = tmp_path_factory.mktemp("models") / "tiny-sam"
    SamModel(config).save_pretrained(path)
    SamProcessor(image_processor=SamImageProcessorPil()).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def segmenter(tiny_sam_dir):
    torch.set_num_threads(1)
    return SamSegmenter.from_pretrained(str(tiny_sam_dir))


def test_prompt_points_from_a_selection():
    sel = np.zeros((100, 140), bool)
    sel[20:80, 30:110] = True
    pos = positive_points(sel)
    assert 1 <= len(pos) <= 3
    assert all(sel[int(y), int(x)] for x, y in pos)
    gap = 6
    grown = grow(sel, gap) > 0
    neg = negative_points(sel, gap)
    assert len(neg) >= 2 and not any(grown[int(y), int(x)] for x, y in neg)


def test_sam_snap_plumbing_with_a_tiny_random_model(segmenter):
    image, _, _, sel = make_scene(96)
    pipe = SnapPipeline(sam=segmenter)
    out = pipe(image, sel, SnapParams(method="sam", margin=8))
    assert out.method == "sam"
    assert out.mask.shape == sel.shape and out.mask.dtype == np.float32
    assert out.mask.min() >= 0 and out.mask.max() <= 1
    assert (out.mask[~(grow(sel, 8) > 0)] == 0).all()  # random weights or not, never past the margin


def test_auto_prefers_sam_and_falls_back_when_its_mask_looks_wrong():
    image, _, obj, sel = make_scene(120)
    good = SnapPipeline(sam=lambda rgb, seed, gap: _crop_like(obj, sel, seed))
    out = good(image, sel, SnapParams(method="auto"))
    assert out.method == "sam" and iou(out.mask, obj) > 0.99
    empty = SnapPipeline(sam=lambda rgb, seed, gap: np.zeros(seed.shape, np.float32))  # SAM found nothing
    out = empty(image, sel, SnapParams(method="auto"))
    assert out.method != "sam" and iou(out.mask, obj) > 0.9


def _crop_like(full: np.ndarray, sel: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The crop of ``full`` that matches the pipeline's crop ``seed`` of ``sel`` (found by its placement)."""
    from backend.imaging import bbox

    x0, y0, x1, y1 = bbox(sel > 0)
    sx0, sy0, _, _ = bbox(seed)
    ox, oy = x0 - sx0, y0 - sy0
    return full[oy : oy + seed.shape[0], ox : ox + seed.shape[1]].astype(np.float32)


def test_sam_embedding_is_cached_per_image(segmenter):
    image, _, _, sel = make_scene(96, seed=5)
    before = segmenter.embed_calls
    pipe = SnapPipeline(sam=segmenter)
    pipe(image, sel, SnapParams(method="sam"))
    pipe(image, sel * 0.9, SnapParams(method="sam"))  # same layer, another selection: no new embedding
    assert segmenter.embed_calls == before + 1
    other = image.copy()
    other[0, 0] ^= 1
    pipe(other, sel, SnapParams(method="sam"))
    assert segmenter.embed_calls == before + 2


def test_shared_segmenter_is_one_per_model(segmenter):
    a = SamSegmenter.shared(segmenter.model, segmenter.processor)
    assert SamSegmenter.shared(segmenter.model, segmenter.processor) is a


@pytest.mark.realweights
def test_sam_real_weights_snap_well():
    from backend.models import ModelManager

    models = ModelManager()
    if not models.has_model("sam"):
        pytest.skip("SAM weights not installed (python3 install.py --models sam)")
    model, processor = models.load_sam()
    image, _, obj, sel = make_scene(256)
    out = SnapPipeline(sam=SamSegmenter(model, processor))(image, sel, SnapParams(method="sam"))
    assert iou(out.mask, obj) > 0.9

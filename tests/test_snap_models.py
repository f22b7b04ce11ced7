"""The segment-anything model path: SAM 2.1 and SAM-HQ next to SAM ViT-B, loaded from disk through the real
ModelManager code and prompted through the real snap op. The weights are tiny random ones built in this test
session (no real weights exist on this machine), so these tests prove loading, prompting, caching, the auto order,
the meta and the error codes; never mask quality (the realweights tests at the end do, where weights exist)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from backend.imaging import grow
from backend.models import ModelManager
from backend.models.presets import PRESETS, SAM_AUTO_ORDER
from backend.ops.base import JobContext, OpError, OpInputs
from backend.ops.snap import MODEL_METHODS, SnapOp
from protocol.errors import ErrorCode
from tests.test_snap import empty_models_dirs, iou, make_scene

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


# ---- tiny random-weight models saved like the real repositories ------------------------------------------------
def build_tiny_sam2(folder: Path) -> Path:
    """A tiny Sam2Model (128 px input) with a preprocessor_config.json like facebook/sam2.1-hiera-*'s."""
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2Model, Sam2VisionConfig

    torch.manual_seed(0)
    backbone = Sam2HieraDetConfig(
        hidden_size=12,
        image_size=128,
        embed_dim_per_stage=[12, 24, 48, 96],
        num_attention_heads_per_stage=[1, 2, 4, 8],
        blocks_per_stage=[1, 1, 1, 1],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[96, 48, 24, 12],
        backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
        fpn_hidden_size=32,
    )
    config = Sam2Config(
        vision_config=vision,
        prompt_encoder_config=dict(hidden_size=32, image_size=128, patch_size=16),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=4, iou_head_hidden_dim=32),
    )
    Sam2Model(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "Sam2ImageProcessorFast",
                "size": {"height": 128, "width": 128},
                "do_resize": True,
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": [0.485, 0.456, 0.406],
                "image_std": [0.229, 0.224, 0.225],
            }
        )
    )
    return folder


def build_tiny_sam_hq(folder: Path) -> Path:
    """A tiny SamHQModel (64 px input) with its processor's preprocessor_config.json, as the hub repo has."""
    from transformers import SamHQConfig, SamHQModel
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    torch.manual_seed(0)
    config = SamHQConfig(
        vision_config=dict(
            hidden_size=32,
            output_channels=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=64,
            patch_size=16,
            global_attn_indexes=[1],
            window_size=2,
            mlp_dim=64,
            num_pos_feats=8,
        ),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            mlp_dim=32,
            iou_head_hidden_dim=16,
            vit_dim=32,
        ),
    )
    SamHQModel(config).save_pretrained(folder)
    SamImageProcessorPil(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}).save_pretrained(
        folder
    )
    return folder


def build_tiny(name: str, folder: Path) -> Path:
    from tests.test_models import build_tiny_sam

    family = {"sam": build_tiny_sam, "sam-hq": build_tiny_sam_hq}.get(name, build_tiny_sam2)
    return family(folder)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each model built once per module; tests copy what they need into their own models folder."""
    root = tmp_path_factory.mktemp("tiny-segmenters")
    return {name: build_tiny(name, root / name) for name in ("sam", "sam-hq", "sam2.1-tiny")}


def install(built, models_dir: Path, *names: str) -> None:
    for name in names:
        source = built["sam2.1-tiny" if name.startswith("sam2.1") else name]
        shutil.copytree(source, models_dir / name)


def manager(models_dir: Path) -> ModelManager:
    return ModelManager(
        models_dir=models_dir, device="cpu", search_dirs=[], hf_cache_dir=models_dir.parent / "no-hf-cache"
    )


@pytest.fixture
def models_dir(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def snap(models, method: str, image, sel, margin: int = 8):
    ctx = JobContext()
    ctx.models = models
    params = SnapOp.spec.validate({"method": method, "margin": margin})
    return SnapOp().run(OpInputs(image, sel), params, ctx)


# ---- loading ------------------------------------------------------------------------------------------------
def test_each_family_loads_from_disk_through_the_manager(built, models_dir):
    from transformers import Sam2Model, SamHQModel, SamModel

    from backend.snapping.sam import Sam2Prompts

    install(built, models_dir, "sam", "sam-hq", "sam2.1-tiny", "sam2.1-small")
    mm = manager(models_dir)
    expected = {"sam": SamModel, "sam-hq": SamHQModel, "sam2.1-tiny": Sam2Model, "sam2.1-small": Sam2Model}
    for name, cls in expected.items():
        model, processor = mm.load_sam(name)
        assert type(model) is cls and not model.training
        assert mm.load_sam(name)[0] is model  # cached across jobs
    _, prompts = mm.load_sam("sam2.1-tiny")
    assert isinstance(prompts, Sam2Prompts) and (prompts.height, prompts.width) == (128, 128)
    assert mm.stats.loads == 4


def test_sam2_prompts_match_the_processor_conventions():
    from backend.snapping.sam import Sam2Prompts

    prep = Sam2Prompts(height=128, width=128)
    mean_colour = np.zeros((30, 50, 3), np.uint8) + np.uint8([124, 116, 104])  # ImageNet mean * 255
    values = prep.pixel_values(mean_colour)
    assert tuple(values.shape) == (1, 3, 128, 128) and values.dtype == torch.float32
    assert float(values.abs().max()) < 0.01  # mean colour -> ~0 after normalising
    # coordinates scale per axis (SAM 2 squashes the image to a square; SAM pads instead)
    assert prep.scale(np.array([[50.0, 30.0], [25.0, 15.0]]), (30, 50)).tolist() == [[128, 128], [64, 64]]


# ---- prompting through the op ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sam", "sam-hq", "sam2.1-tiny"])
def test_snap_with_each_model_by_name(built, models_dir, name):
    install(built, models_dir, name)
    mm = manager(models_dir)
    image, _, _, sel = make_scene(96, seed=3)
    res = snap(mm, name, image, sel)
    assert res.mask.shape == sel.shape and res.mask.dtype == np.uint8
    assert (res.mask[~(grow(sel, 8) > 0)] == 0).all()  # random weights or not, never past the margin
    assert res.meta["method"] == "sam"
    info = res.meta["model"]
    assert info["name"] == name and info["family"] == {"sam2.1-tiny": "sam2"}.get(name, name)
    assert info["choice"] == {"asked": name} and info["verdict"].startswith("used")
    assert len(info["candidates"]) == 3 and 0 <= info["picked"] < 3
    for cand in info["candidates"]:
        assert 0 <= cand["agreement"] <= 1 and np.isfinite(cand["predicted_iou"])
    assert info["prompt"]["positive"] >= 1 and info["prompt"]["negative"] >= 2
    assert ("object_score" in info) == (name == "sam2.1-tiny")
    assert info["embedding"] == "computed"
    json.dumps(res.meta)  # the meta travels over the wire and into the log
    again = snap(mm, name, image, sel * 0.9)  # same layer, another selection: the embedding is reused
    assert again.meta["model"]["embedding"] == "cached"


@pytest.mark.parametrize("name", ["sam", "sam-hq", "sam2.1-tiny"])
def test_the_cached_embedding_holds_what_each_decoder_reads(built, models_dir, name):
    """SAM: one feature map; SAM-HQ: that plus the early global-attention features its HQ token fuses;
    SAM 2: the multi-scale feature pyramid. All of it is cached, so a cached snap never runs the encoder."""
    from backend.snapping.sam import SamSegmenter

    install(built, models_dir, name)
    model, processor = manager(models_dir).load_sam(name)
    seg = SamSegmenter(model, processor, name=name)
    image, _, _, sel = make_scene(64, seed=2)
    seg.segment(image[..., :3].astype(np.uint8), sel > 0)
    (cached,) = seg._cache.values()
    if name == "sam":
        assert set(cached) == {"image_embeddings"} and cached["image_embeddings"].ndim == 4
    elif name == "sam-hq":
        assert set(cached) == {"image_embeddings", "intermediate_embeddings"}
        early = cached["intermediate_embeddings"]
        assert len(early) == 1 and early[0].shape[-1] == model.config.vision_config.hidden_size
    else:
        assert [tuple(t.shape[-2:]) for t in cached["image_embeddings"]] == [(32, 32), (16, 16), (8, 8)]
    assert seg.embed_calls == 1
    seg.segment(image[..., :3].astype(np.uint8), grow(sel, 2) > 0)
    assert seg.embed_calls == 1


def test_the_picked_candidate_is_the_one_that_agrees_with_the_selection(built, models_dir, monkeypatch):
    """Whatever the (random) model predicts, the pick is the candidate closest to the selection, and the
    refinement is kept only when it agrees as well; the returned mask is what the meta says."""
    from backend.snapping.sam import SamSegmenter

    install(built, models_dir, "sam2.1-tiny")
    model, prompts = manager(models_dir).load_sam("sam2.1-tiny")
    seg = SamSegmenter(model, prompts, name="sam2.1-tiny")
    image, _, _, sel = make_scene(80, seed=4)
    rgb = image[..., :3].astype(np.uint8)
    prob, info = seg.segment(rgb, sel > 0, gap=6)
    agreements = [c["agreement"] for c in info["candidates"]]
    assert info["picked"] == int(np.argmax(agreements))
    final = iou(prob, sel > 0)
    if info["refined"]:
        assert info["refined_agreement"] >= agreements[info["picked"]] - 0.05
        assert abs(final - info["refined_agreement"]) < 1e-3
    else:
        assert abs(final - agreements[info["picked"]]) < 1e-3


def test_auto_takes_the_best_installed_model_and_says_why(built, models_dir):
    image, _, obj, sel = make_scene(96, seed=6)
    install(built, models_dir, "sam", "sam2.1-tiny")
    res = snap(manager(models_dir), "auto", image, sel)
    info = res.meta["model"]
    assert info["choice"]["picked"] == "sam2.1-tiny" and info["name"] == "sam2.1-tiny"
    assert info["choice"]["installed"] == ["sam2.1-tiny", "sam"] and info["choice"]["skipped"] == {}
    assert "first installed model that loads" in info["choice"]["why"]
    # random weights: the model's mask is used only if it passed the checks; otherwise the embedded snap decided
    if info["plausible"]:
        assert res.meta["method"] == "sam" and info["verdict"].startswith("used")
    else:
        assert res.meta["method"] != "sam" and info["verdict"].startswith("rejected")
        assert iou(res.mask / 255.0, obj) > 0.9  # the fallback still finds the object
    install(built, models_dir, "sam-hq")
    assert snap(manager(models_dir), "auto", image, sel).meta["model"]["choice"]["picked"] == "sam-hq"


def test_hello_reports_sam_when_any_segment_anything_model_is_installed(built, models_dir):
    assert manager(models_dir).available()["sam"] is False
    install(built, models_dir, "sam2.1-tiny")
    assert manager(models_dir).available()["sam"] is True


def test_auto_rejects_a_model_mask_whose_outline_sits_on_no_edge():
    """The model's mask must pass the embedded candidates' own checks, edges included: a disc inside the object
    (right area, clear of the selection's rim, outline across flat colour) is not the object, so auto falls
    back; the true object's mask is used, and its evidence is in the meta either way."""
    from backend.snapping import SnapParams, SnapPipeline

    image, _, obj, sel = make_scene(120, seed=11)
    yy, xx = np.mgrid[0 : sel.shape[0], 0 : sel.shape[1]]
    cy, cx = np.argwhere(obj).mean(axis=0)
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < (0.45 * np.sqrt(obj.sum() / np.pi)) ** 2
    assert (disc <= obj).all()

    def pipeline(full: np.ndarray) -> SnapPipeline:
        def model(rgb, seed, gap):  # the crop the pipeline works on is found by the selection's placement
            from tests.test_snap_sam import _crop_like

            return _crop_like(full, sel, seed)

        return SnapPipeline(sam=model)

    out = pipeline(disc)(image, sel, SnapParams(method="auto"))
    info = out.meta["model"]
    assert not info["plausible"] and "image edges" in info["verdict"] and out.method != "sam"
    assert iou(out.mask, obj) > 0.9  # the embedded snap found the object instead
    out = pipeline(obj)(image, sel, SnapParams(method="auto"))
    assert out.method == "sam" and out.meta["model"]["plausible"] and out.meta["model"]["edge"] >= 0.4


def test_auto_without_models_is_the_embedded_snap(models_dir):
    image, _, obj, sel = make_scene(96, seed=7)
    res = snap(manager(models_dir), "auto", image, sel)
    assert res.meta["method"] != "sam" and "model" not in res.meta
    assert iou(res.mask / 255.0, obj) > 0.9


def test_replace_reports_the_snap_it_used(built, models_dir, tiny_inpaint_dir):
    """Replace snaps too: its result's meta carries the same snap meta as erase's (model, scores, verdict)."""
    from backend.ops.replace import ReplaceOp

    (models_dir / "sd15-inpaint").symlink_to(tiny_inpaint_dir, target_is_directory=True)
    install(built, models_dir, "sam2.1-tiny")
    image, _, _, sel = make_scene(64, seed=5)
    ctx = JobContext(models=manager(models_dir))
    op = ReplaceOp()
    params = op.spec.validate({"prompt": "a red vase", "steps": 1, "snap_method": "sam2.1-tiny", "margin": 8})
    res = op.run(OpInputs(image, sel), params, ctx)
    assert res.meta["model"] == "sd15-inpaint"  # the inpainting model; the snap's model sits under "snap"
    assert res.meta["snap"]["method"] == "sam" and res.meta["snap"]["model"]["name"] == "sam2.1-tiny"
    assert "snap" not in op.run(OpInputs(image, sel), op.spec.validate({**params, "snap": False}), ctx).meta


# ---- errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sam-hq", "sam2.1-small", "sam2.1-tiny"])
def test_missing_model_names_its_install_command(models_dir, name, monkeypatch):
    image, _, _, sel = make_scene(64)
    with pytest.raises(OpError) as err:
        snap(manager(models_dir), name, image, sel)
    assert err.value.code == ErrorCode.MODEL_MISSING
    assert f"python3 install.py --models {name}" in err.value.message
    assert err.value.details["install"] == f"python3 install.py --models {name}"
    empty_models_dirs(models_dir, monkeypatch)
    with pytest.raises(OpError) as err:  # no model manager given: the one the context makes finds none either
        SnapOp().run(OpInputs(image, sel), SnapOp.spec.validate({"method": name}), JobContext(device="cpu"))
    assert err.value.code == ErrorCode.MODEL_MISSING and f"--models {name}" in err.value.message


def test_broken_model_is_model_broken_and_auto_skips_it(built, models_dir):
    install(built, models_dir, "sam-hq", "sam2.1-tiny")
    weights = models_dir / "sam-hq" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a download cut short
    image, _, _, sel = make_scene(96, seed=8)
    with pytest.raises(OpError) as err:
        snap(manager(models_dir), "sam-hq", image, sel)
    assert err.value.code == ErrorCode.MODEL_BROKEN and "install.py --models sam-hq" in err.value.message
    res = snap(manager(models_dir), "auto", image, sel)  # the backend keeps serving: the next model runs
    choice = res.meta["model"]["choice"]
    assert choice["picked"] == "sam2.1-tiny" and choice["skipped"]["sam-hq"].startswith("model_broken")


def test_every_model_broken_falls_back_and_the_meta_says_so(built, models_dir):
    install(built, models_dir, "sam2.1-tiny")
    (models_dir / "sam2.1-tiny" / "config.json").write_text("{not json")
    image, _, obj, sel = make_scene(96, seed=9)
    res = snap(manager(models_dir), "auto", image, sel)
    assert res.meta["method"] != "sam" and iou(res.mask / 255.0, obj) > 0.9
    assert res.meta["model"]["choice"]["picked"] is None
    assert "sam2.1-tiny" in res.meta["model"]["choice"]["skipped"]


def test_interrupted_download_and_foreign_models_are_model_broken(built, models_dir):
    install(built, models_dir, "sam2.1-small")
    (models_dir / "sam2.1-small" / ".layeredit-incomplete").write_text("started")
    mm = manager(models_dir)
    with pytest.raises(OpError) as err:
        mm.load_sam("sam2.1-small")
    assert err.value.code == ErrorCode.MODEL_BROKEN and "--models sam2.1-small" in err.value.message
    image, _, _, sel = make_scene(64, seed=1)
    choice = snap(mm, "auto", image, sel).meta["model"]["choice"]  # auto says why the model did not run
    assert choice["installed"] == ["sam2.1-small"] and "did not finish" in choice["skipped"]["sam2.1-small"]
    other = models_dir / "edgetam"
    shutil.copytree(built["sam2.1-tiny"], other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "model_type": "edgetam"}))
    with pytest.raises(OpError) as err:
        mm.load_sam(str(other))
    assert err.value.code == ErrorCode.MODEL_BROKEN and "EdgeTAM is not supported" in err.value.message


def test_a_preset_in_the_hugging_face_cache_is_found_by_its_name(built, tmp_path):
    """A user who fetched facebook/sam2.1-hiera-tiny with huggingface_hub already has it: no second download."""
    cache = tmp_path / "hf-cache"
    repo = cache / "models--facebook--sam2.1-hiera-tiny"
    shutil.copytree(built["sam2.1-tiny"], repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    empty = tmp_path / "models"
    empty.mkdir()
    mm = ModelManager(models_dir=empty, device="cpu", search_dirs=[], hf_cache_dir=cache)
    assert mm.has_model("sam", "sam2.1-tiny") and not mm.has_model("sam", "sam2.1-small")
    assert type(mm.load_sam("sam2.1-tiny")[0]).__name__ == "Sam2Model"


# ---- presets, schema ------------------------------------------------------------------------------------------
SAM2_REPO_FILES = [  # facebook/sam2.1-hiera-tiny's file list (see docs/SNAP_MODELS.md)
    ".gitattributes",
    "README.md",
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "processor_config.json",
    "sam2.1_hiera_t.yaml",
    "sam2.1_hiera_tiny.pt",
    "video_preprocessor_config.json",
]


def test_presets_fetch_only_the_transformers_files(monkeypatch, tmp_path):
    import huggingface_hub

    from backend.models.presets import download
    from tests.test_models_presets import FakeHub

    assert set(SAM_AUTO_ORDER) <= set(PRESETS) and MODEL_METHODS == SAM_AUTO_ORDER
    assert all(PRESETS[name].kind == "sam" and PRESETS[name].repo_id for name in SAM_AUTO_ORDER)
    assert PRESETS["sam2.1-tiny"].repo_id == "facebook/sam2.1-hiera-tiny"
    assert PRESETS["sam2.1-small"].repo_id == "facebook/sam2.1-hiera-small"
    assert PRESETS["sam-hq"].repo_id == "syscv-community/sam-hq-vit-base"
    hub = FakeHub(SAM2_REPO_FILES)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    folder = download("sam2.1-tiny", tmp_path, progress=False)
    got = sorted(p.name for p in folder.iterdir())
    assert got == ["config.json", "model.safetensors", "preprocessor_config.json", "processor_config.json"]
    hub.files = [f for f in SAM2_REPO_FILES if f != "processor_config.json"]  # optional: still installs
    shutil.rmtree(folder)
    assert (download("sam2.1-small", tmp_path, progress=False) / "model.safetensors").is_file()


def test_schema_offers_every_model_and_explains_auto():
    from backend.ops.erase import EraseOp

    method = next(p for p in SnapOp.spec.params if p.name == "method")
    assert [c for c in method.choices if c in PRESETS] == list(SAM_AUTO_ORDER)
    assert ", ".join(SAM_AUTO_ORDER) in method.help
    snap_method = next(p for p in EraseOp.spec.params if p.name == "snap_method")
    assert set(SAM_AUTO_ORDER) <= set(snap_method.choices)


# ---- real weights (skipped unless installed) ------------------------------------------------------------------
@pytest.mark.realweights
@pytest.mark.parametrize("name", SAM_AUTO_ORDER)
def test_real_weights_snap_the_scene(name):
    models = ModelManager()
    if not models.has_model("sam", name):
        pytest.skip(f"{name} not installed (python3 install.py --models {name})")
    image, _, obj, sel = make_scene(256)
    res = snap(models, name, image, sel, margin=24)
    assert iou(res.mask / 255.0, obj) > 0.9


def test_realphoto_quality_bench_runs_the_snap_ops_code_on_installed_models(built, models_dir):
    """bench/snap_models.py --realphoto scores users' real weights on the real-photo set; here its plumbing runs
    with a tiny random model on one object (the figures are meaningless: random weights)."""
    from bench.snap_models import realphoto

    install(built, models_dir, "sam2.1-tiny")
    found = realphoto(manager(models_dir), ["sam2.1-tiny", "sam-hq"], {"coffee_spoon"})
    assert list(found) == ["sam2.1-tiny"]  # sam-hq is not installed: left out
    result = found["sam2.1-tiny"]
    assert len(result["cases"]) == 3 and 0 <= result["rejected"] <= 3
    for iou_value, bf in (result["by name"], result["auto"]):
        assert 0 <= iou_value <= 1 and 0 <= bf <= 1
    # where the model's mask was rejected, auto's is the embedded snap's, which finds the spoon
    assert all(r["auto_iou"] > 0.5 for r in result["cases"] if not r["plausible"])

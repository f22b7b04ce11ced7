"""backend.models: finding and loading tiny pipelines through the real loading code, errors, LRU budget."""

from __future__ import annotations

import json
import shutil
import struct
import threading
from pathlib import Path

import pytest
import torch

from backend.models import ModelManager
from backend.models.device import default_budget_bytes, pick_device, pick_dtype
from backend.models.presets import INCOMPLETE_MARKER
from backend.ops.base import OpError
from protocol.errors import ErrorCode


@pytest.fixture
def models_dir(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    return d


def manager(models_dir, **kw) -> ModelManager:
    kw.setdefault("device", "cpu")
    kw.setdefault("search_dirs", [])
    kw.setdefault("hf_cache_dir", models_dir.parent / "empty-hf-cache")
    return ModelManager(models_dir=models_dir, **kw)


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_loads_inpaint_folder_by_path_and_caches_it(tiny_inpaint_dir, models_dir):
    from diffusers import StableDiffusionInpaintPipeline

    mm = manager(models_dir)
    pipe = mm.load_pipeline("inpaint", str(tiny_inpaint_dir))
    assert isinstance(pipe, StableDiffusionInpaintPipeline)
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert pipe.unet.dtype == torch.float32 and pipe.unet.device.type == "cpu"
    assert mm.load_pipeline("inpaint", tiny_inpaint_dir) is pipe
    assert (mm.stats.loads, mm.stats.hits) == (1, 1)
    assert mm.loaded_bytes == sum(
        p.numel() * 4 for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters()
    ) + sum(
        b.numel() * b.element_size() for m in (pipe.unet, pipe.vae, pipe.text_encoder) for b in m.buffers()
    )


def test_text2img_loads_sd_folder_and_rejects_inpaint_unet(tiny_sd_dir, tiny_inpaint_dir, models_dir):
    from diffusers import StableDiffusionPipeline

    mm = manager(models_dir)
    pipe = mm.load_pipeline("text2img", tiny_sd_dir)
    assert type(pipe) is StableDiffusionPipeline
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert getattr(pipe, part) is not None
    with pytest.raises(OpError) as err:
        mm.load_pipeline("text2img", tiny_inpaint_dir)
    assert err.value.code == ErrorCode.BAD_PARAM and "install.py --models sd15" in err.value.message


def test_default_ref_is_the_preset_folder(tiny_inpaint_dir, models_dir):
    copy_model(tiny_inpaint_dir, models_dir / "sd15-inpaint")
    mm = manager(models_dir)
    assert mm.has_model("inpaint")
    assert mm.locate("inpaint").path == models_dir / "sd15-inpaint"
    assert mm.load_pipeline("inpaint") is mm.load_pipeline("inpaint", "sd15-inpaint")
    assert mm.stats.loads == 1
    assert mm.available() == {
        "inpaint": True,
        "text2img": False,
        "sam": False,
        "lcm-lora": False,
        "lama": False,
        "migan": False,
    }


def test_name_found_in_user_folders_a1111_layout(tiny_inpaint_dir, models_dir, tmp_path):
    a1111 = tmp_path / "webui" / "models"
    copy_model(tiny_inpaint_dir, a1111 / "Stable-diffusion" / "my-inpaint")
    mm = manager(models_dir, search_dirs=[a1111])
    loc = mm.locate("inpaint", "my-inpaint")
    assert loc.path == a1111 / "Stable-diffusion" / "my-inpaint" and loc.form == "folder"
    assert mm.load_pipeline("inpaint", "my-inpaint").unet.config.in_channels == 9


def test_search_dirs_come_from_environment(tiny_inpaint_dir, models_dir, tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    copy_model(tiny_inpaint_dir, two / "checkpoints" / "other")
    monkeypatch.setenv("LAYEREDIT_MODEL_PATHS", f"{one}:{two}")
    mm = ModelManager(models_dir=models_dir, device="cpu", hf_cache_dir=tmp_path / "nohf")
    assert mm.locate("inpaint", "other").path == two / "checkpoints" / "other"


def test_models_dir_defaults_to_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LAYEREDIT_MODELS", str(tmp_path / "mine"))
    assert ModelManager(device="cpu").models_dir == tmp_path / "mine"
    monkeypatch.delenv("LAYEREDIT_MODELS")
    assert ModelManager(device="cpu").models_dir == Path(__file__).resolve().parents[1] / "models"


def make_hf_cache(cache: Path, repo_id: str, src: Path, revision: str = "0123abcd") -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<rev>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(src, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return repo / "snapshots" / revision


def test_repo_id_resolves_from_local_hf_cache(tiny_inpaint_dir, models_dir, tmp_path):
    cache = tmp_path / "hub"
    snap = make_hf_cache(cache, "someone/tiny-inpainting", tiny_inpaint_dir)
    mm = manager(models_dir, hf_cache_dir=cache)
    assert mm.locate("inpaint", "someone/tiny-inpainting").path == snap
    assert mm.load_pipeline("inpaint", "someone/tiny-inpainting").unet.config.in_channels == 9
    with pytest.raises(OpError) as err:
        mm.load_pipeline("inpaint", "someone/not-cached")
    assert err.value.code == ErrorCode.MODEL_MISSING and "Hugging Face cache" in err.value.message


def test_default_preset_found_in_hf_cache(tiny_inpaint_dir, models_dir, tmp_path):
    cache = tmp_path / "hub"
    make_hf_cache(cache, "stable-diffusion-v1-5/stable-diffusion-inpainting", tiny_inpaint_dir)
    assert manager(models_dir, hf_cache_dir=cache).has_model("inpaint")


def test_missing_default_model_names_install_command(models_dir):
    mm = manager(models_dir)
    assert not mm.has_model("inpaint")
    for kind, preset in (("inpaint", "sd15-inpaint"), ("text2img", "sd15")):
        with pytest.raises(OpError) as err:
            mm.load_pipeline(kind)
        assert err.value.code == ErrorCode.MODEL_MISSING
        assert f"python3 install.py --models {preset}" in err.value.message
        assert err.value.details["install"] == f"python3 install.py --models {preset}"
    with pytest.raises(OpError) as err:
        mm.load_sam()
    assert "python3 install.py --models sam" in err.value.message
    with pytest.raises(OpError) as err:
        mm.lora_file()
    assert "python3 install.py --models lcm-lora" in err.value.message


def test_missing_named_model_and_path(models_dir, tmp_path):
    mm = manager(models_dir)
    for ref in ("nothing-here", str(tmp_path / "gone.safetensors"), "./relative/gone"):
        with pytest.raises(OpError) as err:
            mm.load_pipeline("inpaint", ref)
        assert err.value.code == ErrorCode.MODEL_MISSING
        assert "install.py --models sd15-inpaint" in err.value.message


def test_truncated_weights_are_model_broken(tiny_inpaint_dir, models_dir):
    broken = copy_model(tiny_inpaint_dir, models_dir / "sd15-inpaint")
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(OpError) as err:
        manager(models_dir).load_pipeline("inpaint")
    assert err.value.code == ErrorCode.MODEL_BROKEN
    assert "python3 install.py --models sd15-inpaint" in err.value.message


def test_missing_component_and_unfinished_download_are_model_broken(tiny_inpaint_dir, models_dir):
    partial = copy_model(tiny_inpaint_dir, models_dir / "partial")
    shutil.rmtree(partial / "vae")
    mm = manager(models_dir)
    with pytest.raises(OpError) as err:
        mm.load_pipeline("inpaint", "partial")
    assert err.value.code == ErrorCode.MODEL_BROKEN
    not_pipeline = models_dir / "just-a-folder"
    not_pipeline.mkdir()
    with pytest.raises(OpError) as err:
        mm.load_pipeline("inpaint", "just-a-folder")
    assert err.value.code == ErrorCode.MODEL_BROKEN and "model_index.json" in err.value.message
    unfinished = copy_model(tiny_inpaint_dir, models_dir / "sd15-inpaint")
    (unfinished / INCOMPLETE_MARKER).write_text("x")
    with pytest.raises(OpError) as err:
        mm.load_pipeline("inpaint")
    assert (
        err.value.code == ErrorCode.MODEL_BROKEN and "install.py --models sd15-inpaint" in err.value.message
    )


def test_lru_eviction_by_memory_budget(tiny_inpaint_dir, models_dir):
    a = copy_model(tiny_inpaint_dir, models_dir / "a")
    b = copy_model(tiny_inpaint_dir, models_dir / "b")
    probe = manager(models_dir)
    size = (probe.load_pipeline("inpaint", a), probe.loaded_bytes)[1]
    mm = manager(models_dir, memory_budget_gb=1.5 * size / 1024**3)  # one model fits, two do not
    mm.load_pipeline("inpaint", a)
    mm.load_pipeline("inpaint", a)
    assert (mm.stats.loads, mm.stats.hits, mm.stats.evictions) == (1, 1, 0)
    mm.load_pipeline("inpaint", b)
    assert [k[1] for k in mm.loaded()] == [str(b.resolve())]
    mm.load_pipeline("inpaint", a)
    assert (mm.stats.loads, mm.stats.evictions) == (3, 2)
    big = manager(models_dir, memory_budget_gb=2.5 * size / 1024**3)  # both fit: the least recent goes next
    big.load_pipeline("inpaint", a)
    big.load_pipeline("inpaint", b)
    big.load_pipeline("inpaint", a)  # a is now the most recent
    c = copy_model(tiny_inpaint_dir, models_dir / "c")
    big.load_pipeline("inpaint", c)
    assert [Path(k[1]).name for k in big.loaded()] == ["a", "c"]
    assert big.loaded_bytes <= big.budget_bytes


def test_model_larger_than_budget_still_loads_alone(tiny_inpaint_dir, models_dir):
    mm = manager(models_dir, memory_budget_gb=1e-6)
    mm.load_pipeline("inpaint", tiny_inpaint_dir)
    assert len(mm.loaded()) == 1


def test_concurrent_loads_of_one_model_load_once(tiny_inpaint_dir, models_dir):
    mm = manager(models_dir)
    got: list = []
    threads = [
        threading.Thread(target=lambda: got.append(mm.load_pipeline("inpaint", tiny_inpaint_dir)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mm.stats.loads == 1 and len(got) == 3 and all(p is got[0] for p in got)


def test_device_and_dtype_choice(monkeypatch):
    monkeypatch.delenv("LAYEREDIT_DEVICE", raising=False)
    monkeypatch.delenv("LAYEREDIT_DTYPE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == "cpu"
    assert pick_dtype("cpu") == torch.float32
    assert pick_dtype("cuda") == torch.float16 and pick_dtype("mps") == torch.float16
    assert pick_dtype("cuda", "bf16") == torch.bfloat16
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device() == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == "cuda"
    monkeypatch.setenv("LAYEREDIT_DEVICE", "cpu")
    monkeypatch.setenv("LAYEREDIT_DTYPE", "fp16")
    assert pick_device() == "cpu" and pick_dtype("cpu") == torch.float16
    mm = ModelManager(device=None, dtype=None)
    assert (mm.device, mm.dtype) == ("cpu", torch.float16)


def test_bad_device_dtype_budget_are_bad_param(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for call in (
        lambda: pick_device("cuda"),
        lambda: pick_device("tpu"),
        lambda: pick_dtype("cpu", "int4"),
        lambda: default_budget_bytes("cpu", -1),
    ):
        with pytest.raises(OpError) as err:
            call()
        assert err.value.code == ErrorCode.BAD_PARAM
    monkeypatch.setenv("LAYEREDIT_MEMORY_GB", "3")
    assert default_budget_bytes("cpu") == 3 * 1024**3


def write_safetensors_header(path: Path, tensors: dict[str, list[int]]) -> Path:
    """A valid .safetensors with zero-filled tensors of the given shapes (enough for key sniffing)."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        n = 2
        for s in shape:
            n *= s
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(offset))
    return path


def test_single_file_without_local_config_is_missing_with_install_command(models_dir):
    ckpt = write_safetensors_header(
        models_dir / "my-inpaint.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": [8, 9, 3, 3]}
    )
    mm = manager(models_dir)
    assert mm.locate("inpaint", "my-inpaint").path == ckpt
    with pytest.raises(OpError) as err:
        mm.load_pipeline("inpaint", "my-inpaint")
    assert err.value.code == ErrorCode.MODEL_MISSING
    assert "python3 install.py --models sd15-inpaint-config" in err.value.message


def test_single_file_that_is_not_a_checkpoint_or_is_truncated(models_dir):
    lora = write_safetensors_header(models_dir / "lora.safetensors", {"lora_unet_down.alpha": [1]})
    mm = manager(models_dir)
    with pytest.raises(OpError) as err:
        mm.load_pipeline("inpaint", str(lora))
    assert err.value.code == ErrorCode.BAD_PARAM and "not a Stable Diffusion checkpoint" in err.value.message
    cut = models_dir / "cut.safetensors"
    cut.write_bytes(lora.read_bytes()[:-1])
    with pytest.raises(OpError) as err:
        mm.load_pipeline("inpaint", str(cut))
    assert err.value.code == ErrorCode.MODEL_BROKEN


def build_tiny_sam(folder: Path) -> Path:
    """A tiny random-weight transformers SAM folder (64 px input) saved like the real one."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    torch.manual_seed(0)
    cfg = SamConfig(
        vision_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            output_channels=16,
            image_size=64,
            patch_size=16,
            mlp_dim=64,
            global_attn_indexes=[1],
            window_size=2,
            num_pos_feats=8,
        ),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(
            hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32, iou_head_hidden_dim=16
        ),
    )
    SamModel(cfg).save_pretrained(folder)
    processor = SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
    SamProcessor(processor).save_pretrained(folder)
    return folder


def test_load_sam_from_preset_folder(models_dir):
    from transformers import SamModel

    build_tiny_sam(models_dir / "sam")
    mm = manager(models_dir)
    model, processor = mm.load_sam()
    assert isinstance(model, SamModel) and not model.training
    assert mm.load_sam("sam")[0] is model and mm.stats.loads == 1
    import numpy as np

    image = np.zeros((48, 40, 3), np.uint8)
    inputs = processor(images=image, input_boxes=[[[4.0, 4.0, 30.0, 40.0]]], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, multimask_output=False)
    assert out.pred_masks.shape[-2:] == (16, 16)


def test_lora_file_from_folder_or_file(models_dir):
    (models_dir / "lcm-lora").mkdir()
    write_safetensors_header(models_dir / "lcm-lora" / "pytorch_lora_weights.safetensors", {"x.alpha": [1]})
    mm = manager(models_dir)
    assert mm.lora_file() == models_dir / "lcm-lora" / "pytorch_lora_weights.safetensors"
    other = write_safetensors_header(models_dir / "other-lora.safetensors", {"x.alpha": [1]})
    assert mm.lora_file("other-lora") == other


def test_preset_layout_with_only_fp16_variant_files(tiny_inpaint_dir, models_dir):
    """What `install.py --models sd15-inpaint` leaves: *.fp16.safetensors only, loaded as fp32 on CPU."""
    from safetensors.torch import load_file, save_file

    folder = copy_model(tiny_inpaint_dir, models_dir / "sd15-inpaint")
    for weights in list(folder.rglob("*.safetensors")):
        half = {k: v.half() for k, v in load_file(str(weights)).items()}
        save_file(half, str(weights.with_name(weights.stem + ".fp16.safetensors")))
        weights.unlink()
    pipe = manager(models_dir).load_pipeline("inpaint")
    assert pipe.unet.dtype == torch.float32
    ref = manager(models_dir).load_pipeline("inpaint", tiny_inpaint_dir)
    w, r = pipe.unet.conv_in.weight, ref.unet.conv_in.weight
    assert torch.equal(w, r.half().float())  # the fp16 files' values, upcast

"""The learned erase fillers (LaMa, MI-GAN) on stand-in ONNX files of the same format and conventions, built
here: each model's input contract, padding, compositing in every pixel format, the op's errors, presets."""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.erase import EraseParams, ErasePipeline
from backend.erase.fill_diffusion import erase_model_fillers
from backend.erase.fill_learned import (
    LearnedFiller,
    installed_learned_fill,
    installed_learned_filler,
    learned_fill_order,
    learned_filler,
)
from backend.models import ModelManager
from backend.models.presets import INCOMPLETE_MARKER, PRESETS, Preset, PresetError, download
from backend.ops.base import JobCancelled, JobContext, OpError, OpInputs
from backend.ops.erase import FILL_METHODS, EraseOp
from protocol.errors import ErrorCode
from tests.learned_models import build_lama, build_migan

COLOUR = (0.2, 0.5, 0.8)  # distinct channels: a swapped RGB order or a wrong range shows


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("learned")
    return {
        "lama": build_lama(d / "lama.onnx"),
        "lama_colour": build_lama(d / "lama_colour.onnx", COLOUR),
        "lama_unit": build_lama(d / "lama_unit.onnx", COLOUR, scale=1.0),
        "lama_dynamic": build_lama(d / "lama_dynamic.onnx", COLOUR, dynamic_size=True),
        "migan": build_migan(d / "migan.onnx"),
        "migan_colour": build_migan(d / "migan_colour.onnx", COLOUR, echo_known=True),
    }


def session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def manager(models_dir: Path) -> ModelManager:
    return ModelManager(
        models_dir=models_dir, device="cpu", search_dirs=[], hf_cache_dir=models_dir / "no-hf"
    )


def install(models_dir: Path, name: str, src: Path) -> Path:
    """Put ``src`` where ``python3 install.py --models NAME`` puts the real file."""
    target = models_dir / name / PRESETS[name].allow_patterns[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    return target


def crop(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    hole = np.zeros((h, w), bool)
    hole[h // 4 : h // 2 + 3, w // 3 : w // 3 + max(3, w // 4)] = True
    return rgb, hole


@pytest.mark.parametrize("kind", ["lama_colour", "lama_unit", "lama_dynamic", "migan_colour"])
@pytest.mark.parametrize("size", [(512, 384), (136, 512), (200, 120), (37, 53)])
def test_contract_hole_gets_the_prediction_known_pixels_the_input(files, kind, size):
    """Channel order, value ranges and which mask value means "fill", for each model's own convention; crops
    of any size are padded to what the file takes and cut back."""
    name = kind.split("_")[0]
    filler = LearnedFiller(name, session(files[kind]))
    rgb, hole = crop(*size)
    out = filler(rgb, hole)
    assert out.shape == (*size, 3) and out.dtype == np.float32
    assert np.allclose(out[hole], COLOUR, atol=1e-5)
    # the stand-ins hand back the known pixels: the image went in as [0,1] (LaMa) or [-1,1] (MI-GAN), RGB
    assert np.allclose(out[~hole], rgb[~hole] / 255.0, atol=1e-5)


def test_fixed_size_file_is_fed_512_and_dynamic_one_multiples_of_8(files):
    assert LearnedFiller("lama", session(files["lama"])).io.frame.size_for(200, 120) == (512, 512)
    assert LearnedFiller("migan", session(files["migan"])).io.frame.size_for(37, 53) == (512, 512)
    dynamic = LearnedFiller("lama", session(files["lama_dynamic"]))
    assert dynamic.io.frame.size_for(200, 121) == (200, 128)
    assert dynamic.target == 512 and 0 < dynamic.context < 1


class _Shaped:
    """An onnxruntime session as far as the contracts look at one: its inputs' and outputs' shapes."""

    def __init__(self, inputs: list[tuple[str, list]], out: list):
        from types import SimpleNamespace

        self._inputs = [SimpleNamespace(name=n, shape=s, type="tensor(float)") for n, s in inputs]
        self._outputs = [SimpleNamespace(name="out", shape=out, type="tensor(float)")]

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs


def test_declared_capabilities_decide_what_the_file_leaves_open():
    """Each model declares its native side, pad rule and whether it runs only at its native size (as IOPaint's
    model classes do); a file's own fixed size wins where it has one, and breaking the pad rule is MODEL_BROKEN."""
    dyn = ["b", 3, "h", "w"]
    migan = LearnedFiller("migan", _Shaped([("x", ["b", 4, "h", "w"])], dyn))  # a dynamic MI-GAN export
    assert migan.io.fixed_size and migan.io.frame.size_for(100, 60) == (512, 512)
    lama = LearnedFiller("lama", _Shaped([("image", dyn), ("mask", ["b", 1, "h", "w"])], dyn))
    assert not lama.io.fixed_size and lama.io.frame.size_for(100, 60) == (104, 64)
    assert (migan.target, migan.min_crop) == (lama.target, lama.min_crop) == (512, 512)
    with pytest.raises(OpError) as err:
        LearnedFiller("lama", _Shaped([("image", [1, 3, 500, 500]), ("mask", [1, 1, 500, 500])], dyn))
    assert err.value.code == ErrorCode.MODEL_BROKEN and "multiple of 8" in err.value.message


def test_real_lama_layer_types_load_and_run(tmp_path):
    """big-lama's own layer types at a tiny width, Fourier convolutions exported as ONNX DFT ops like Carve's
    file: the loader opens it, reads the 0..255 output off the known pixels and returns the crop in [0, 1]."""
    from bench.learned_arch import export_lama

    export_lama(tmp_path / "lama" / "lama_fp32.onnx", ngf=8, n_blocks=1)
    filler = learned_filler("lama", manager(tmp_path))
    rgb, hole = crop(200, 120)
    out = filler(rgb, hole)
    assert out.shape == (200, 120, 3) and np.isfinite(out).all()
    assert np.allclose(out[~hole], rgb[~hole] / 255.0, atol=1e-4)
    assert out[hole].min() >= 0 and out[hole].max() <= 1 and out[hole].std() > 0


def test_bigger_crop_than_the_model_takes_is_shrunk_and_restored(files):
    filler = LearnedFiller("migan", session(files["migan_colour"]))
    rgb, hole = crop(600, 700)
    out = filler(rgb, hole)
    assert out.shape == (600, 700, 3)
    inner = np.zeros_like(hole)
    inner[160:300, 240:400] = True  # well inside the hole, away from the resized edge
    assert np.allclose(out[inner & hole], COLOUR, atol=1e-3)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
@pytest.mark.parametrize("name", ["lama", "migan"])
def test_random_weight_model_through_erase_is_exact_outside(files, name, dtype):
    """Odd layer size, object off-centre near a border: the fill lands only inside the edit region."""
    rng = np.random.default_rng(1)
    h, w = 301, 437
    base = rng.random((h, w, 4)).astype(np.float32)
    image = {
        np.uint8: (base * 255).round().astype(np.uint8),
        np.uint16: (base * 65535).round().astype(np.uint16),
    }.get(dtype, base.astype(dtype))
    selection = np.zeros((h, w), np.float32)
    selection[7:61, 380:431] = 1.0
    filler = LearnedFiller(name, session(files[name]))
    out = ErasePipeline(snapper=None, fillers={name: filler})(image, selection, EraseParams(fill=name))
    assert out.image.dtype == image.dtype and out.image.shape == image.shape
    assert out.meta["fill"] == name and max(out.meta["model_size"]) == 512
    edited = out.mask > 0
    assert out.image[~edited].tobytes() == image[~edited].tobytes()
    # a see-through layer's alpha is filled too (by PatchMatch, test_erase_alpha.py), only inside the edit
    assert (out.image[edited, 3] != image[edited, 3]).any()
    assert (out.image[selection > 0] != image[selection > 0]).any()


@pytest.mark.parametrize("name", ["lama", "migan"])
def test_cancel_stops_the_model_call(files, name):
    """A cancelled job's flag reaches onnxruntime's terminate flag: JobCancelled, not model_broken; the same
    filler runs normally once the flag is down."""
    flag = {"cancel": True}
    filler = LearnedFiller(name, session(files[name]), cancelled=lambda: flag["cancel"])
    rgb, hole = crop(64, 80)
    with pytest.raises(JobCancelled):
        filler(rgb, hole)
    flag["cancel"] = False
    assert filler(rgb, hole).shape == (64, 80, 3)


class _Recording:
    """A real onnxruntime session that keeps the feeds it was given."""

    def __init__(self, inner):
        self.inner, self.feeds = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run(self, names, feeds, options=None):
        self.feeds.append(feeds)
        return self.inner.run(names, feeds, options)


@pytest.mark.parametrize("name", ["lama", "migan"])
def test_a_small_crop_is_framed_by_its_own_mirror_image_not_black(files, name):
    """A fixed 512 px model fed a 120x90 crop: the rest of its frame holds the crop's own colours (mirrored),
    and a hole that reaches the crop's edge reaches into that frame, so the network never sees a black border
    as the hole's surroundings."""
    recorder = _Recording(session(files[name]))
    rgb = np.empty((120, 90, 3), np.uint8)
    rgb[...] = (200, 120, 40)
    rgb[:, :30] = (30, 160, 220)
    hole = np.zeros((120, 90), bool)
    hole[50:70, 60:90] = True  # touches the crop's right edge
    LearnedFiller(name, recorder)(rgb, hole)
    (feed,) = recorder.feeds[0].values() if name == "migan" else [recorder.feeds[0]]
    if name == "lama":
        image, mask = (v[0] for v in sorted(feed.values(), key=lambda v: -v.shape[1]))
        known = 1 - mask[0]
        seen = image * 255  # already zero inside the hole
    else:
        known = feed[0, 0] + 0.5
        seen = (feed[0, 1:] + 1) * 127.5 * known
    frame = known.astype(bool).copy()
    frame[:120, :90] = False  # the padding only
    got = np.rint(seen[:, frame]).T
    colours = {tuple(c) for c in np.unique(got, axis=0)}
    assert colours <= {(200, 120, 40), (30, 160, 220)}, "the padding holds colours that are not the crop's"
    beyond = known[:, 90:].astype(bool)
    assert not beyond[50:70, :30].any() and beyond[:50].all()  # the hole is mirrored past the edge too


def test_small_object_gets_real_surroundings_not_an_upscaled_crop(files):
    """A 30 px object in a big layer: the model sees a 512 px window of the photo at its own resolution."""
    image = np.random.default_rng(2).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    selection = np.zeros((1500, 2000), np.float32)
    selection[700:730, 1200:1225] = 1.0
    filler = LearnedFiller("lama", session(files["lama"]))
    out = ErasePipeline(snapper=None, fillers={"lama": filler})(image, selection, EraseParams(fill="lama"))
    x0, y0, x1, y1 = out.meta["crop"]
    mw, mh = out.meta["model_size"]
    assert max(x1 - x0, y1 - y0) >= 512 and abs(mw - (x1 - x0)) < 8 and abs(mh - (y1 - y0)) < 8  # scale ~1
    edited = out.mask > 0
    assert out.image[~edited].tobytes() == image[~edited].tobytes()
    # near a corner the window slides inward instead of shrinking
    corner = np.zeros_like(selection)
    corner[3:33, 1960:1990] = 1.0
    out = ErasePipeline(snapper=None, fillers={"lama": filler})(image, corner, EraseParams(fill="lama"))
    x0, y0, x1, y1 = out.meta["crop"]
    assert (x1, y0) == (2000, 0) and max(x1 - x0, y1 - y0) >= 512


def test_op_runs_the_installed_model_and_says_so(files, tmp_path):
    models = manager(tmp_path)
    install(tmp_path, "migan", files["migan_colour"])
    image, selection = crop(120, 160)
    sel = selection.astype(np.float32)
    params = EraseOp.spec.validate({"fill": "migan", "snap": False, "grow": 0, "feather": 0})
    res = EraseOp().run(OpInputs(image, sel), params, JobContext(models=models))
    assert res.meta["fill"] == "migan"
    json.dumps(res.meta)
    # the crop went to the model at 512 px and came back: the hole's 1-px rim is resampled, its inside exact
    inner = cv2.erode(selection.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert np.abs(res.image[inner].astype(int) - np.array(COLOUR) * 255).max() <= 1
    assert res.image[~selection].tobytes() == image[~selection].tobytes()
    # the session is cached across jobs, like the pipelines
    EraseOp().run(OpInputs(image, sel), params, JobContext(models=models))
    assert models.stats.loads == 1 and models.stats.hits >= 1


def test_auto_takes_the_installed_learned_fill(files, tmp_path):
    """The op's default fill on a CPU: MI-GAN when installed, else LaMa, else the embedded completion (big-lama
    is ~8x slower per crop on a CPU); meta says which."""
    image, selection = crop(120, 160)
    sel = selection.astype(np.float32)
    params = EraseOp.spec.validate({"snap": False})
    assert params["fill"] == "auto"

    def ran() -> str:
        res = EraseOp().run(OpInputs(image, sel), params, JobContext(models=manager(tmp_path)))
        assert res.meta["fill_requested"] == "auto"
        assert res.image[res.mask == 0].tobytes() == image[res.mask == 0].tobytes()
        return res.meta["fill"]

    assert ran() == "patchmatch"
    install(tmp_path, "lama", files["lama_colour"])
    assert ran() == "lama"
    install(tmp_path, "migan", files["migan_colour"])
    assert ran() == "migan"  # both installed, on a CPU: the fast one


@pytest.mark.parametrize("name", ["lama", "migan"])
def test_missing_model_names_the_install_command(tmp_path, name):
    assert name in FILL_METHODS
    image, selection = crop(64, 64)
    params = EraseOp.spec.validate({"fill": name, "snap": False})
    with pytest.raises(OpError) as err:
        EraseOp().run(
            OpInputs(image, selection.astype(np.float32)), params, JobContext(models=manager(tmp_path))
        )
    assert err.value.code == ErrorCode.MODEL_MISSING
    assert f"python3 install.py --models {name}" in err.value.message


def test_broken_files_are_model_broken(files, tmp_path):
    models = manager(tmp_path)
    target = install(tmp_path, "lama", files["lama"])
    target.write_bytes(b"\x08\x01garbage, not a protobuf")
    with pytest.raises(OpError) as err:
        learned_filler("lama", models)
    assert err.value.code == ErrorCode.MODEL_BROKEN and "install.py --models lama" in err.value.message

    shutil.copyfile(files["migan"], target)  # a valid ONNX file, but not LaMa's inputs
    with pytest.raises(OpError) as err:
        learned_filler("lama", manager(tmp_path))
    assert err.value.code == ErrorCode.MODEL_BROKEN and "image[1,3,512,512]" in err.value.message

    install(tmp_path, "migan", files["lama"])
    with pytest.raises(OpError) as err:
        erase_model_fillers("migan", manager(tmp_path))
    assert err.value.code == ErrorCode.MODEL_BROKEN and "install.py --models migan" in err.value.message


def test_cut_short_download_is_model_broken_not_missing(tmp_path):
    (tmp_path / "lama").mkdir()
    (tmp_path / "lama" / INCOMPLETE_MARKER).write_text("started")
    with pytest.raises(OpError) as err:
        learned_filler("lama", manager(tmp_path))
    assert err.value.code == ErrorCode.MODEL_BROKEN
    (tmp_path / "lama" / INCOMPLETE_MARKER).unlink()  # folder there, file gone
    with pytest.raises(OpError) as err:
        learned_filler("lama", manager(tmp_path))
    assert err.value.code == ErrorCode.MODEL_BROKEN and "install.py --models lama" in err.value.message


def test_hf_cache_snapshot_without_the_file_is_not_an_install(files, tmp_path):
    """A user's Hugging Face cache may hold the repository's README only: that is "missing", not "broken"."""
    cache = tmp_path / "hf"
    snap = cache / "models--Carve--LaMa-ONNX" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "README.md").write_text("LaMa")
    (cache / "models--Carve--LaMa-ONNX" / "refs").mkdir()
    (cache / "models--Carve--LaMa-ONNX" / "refs" / "main").write_text("abc123")
    models = ModelManager(models_dir=tmp_path / "m", device="cpu", search_dirs=[], hf_cache_dir=cache)
    assert models.locate("lama").path == snap
    assert installed_learned_fill(models) is None
    with pytest.raises(OpError) as err:
        learned_filler("lama", models)
    assert err.value.code == ErrorCode.MODEL_MISSING and "install.py --models lama" in err.value.message
    shutil.copyfile(files["lama"], snap / "lama_fp32.onnx")  # the file in the cache: used as it is
    assert installed_learned_filler(models).name == "lama"


def test_installed_learned_filler_for_auto(files, tmp_path):
    assert installed_learned_fill(None) is None
    models = manager(tmp_path)
    assert installed_learned_fill(models) is None and installed_learned_filler(models) is None
    install(tmp_path, "migan", files["migan"])
    models = manager(tmp_path)
    assert installed_learned_fill(models) == "migan"
    assert models.stats.loads == 0 and not models.loaded()  # asking is free: nothing was loaded
    install(tmp_path, "lama", files["lama"])
    models = manager(tmp_path)
    filler = installed_learned_filler(models)
    assert filler is not None and filler.name == "migan" and filler.target == 512  # MI-GAN first on a CPU
    assert models.available()["lama"] and models.available()["migan"]
    (tmp_path / "migan" / "migan.onnx").write_bytes(b"broken")
    with pytest.raises(OpError) as err:  # installed but damaged: said, not silently replaced
        installed_learned_filler(manager(tmp_path))
    assert err.value.code == ErrorCode.MODEL_BROKEN


def test_learned_fill_order_is_migan_first_on_a_cpu_lama_first_on_a_gpu(files, tmp_path, monkeypatch):
    """LaMa first only where onnxruntime really runs on the GPU: a cuda manager whose onnxruntime has no CUDA
    provider (install.py installs the CPU build) still runs the models on the CPU, so MI-GAN goes first."""
    import onnxruntime as ort

    install(tmp_path, "lama", files["lama"])
    install(tmp_path, "migan", files["migan"])
    cpu = manager(tmp_path)
    assert learned_fill_order(cpu) == ("migan", "lama") and installed_learned_fill(cpu) == "migan"

    class OnCuda:  # what the op asks of a manager: its device and where a model's file is
        device = "cuda:0"
        onnx_file = cpu.onnx_file

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert learned_fill_order(OnCuda()) == ("migan", "lama")
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert learned_fill_order(OnCuda()) == ("lama", "migan") and installed_learned_fill(OnCuda()) == "lama"
    schema = {p.name: p for p in EraseOp.spec.params}["fill"]
    assert "migan before lama" in schema.help and "on a CPU" in schema.help


class FakeHub:
    """huggingface_hub.snapshot_download serving ``files`` (name -> bytes) filtered by allow_patterns."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.calls: list[dict] = []

    def __call__(self, repo_id, allow_patterns=None, local_dir=None, **kw):
        self.calls.append({"repo_id": repo_id, "allow_patterns": allow_patterns, **kw})
        for name, data in self.files.items():
            if allow_patterns is None or any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                (Path(local_dir) / name).write_bytes(data)
        return local_dir


def test_presets_fetch_one_pinned_file_and_check_its_hash(monkeypatch, tmp_path):
    import huggingface_hub

    hub = FakeHub(
        {"lama_fp32.onnx": b"not the real file", "migan.onnx": b"m", "migan_pipeline_v2.onnx": b"p"}
    )
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    assert (
        PRESETS["lama"].repo_id == "Carve/LaMa-ONNX" and PRESETS["migan"].repo_id == "andraniksargsyan/migan"
    )
    with pytest.raises(PresetError, match="SHA-256") as err:
        download("lama", tmp_path, progress=False)
    assert "python3 install.py --models lama" in str(err.value)
    assert (tmp_path / "lama" / INCOMPLETE_MARKER).exists()  # so the backend says model_broken
    assert hub.calls[0]["revision"] == PRESETS["lama"].revision

    folder = download("migan", tmp_path, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["migan.onnx"]  # not the pipeline variant
    assert hub.calls[-1]["revision"] == PRESETS["migan"].revision

    import hashlib

    ok = Preset(
        "ok",
        "lama",
        "x/y",
        "test",
        ("lama_fp32.onnx",),
        sha256=(("lama_fp32.onnx", hashlib.sha256(b"not the real file").hexdigest()),),
    )
    assert download(ok, tmp_path, progress=False) == tmp_path / "ok"
    assert not (tmp_path / "ok" / INCOMPLETE_MARKER).exists()

"""Install-time presets: what gets downloaded where (snapshot_download monkeypatched), and the offline error."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from backend.models import presets
from backend.models.presets import INCOMPLETE_MARKER, PRESETS, PresetError, download


class FakeHub:
    """Stands in for huggingface_hub.snapshot_download: 'serves' a file list filtered by allow_patterns."""

    def __init__(self, files: list[str]):
        self.files = files
        self.calls: list[dict] = []

    def __call__(self, repo_id, allow_patterns=None, local_dir=None, **kw):
        self.calls.append({"repo_id": repo_id, "allow_patterns": allow_patterns, "local_dir": local_dir})
        for name in self.files:
            if allow_patterns is None or any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                target = Path(local_dir) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(b"x")
        return local_dir


SD_REPO_FILES = [
    "model_index.json",
    "README.md",
    "v1-5-pruned.ckpt",
    "safety_checker/config.json",
    "safety_checker/model.safetensors",
    "feature_extractor/preprocessor_config.json",
    "scheduler/scheduler_config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder/model.fp16.safetensors",
    "text_encoder/pytorch_model.bin",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.bin",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.fp16.safetensors",
]


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub

    fake = FakeHub(SD_REPO_FILES)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    return fake


def test_presets_cover_what_the_backend_loads():
    for name in ("erase", "sd15-inpaint", "sam", "lcm-lora", "sd15"):
        assert name in PRESETS
    assert PRESETS["sd15-inpaint"].repo_id == "stable-diffusion-v1-5/stable-diffusion-inpainting"
    assert PRESETS["lcm-lora"].repo_id == "latent-consistency/lcm-lora-sdv1-5"


def test_sd_preset_fetches_only_fp16_weights_into_models_dir(hub, tmp_path):
    folder = download("sd15-inpaint", tmp_path, progress=False)
    assert folder == tmp_path / "sd15-inpaint"
    assert hub.calls[0]["repo_id"] == "stable-diffusion-v1-5/stable-diffusion-inpainting"
    got = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in got
    assert not [
        g for g in got if g.endswith((".bin", ".ckpt")) or "safety_checker" in g or "feature_extractor" in g
    ]
    assert "unet/diffusion_pytorch_model.safetensors" not in got  # no fp32 duplicate
    assert not (folder / INCOMPLETE_MARKER).exists()


def test_fallback_to_plain_safetensors_when_repo_has_no_fp16(monkeypatch, tmp_path):
    import huggingface_hub

    fake = FakeHub([f for f in SD_REPO_FILES if ".fp16." not in f])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    folder = download("sd15", tmp_path, progress=False)
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert len(fake.calls) == 2 and not (folder / INCOMPLETE_MARKER).exists()


def test_config_preset_fetches_no_weights(hub, tmp_path):
    folder = download("sd15-inpaint-config", tmp_path, progress=False)
    got = [p for p in folder.rglob("*") if p.is_file()]
    assert got and not [p for p in got if p.suffix in (".safetensors", ".bin", ".ckpt")]
    assert (folder / "model_index.json").is_file() and (folder / "tokenizer" / "vocab.json").is_file()


def test_no_network_fails_clearly_and_leaves_marker(monkeypatch, tmp_path):
    import huggingface_hub

    def offline(*a, **kw):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(PresetError) as err:
        download("lcm-lora", tmp_path, progress=False)
    msg = str(err.value)
    assert "lcm-lora" in msg and "latent-consistency/lcm-lora-sdv1-5" in msg
    assert "python3 install.py --models lcm-lora" in msg and "huggingface.co" in msg
    assert (
        tmp_path / "lcm-lora" / INCOMPLETE_MARKER
    ).exists()  # the backend reports model_broken, not garbage


def test_real_snapshot_download_offline_gives_preset_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never reaches the network; huggingface_hub refuses by itself
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PresetError) as err:
        download("sam", tmp_path, progress=False)
    assert "HF_HUB_OFFLINE" in str(err.value)


def test_erase_preset_verifies_embedded_u2netp(tmp_path):
    path = download("erase", tmp_path)
    assert path.name == "u2netp.onnx" and path.stat().st_size > 1_000_000


def test_unknown_preset(tmp_path):
    with pytest.raises(PresetError, match="choose from"):
        download("sd99", tmp_path)


def test_main_entry_downloads_and_reports(hub, tmp_path, capsys):
    assert presets.main(["sd15-inpaint", "--dir", str(tmp_path), "--quiet"]) == 0
    assert "ready at" in capsys.readouterr().out
    assert presets.main(["nope", "--dir", str(tmp_path)]) == 1
    assert "Unknown model preset" in capsys.readouterr().err
    assert presets.main(["--list"]) == 0
    assert "sd15-inpaint" in capsys.readouterr().out


def test_module_entry_point_as_install_py_calls_it(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the user's own offline switch: kept, and named in the error
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "backend.models.presets"]
    ok = subprocess.run(
        [*cmd, "erase", "--dir", str(tmp_path)], cwd=root, env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert "u2netp.onnx" in ok.stdout
    bad = subprocess.run(
        [*cmd, "sam", "--dir", str(tmp_path), "--quiet"], cwd=root, env=env, capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert "python3 install.py --models sam" in bad.stderr and "HF_HUB_OFFLINE" in bad.stderr

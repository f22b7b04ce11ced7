"""ModelManager: load weights offline, keep them across jobs, evict least-recently-used by a memory budget.

One manager per backend process; the job worker of each device calls it (a lock makes it thread-safe).
Loading never downloads: diffusers/transformers get ``local_files_only=True`` and a local config folder.
"""

from __future__ import annotations

import gc
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import ErrorCode

from .checkpoint import ARCHITECTURES, family, folder_architecture, sniff_architecture
from .device import default_budget_bytes, pick_device, pick_dtype
from .locate import Location, Locator, default_hf_cache, extra_model_dirs, model_error
from .presets import (
    DEFAULT_PRESET,
    INCOMPLETE_MARKER,
    PRESETS,
    SAM_AUTO_ORDER,
    default_models_dir,
    install_command,
)

PIPELINE_KINDS = ("inpaint", "text2img")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx")


@dataclass
class _Entry:
    value: Any
    nbytes: int


@dataclass
class LoadStats:
    """Counters for logs, `hello` and tests: how often weights were read from disk, reused, evicted."""

    loads: int = 0
    hits: int = 0
    evictions: int = 0


def module_bytes(obj: Any) -> int:
    """Bytes of parameters and buffers of every torch module in ``obj`` (a pipeline, a model, a tuple)."""
    import torch

    modules: list[torch.nn.Module] = []
    if isinstance(obj, torch.nn.Module):
        modules = [obj]
    elif isinstance(obj, tuple | list):
        modules = [m for m in obj if isinstance(m, torch.nn.Module)]
    elif hasattr(obj, "components"):
        modules = [m for m in obj.components.values() if isinstance(m, torch.nn.Module)]
    seen: set[int] = set()
    total = 0
    for module in modules:
        for t in [*module.parameters(), *module.buffers()]:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


class ModelManager:
    """Finds, loads and caches models. ``device``/``dtype``/``memory_budget_gb`` default from the machine
    and the LAYEREDIT_DEVICE / LAYEREDIT_DTYPE / LAYEREDIT_MEMORY_GB environment variables."""

    def __init__(
        self,
        models_dir: str | os.PathLike | None = None,
        device: str | None = None,
        dtype: Any = None,
        memory_budget_gb: float | None = None,
        *,
        search_dirs: list[str | os.PathLike] | None = None,
        hf_cache_dir: str | os.PathLike | None = None,
    ):
        self.models_dir = Path(models_dir).expanduser() if models_dir else default_models_dir()
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.budget_bytes = default_budget_bytes(self.device, memory_budget_gb)
        dirs = [Path(d).expanduser() for d in search_dirs] if search_dirs is not None else extra_model_dirs()
        cache = Path(hf_cache_dir) if hf_cache_dir is not None else default_hf_cache()
        self._locator = Locator(self.models_dir, dirs, cache)
        self._cache: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.RLock()
        self._architectures: dict[tuple[str, int], str] = {}  # (location key, mtime) -> architecture
        self.stats = LoadStats()

    # ---- finding -------------------------------------------------------------------------------------------
    def locate(self, kind: str, ref: str | os.PathLike | None = None) -> Location:
        """Where ``ref`` (or the kind's default preset) lives; OpError(MODEL_MISSING) if nowhere."""
        return self._locator.find(kind, ref)

    def architecture(self, kind: str, ref: str | os.PathLike | None = None) -> str:
        """What ``ref`` (or the kind's default) is: "sd15", "sd2", "sdxl", with "-inpaint" for inpainting
        models (``checkpoint.family`` strips it). Read from the files (a checkpoint's header, a folder's
        configs), never by loading; the ops decide SDXL and LCM-LoRA support from this, not from the pipeline."""
        loc = self.locate(kind, ref)
        key = (loc.key, loc.path.stat().st_mtime_ns)  # a file copied over the old one is read again
        with self._lock:
            if key not in self._architectures:
                read = sniff_architecture if loc.form == "file" else folder_architecture
                self._architectures[key] = read(loc.path)
            return self._architectures[key]

    def require_family(
        self, kind: str, ref: str | os.PathLike | None, families: tuple[str, ...], message: str, param: str
    ) -> str:
        """``architecture(kind, ref)`` when its family is one of ``families``, else BAD_PARAM with ``message``
        naming ``param`` (what the user should change): an op refuses a model it cannot use before loading it."""
        arch = self.architecture(kind, ref)
        if family(arch) not in families:
            raise model_error(ErrorCode.BAD_PARAM, message, param=param)
        return arch

    def has_model(self, kind: str, ref: str | os.PathLike | None = None) -> bool:
        """True when ``locate`` would succeed (used e.g. by erase's "auto" filler choice)."""
        from backend.errors import OpError

        try:
            self.locate(kind, ref)
        except OpError:
            return False
        return True

    def available(self) -> dict[str, bool]:
        """Which default models are installed, by kind (for `hello`, host UIs and erase's "auto" fill).
        ``sam`` is true when any segment-anything preset is (snapping uses whichever is: SAM_AUTO_ORDER)."""
        found = {kind: self.has_model(kind) for kind in DEFAULT_PRESET}
        found["sam"] = any(self.has_model("sam", name) for name in SAM_AUTO_ORDER)
        return found

    def preset_installed(self, name: str) -> bool:
        """True when ``install.py --models NAME`` has been run to the end (or the files are where it puts them,
        in an extra models folder, or in the Hugging Face cache). File checks only; nothing is loaded."""
        preset = PRESETS.get(name)
        if preset is None:
            return False
        if preset.embedded is not None:
            try:
                return preset.embedded().is_file()
            except Exception:  # noqa: BLE001 - a broken venv: not installed, whatever went wrong
                return False
        found = self._locator.find_by_name(name)
        if found is None and preset.repo_id:
            found = self._locator.find_in_cache(preset.repo_id)
        if found is None:
            return False
        return not (found.form == "folder" and (found.path / INCOMPLETE_MARKER).exists())

    def installed_presets(self) -> dict[str, bool]:
        """Every install preset -> installed (``hello`` advertises it: hosts say what to install, and how)."""
        return {name: self.preset_installed(name) for name in PRESETS}

    def lora_file(self, ref: str | os.PathLike | None = None, preset: str = "lcm-lora") -> Path:
        """The .safetensors file of a LoRA: ``ref`` (a file, or a folder holding one) or the preset's."""
        loc = self.locate(preset, ref)
        if loc.form == "file":
            return loc.path
        files = sorted(loc.path.glob("*.safetensors"))
        if not files:
            raise model_error(
                ErrorCode.MODEL_BROKEN,
                f"{loc.path} holds no .safetensors LoRA file. Reinstall it with: {install_command(preset)}",
                model=loc.label,
            )
        return files[0]

    # ---- loading -------------------------------------------------------------------------------------------
    def load_pipeline(self, kind: str, ref: str | os.PathLike | None = None):
        """A diffusers pipeline for ``kind`` ("inpaint": SD/SDXL inpainting, "text2img": SD text-to-image)."""
        if kind not in PIPELINE_KINDS:
            raise ValueError(f"kind must be one of {PIPELINE_KINDS}, got {kind!r}")
        loc = self.locate(kind, ref)
        return self._cached((kind, loc.key), lambda: self._load_pipeline(kind, loc), loc)

    def load_sam(self, ref: str | os.PathLike | None = None):
        """(model, processor) of a segment-anything model from a local transformers folder, on this manager's
        device: SAM (SamModel + SamProcessor), SAM-HQ (SamHQModel + SamHQProcessor) or SAM 2.1 (Sam2Model +
        our torchvision-free Sam2Prompts), chosen by the folder's config.json. ``ref``: a preset name such as
        ``sam2.1-tiny`` (see presets.SAM_AUTO_ORDER), a folder, or a repo id in the HF cache."""
        loc = self.locate("sam", ref)
        return self._cached(("sam", loc.key), lambda: self._load_sam(loc), loc)

    def onnx_file(self, kind: str, ref: str | os.PathLike | None = None) -> Path:
        """The .onnx file of ``kind`` (e.g. "lama"): MODEL_MISSING with the install command when not installed,
        MODEL_BROKEN when its folder holds no .onnx file (a download cut short, a file deleted by hand)."""
        return self._onnx_in(self.locate(kind, ref), kind)

    def load_onnx(self, kind: str, ref: str | os.PathLike | None = None):
        """An onnxruntime InferenceSession for ``kind``'s .onnx file, cached across jobs like the pipelines
        (counted in the memory budget by its file size). CUDA when this manager runs on a GPU and the
        installed onnxruntime has it, else the CPU. A file onnxruntime cannot read is MODEL_BROKEN."""
        loc = self.locate(kind, ref)
        path = self._onnx_in(loc, kind)
        key = (kind, str(path.resolve()))
        return self._cached(key, lambda: self._load_onnx(path), loc, nbytes=path.stat().st_size)

    def loaded(self) -> list[tuple[str, str]]:
        """Cache keys, least recently used first."""
        with self._lock:
            return list(self._cache)

    @property
    def loaded_bytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._cache.values())

    def evict_all(self) -> None:
        with self._lock:
            while self._cache:
                self._evict_oldest()

    # ---- internals -----------------------------------------------------------------------------------------
    def _cached(
        self, key: tuple[str, str], load: Callable[[], Any], loc: Location, nbytes: int | None = None
    ) -> Any:
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None:
                self._cache.move_to_end(key)
                self.stats.hits += 1
                return entry.value
            self._make_room(_disk_bytes(loc.path), keep=None)
            value = self._guarded(load, loc)
            entry = _Entry(value, module_bytes(value) if nbytes is None else nbytes)
            self._cache[key] = entry
            self.stats.loads += 1
            self._make_room(0, keep=key)
            return value

    def _make_room(self, incoming: int, keep: tuple[str, str] | None) -> None:
        """Evict least-recently-used entries until the budget holds ``incoming`` more bytes (never ``keep``)."""
        while self._cache:
            total = sum(e.nbytes for e in self._cache.values())
            if total + incoming <= self.budget_bytes:
                return
            oldest = next(iter(self._cache))
            if oldest == keep:
                return  # the model just loaded is larger than the budget on its own: keep it, alone
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        self._cache.popitem(last=False)
        self.stats.evictions += 1
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def _guarded(self, load: Callable[[], Any], loc: Location) -> Any:
        """Turn the many ways loading can fail into MODEL_BROKEN / OUT_OF_MEMORY with advice."""
        from backend.errors import OpError, is_out_of_memory, out_of_memory_error

        try:
            return load()
        except OpError:
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                advice = (
                    f"Not enough memory to load {loc.label} on {self.device}. Close other GPU programs, "
                    "or set LAYEREDIT_MEMORY_GB lower so fewer models stay loaded."
                )
                raise out_of_memory_error(exc, advice, model=str(loc.label)) from exc
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise model_error(
                ErrorCode.MODEL_BROKEN,
                f"Model {loc.label} at {loc.path} could not be loaded ({type(exc).__name__}: {first[:300]}). "
                f"Its files are damaged or incomplete; {_reinstall_hint(loc)}",
                model=loc.label,
            ) from exc

    def _load_pipeline(self, kind: str, loc: Location):
        _quiet_progress_bars()
        pipe = self._load_single_file(kind, loc) if loc.form == "file" else self._load_folder(kind, loc)
        if not self.device.startswith("cpu"):
            pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _load_folder(self, kind: str, loc: Location):
        from diffusers import AutoPipelineForInpainting, AutoPipelineForText2Image

        index_file = loc.path / "model_index.json"
        if not index_file.is_file():
            raise model_error(
                ErrorCode.MODEL_BROKEN,
                f"{loc.path} is not a diffusers pipeline folder (no model_index.json). Point at the folder that "
                f"holds model_index.json, or at a .safetensors checkpoint. {_reinstall_hint(loc)}",
                model=loc.label,
            )
        index = json.loads(index_file.read_text())
        _check_unet_fits(kind, _unet_in_channels(loc.path), loc)
        kwargs: dict[str, Any] = {"dtype": self.dtype, "local_files_only": True}
        if "safety_checker" in index:
            kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        if _has_only_fp16_variant(loc.path):
            kwargs["variant"] = "fp16"
        cls = AutoPipelineForInpainting if kind == "inpaint" else AutoPipelineForText2Image
        return cls.from_pretrained(str(loc.path), **kwargs)

    def _load_single_file(self, kind: str, loc: Location):
        import diffusers

        arch = sniff_architecture(loc.path)
        _check_unet_fits(kind, 9 if arch.endswith("inpaint") else 4, loc)
        config = self._config_folder(arch, loc)
        xl = arch.startswith("sdxl")
        name = {
            ("inpaint", False): "StableDiffusionInpaintPipeline",
            ("inpaint", True): "StableDiffusionXLInpaintPipeline",
            ("text2img", False): "StableDiffusionPipeline",
            ("text2img", True): "StableDiffusionXLPipeline",
        }[(kind, xl)]
        kwargs: dict[str, Any] = {"dtype": self.dtype, "local_files_only": True, "config": str(config)}
        if not xl:
            kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        return getattr(diffusers, name).from_single_file(str(loc.path), **kwargs)

    def _config_folder(self, arch: str, loc: Location) -> Path:
        """A local diffusers folder with configs of ``arch``: next to the checkpoint, a config preset, the
        same-shaped weights preset, or the HF cache. Without one, offline loading cannot work."""
        label, config_preset, weights_preset = ARCHITECTURES[arch]
        beside = [loc.path.with_suffix(""), loc.path.with_name(loc.path.stem + ".config")]
        for folder in beside:
            if (folder / "model_index.json").is_file():
                return folder
        for preset in (config_preset, weights_preset):
            if preset is None:
                continue
            from backend.errors import OpError

            try:
                found = self._locator.find("config", preset)
            except OpError:
                found = None
            if found is None and PRESETS[preset].repo_id:
                found = self._locator.find_in_cache(PRESETS[preset].repo_id)
            if found is not None and (found.path / "model_index.json").is_file():
                return found.path
        raise model_error(
            ErrorCode.MODEL_MISSING,
            f"{loc.path.name} is a single-file {label} checkpoint; loading it offline needs that model's config "
            f"files (a few MB), which are not installed. Install them with: {install_command(config_preset)}",
            model=config_preset,
            install=install_command(config_preset),
        )

    def _onnx_in(self, loc: Location, kind: str) -> Path:
        if loc.form == "file":
            return loc.path
        preset = PRESETS.get(DEFAULT_PRESET.get(kind, ""))
        wanted = [loc.path / pat for pat in (preset.allow_patterns if preset else ()) if "*" not in pat]
        found = [p for p in wanted if p.is_file()] or sorted(loc.path.glob("*.onnx"))
        cache = self._locator.hf_cache
        if not found and preset is not None and cache is not None and loc.path.is_relative_to(cache):
            # a Hugging Face cache snapshot of the repository without the file: simply not installed
            raise model_error(
                ErrorCode.MODEL_MISSING,
                f"The {kind} model is not installed (the Hugging Face cache holds {preset.repo_id} without its "
                f"model file). Install it with: {install_command(preset.name)}",
                model=preset.name,
                install=install_command(preset.name),
            )
        if not found:
            raise model_error(
                ErrorCode.MODEL_BROKEN,
                f"{loc.path} holds no .onnx model file. Its download did not finish or the file was removed; "
                f"{_reinstall_hint(loc)}",
                model=loc.label,
            )
        return found[0]

    def _load_onnx(self, path: Path):
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if self.device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # warnings about unused initialisers are noise in the backend's log
        return ort.InferenceSession(str(path), opts, providers=providers)

    def _load_sam(self, loc: Location):
        _quiet_progress_bars()
        from backend.snapping.sam import load_local

        if loc.form != "folder" or not (loc.path / "config.json").is_file():
            raise model_error(
                ErrorCode.MODEL_BROKEN,
                f"{loc.path} is not a transformers SAM folder (config.json missing). {_reinstall_hint(loc)}",
                model=loc.label,
            )
        model, processor = load_local(loc.path)
        return model.to(self.device).eval(), processor


def _quiet_progress_bars() -> None:
    """Loading bars belong in a terminal, not in the backend's log; the CLI shows job progress itself."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()


def _unet_in_channels(folder: Path) -> int | None:
    cfg = folder / "unet" / "config.json"
    if not cfg.is_file():
        return None
    return json.loads(cfg.read_text()).get("in_channels")


def _check_unet_fits(kind: str, in_channels: int | None, loc: Location) -> None:
    if kind == "text2img" and in_channels not in (None, 4):
        raise model_error(
            ErrorCode.BAD_PARAM,
            f"{loc.label} is an inpainting model ({in_channels}-channel UNet); this op needs a text-to-image "
            f"model such as the one from: {install_command(DEFAULT_PRESET['text2img'])}",
            param="model",
        )


def _has_only_fp16_variant(folder: Path) -> bool:
    """Presets download fp16 files only (``*.fp16.safetensors``); diffusers needs variant="fp16" for them."""
    unet = folder / "unet"
    names = [p.name for p in unet.iterdir()] if unet.is_dir() else []
    plain = any(n.startswith("diffusion_pytorch_model") and ".fp16." not in n for n in names)
    return not plain and any(".fp16." in n for n in names)


def _disk_bytes(path: Path) -> int:
    """Size of the weight files: an estimate, before loading, of what the model will take."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)


def _reinstall_hint(loc: Location) -> str:
    name = loc.path.name
    if name in PRESETS:
        return f"reinstall it with: {install_command(name)}"
    return "download or copy the model again."

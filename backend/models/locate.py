"""Finding weights on disk, offline: what a model reference (None, a path, a name, a repo id) points at.

Search order for a name: the models folder, then the user's extra folders (``LAYEREDIT_MODEL_PATHS``, joined
with ``os.pathsep``, e.g. an A1111 ``models`` or ComfyUI ``models`` folder), then the local Hugging Face cache.
Nothing here touches the network.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from protocol.errors import ErrorCode

from .presets import DEFAULT_PRESET, INCOMPLETE_MARKER, PRESETS, install_command

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
# Sub-folders where A1111 / ComfyUI / InvokeAI keep checkpoints and LoRAs.
_SUBDIRS = ("", "Stable-diffusion", "checkpoints", "diffusers", "inpaint", "Lora", "loras", "sam")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Location:
    """Where a model's weights are: a diffusers/transformers folder or one checkpoint file."""

    form: Literal["folder", "file"]
    path: Path
    label: str  # what the user asked for, for messages

    @property
    def key(self) -> str:
        return str(self.path.resolve())


def extra_model_dirs() -> list[Path]:
    raw = os.environ.get("LAYEREDIT_MODEL_PATHS", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def default_hf_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def model_error(code: ErrorCode, message: str, **details):
    from backend.errors import OpError

    return OpError(code, message, {k: str(v) for k, v in details.items()})


class Locator:
    """Resolves references for one ModelManager (its folders and cache are fixed at construction)."""

    def __init__(self, models_dir: Path, search_dirs: list[Path], hf_cache: Path | None):
        self.models_dir = models_dir
        self.dirs = [models_dir, *[d for d in search_dirs if d != models_dir]]
        self.hf_cache = hf_cache

    def find(self, kind: str, ref: str | os.PathLike | None) -> Location:
        """The location for ``ref``, or OpError(MODEL_MISSING) naming what to install."""
        preset = PRESETS.get(DEFAULT_PRESET.get(kind, ""))
        if ref is None or str(ref).strip() == "":
            if preset is None:
                raise model_error(
                    ErrorCode.MODEL_MISSING, f"No default model for {kind!r}; pass a model path."
                )
            found = self._by_name(preset.name) or (preset.repo_id and self._in_hf_cache(preset.repo_id))
            if found:
                return self._checked(Location(found.form, found.path, preset.name))
            raise model_error(
                ErrorCode.MODEL_MISSING,
                f"The {kind} model ({preset.name}: {preset.repo_id}) is not installed; looked in "
                f"{', '.join(map(str, self.dirs))} and the Hugging Face cache. "
                f"Install it with: {install_command(preset.name)}",
                model=preset.name,
                install=install_command(preset.name),
            )
        text = str(ref).strip()
        path = Path(text).expanduser()
        if path.exists():
            return self._checked(self._location(path, text))
        found = None if _looks_like_path(text) else self._by_name(text)
        if found is None and _REPO_ID.match(text) and not _looks_like_path(text):
            found = self._in_hf_cache(text)
        named = PRESETS.get(text)  # a preset asked for by name: its repository may sit in the HF cache too
        if found is None and named is not None and named.repo_id:
            found = self._in_hf_cache(named.repo_id)
        if found is not None:
            return self._checked(Location(found.form, found.path, text))
        if named is not None and named.repo_id:
            raise model_error(
                ErrorCode.MODEL_MISSING,
                f"The model {text} ({named.repo_id}) is not installed; looked in "
                f"{', '.join(map(str, self.dirs))} and the Hugging Face cache. "
                f"Install it with: {install_command(text)}",
                model=text,
                install=install_command(text),
            )
        hint = f" The default model installs with: {install_command(preset.name)}" if preset else ""
        raise model_error(
            ErrorCode.MODEL_MISSING,
            f"Model {text!r} was not found: not a path, not in {', '.join(map(str, self.dirs))}"
            f"{', not in the Hugging Face cache' if _REPO_ID.match(text) else ''}. "
            f"Check the name or path (single files end in .safetensors or .ckpt).{hint}",
            model=text,
            install=install_command(preset.name) if preset else "",
        )

    def _by_name(self, name: str) -> Location | None:
        for base in self.dirs:
            for sub in _SUBDIRS:
                folder = base / sub if sub else base
                candidate = folder / name
                if candidate.is_dir() or (candidate.is_file() and candidate.suffix in CHECKPOINT_SUFFIXES):
                    return self._location(candidate, name)
                for suffix in CHECKPOINT_SUFFIXES:
                    if (folder / (name + suffix)).is_file():
                        return Location("file", folder / (name + suffix), name)
        return None

    def names(self) -> list[str]:
        """Every name ``find`` resolves in the model folders (folders and checkpoints, suffix dropped): what a
        remote client may ask for by name (it never names server paths)."""
        found: set[str] = set()
        for base in self.dirs:
            for sub in _SUBDIRS:
                try:
                    entries = list((base / sub if sub else base).iterdir())
                except OSError:
                    continue
                for entry in entries:
                    if entry.name.startswith(".") or (not sub and entry.name in _SUBDIRS):
                        continue
                    if entry.is_dir() and not (entry / INCOMPLETE_MARKER).exists():
                        found.add(entry.name)
                    elif entry.is_file() and entry.suffix in CHECKPOINT_SUFFIXES:
                        found.add(entry.stem)
        return sorted(found)

    def find_by_name(self, name: str) -> Location | None:
        """A folder or checkpoint called ``name`` in the models folder or the extra folders, else None."""
        return self._by_name(name)

    def find_in_cache(self, repo_id: str) -> Location | None:
        return self._in_hf_cache(repo_id)

    def _in_hf_cache(self, repo_id: str) -> Location | None:
        """A snapshot folder from the local HF cache (models--org--name/snapshots/<rev>), never downloading."""
        if self.hf_cache is None:
            return None
        from huggingface_hub import snapshot_download

        try:
            folder = snapshot_download(repo_id, cache_dir=str(self.hf_cache), local_files_only=True)
        except Exception:  # not cached (LocalEntryNotFoundError) or an invalid id: both mean "not here"
            return None
        return Location("folder", Path(folder), repo_id)

    @staticmethod
    def _location(path: Path, label: str) -> Location:
        return Location("folder" if path.is_dir() else "file", path, label)

    @staticmethod
    def _checked(loc: Location) -> Location:
        if loc.form == "folder" and (loc.path / INCOMPLETE_MARKER).exists():
            name = loc.path.name if loc.path.name in PRESETS else None
            raise model_error(
                ErrorCode.MODEL_BROKEN,
                f"The download into {loc.path} did not finish. "
                + (f"Rerun: {install_command(name)}" if name else "Download it again."),
                model=loc.label,
            )
        if loc.form == "file" and loc.path.suffix not in CHECKPOINT_SUFFIXES:
            raise model_error(
                ErrorCode.BAD_PARAM,
                f"{loc.path} is not a model: use a diffusers folder or a .safetensors/.ckpt checkpoint.",
                param="model",
            )
        return loc


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "~", os.sep))
        or text.endswith(CHECKPOINT_SUFFIXES)
        or (os.altsep is not None and os.altsep in text)
        or text.count("/") > 1
    )

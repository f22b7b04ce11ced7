"""The state file inside the venv: what was installed, so re-runs skip pip and --uninstall knows what to remove."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import InstallError
from .torch_plan import torch_key

STATE_NAME = "layeredit-install.json"


STATE_VERSION = 1


REQUIREMENT_FILES = {
    "runtime": "requirements.txt",
    "nodeps": "requirements-nodeps.txt",
    "dev": "requirements-dev.txt",
}


# requirements-nodeps.txt: packages used for a data file only, whose own pins clash with ours (see the file).
PIP_OPTIONS = {"nodeps": ("--no-deps",)}


def file_digest(path: Path) -> str:
    """The requirement file's identity for the state file: a change of any pin re-runs pip for that file."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def wanted_parts(project_root: Path, dev: bool, torch_build: str, index_url: str | None) -> dict:
    """The package parts this run needs, in install order, each with the key that says whether it is installed."""
    parts = {
        "torch": torch_key(torch_build, index_url),
        "runtime": file_digest(requirements_file(project_root, "runtime")),
    }
    if (project_root / REQUIREMENT_FILES["nodeps"]).is_file():
        parts["nodeps"] = file_digest(requirements_file(project_root, "nodeps"))
    if dev:
        parts["dev"] = file_digest(requirements_file(project_root, "dev"))
    return parts


def parts_to_install(wanted: dict, installed: dict, force: bool = False) -> list:
    """The parts whose key differs from the state file (all of them with --force), in install order."""
    return [name for name, key in wanted.items() if force or installed.get(name) != key]


def requirements_file(project_root: Path, part: str) -> Path:
    path = project_root / REQUIREMENT_FILES[part]
    if not path.is_file():
        raise InstallError(f"{path} is missing; install.py must run from a complete checkout of layer-edit.")
    return path


def load_state(venv: Path) -> dict:
    path = venv / STATE_NAME
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        state = {}
    except (OSError, ValueError):
        state = {}  # unreadable state: treat as nothing installed, pip then re-checks everything
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        state = {}
    state.setdefault("version", STATE_VERSION)
    state.setdefault("parts", {})
    state.setdefault("plugins", {})
    return state


def save_state(venv: Path, state: dict) -> None:
    """Write atomically, so an interrupted run never leaves a half-written state that claims too much."""
    path = venv / STATE_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)

"""The hosts: which are known, whether one is installed here, and loading its <host>_plugin/installer.py."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .errors import InstallError

HOSTS = ("krita", "gimp")
HOST_TITLES = {"krita": "Krita", "gimp": "GIMP 3"}


def find_host(host: str) -> bool:
    """Whether Krita / GIMP 3 looks installed here (PATH, flatpak, the usual macOS and Windows folders)."""
    home = Path.home()
    if host == "krita":
        names = ("krita",)
        flatpak = "org.kde.krita"
        folders = [
            Path("/Applications/krita.app"),
            Path(os.environ.get("ProgramFiles", "C:/Program Files")) / "Krita (x64)",
        ]
    else:
        names = ("gimp-3.0", "gimp-3", "gimp")
        flatpak = "org.gimp.GIMP"
        folders = [
            Path("/Applications/GIMP.app"),
            Path(os.environ.get("ProgramFiles", "C:/Program Files")) / "GIMP 3",
        ]
    if any(shutil.which(name) for name in names):
        return True
    folders += [home / ".local/share/flatpak/app" / flatpak, Path("/var/lib/flatpak/app") / flatpak]
    return any(folder.exists() for folder in folders)


def load_installer(project_root: Path, host: str) -> Any:
    """Import <host>_plugin/installer.py from the project lazily: only hosts being (un)installed are touched."""
    path = project_root / (f"{host}_plugin") / "installer.py"
    if not path.is_file():
        raise InstallError(f"{path} is missing: this checkout has no {HOST_TITLES[host]} plugin installer.")
    root = str(project_root)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = importlib.import_module(f"{host}_plugin.installer")
    except Exception as exc:
        raise InstallError(f"cannot load {path}: {type(exc).__name__}: {exc}") from exc
    if not hasattr(module, "install"):
        raise InstallError(f"{path} has no install() function.")
    return module

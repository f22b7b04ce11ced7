"""Vendoring pyzmq into a host plugin, and the installers' manifest bookkeeping: shared by both installers.

Krita's and GIMP's bundled Pythons (Windows, macOS, AppImage) have no pyzmq and no pip. The installer runs
``pip download`` with the project's venv for the pyzmq wheel matching the HOST's Python version and platform,
and unzips it (a wheel is a zip) into a folder inside the plugin, which the plugin puts first on sys.path
(:func:`put_first_on_path`). Stdlib only: the installers run under any python3, the plugins in the hosts'.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

PYZMQ_VERSION = "27.3.0"


def put_first_on_path(*folders: str | Path) -> None:
    """Put existing ``folders`` first on sys.path, the first named ending up first (vendored copies win over
    whatever the host's Python has installed)."""
    for folder in reversed([str(f) for f in folders]):
        if Path(folder).is_dir():
            while folder in sys.path:
                sys.path.remove(folder)
            sys.path.insert(0, folder)


def pip_platform_tag(sysconfig_platform: str) -> str:
    """sysconfig's platform name -> the tag ``pip download --platform`` wants."""
    tag = sysconfig_platform.replace("-", "_").replace(".", "_")
    if tag.startswith("linux_"):
        return "manylinux_2_28_" + tag.removeprefix("linux_")
    return tag


def python_tags(python: Path) -> tuple[str, str]:
    """(major.minor, pip platform tag) of another Python, e.g. ('3.11', 'win_amd64')."""
    code = "import sys, sysconfig; print('%d.%d' % sys.version_info[:2], sysconfig.get_platform())"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=True)
    version, platform = out.stdout.split()
    return version, pip_platform_tag(platform)


def can_import(python: Path, module: str = "zmq") -> bool:
    try:
        subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def vendor_pyzmq(target: Path, python_version: str, platform_tag: str, pip_python: Path) -> list[Path]:
    """Download the pyzmq wheel for a host's Python (``pip_python -m pip download``, needs the package index)
    and unzip it into ``target``; returns the files written. RuntimeError says why when there is no wheel."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(pip_python), "-m", "pip", "download", f"pyzmq=={PYZMQ_VERSION}", "--only-binary=:all:"]
        cmd += ["--no-deps", "--python-version", python_version, "--platform", platform_tag, "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            stderr, ok = proc.stderr, proc.returncode == 0
        except (OSError, subprocess.SubprocessError) as exc:
            stderr, ok = str(exc), False
        wheels = sorted(Path(tmp).glob("pyzmq-*.whl"))
        if not ok or not wheels:
            raise RuntimeError(
                f"Could not download pyzmq {PYZMQ_VERSION} for Python {python_version} ({platform_tag}): "
                f"{stderr.strip()[-500:]}"
            )
        return unzip_wheel(wheels[0], target)


def unzip_wheel(wheel: Path, target: Path) -> list[Path]:
    """Unzip ``wheel`` into ``target``; refuses members that would land outside it."""
    out = []
    root = target.resolve()
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.endswith("/"):
                continue
            dst = (target / name).resolve()
            if root not in dst.parents:
                raise RuntimeError(f"Refusing to unzip {name!r} outside {target}.")
            dst.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(dst, "wb") as f:
                shutil.copyfileobj(src, f)
            out.append(dst)
    return out


def remove_installed(files: Iterable[Path], root: Path) -> tuple[list[Path], list[Path]]:
    """Uninstall: delete the listed files that lie inside ``root``, the caches the host's Python wrote there,
    then the folders under ``root`` (and ``root``) left empty. A user's own file keeps its folder. Returns
    (files removed, folders removed)."""
    root_resolved = root.resolve()
    removed: list[Path] = []
    folders_removed: list[Path] = []
    for path in files:
        resolved = Path(path).resolve()
        if root_resolved in resolved.parents and resolved.is_file():
            resolved.unlink()
            removed.append(Path(path))
    if not root.is_dir():
        return removed, folders_removed
    for cache in list(root.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)
    folders = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for folder in [*folders, root]:
        try:
            folder.rmdir()
            folders_removed.append(folder)
        except OSError:  # not empty: something of the user's is in it
            pass
    return removed, folders_removed

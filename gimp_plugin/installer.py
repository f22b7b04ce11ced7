"""Install the GIMP 3 plug-in into the user's GIMP plug-ins folder (stdlib only).

``install.py`` calls :func:`install`. What lands in ``<plug-ins>/layeredit/``:
the plug-in (``layeredit.py``, executable, plus its ``layeredit_gimp`` package), a vendored copy of
``protocol/`` (GIMP's Python cannot import the project), ``layeredit.json`` naming the project and venv (the
plug-in starts the backend from it), ``schemas.json`` (the ops' parameter schemas, best effort: GIMP registers
PDB arguments at start-up, before any backend runs), optionally ``vendor/`` with a pyzmq wheel unpacked for
GIMP's bundled Python (Windows/macOS), and ``install-manifest.json`` listing all of it so uninstall removes
exactly what install added and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project root (with protocol/) must be importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol.launcher import LaunchConfig, ask_schemas  # noqa: E402
from protocol.vendoring import (  # noqa: E402
    PYZMQ_VERSION,
    can_import,
    pip_platform_tag,
    python_tags,
    remove_installed,
    vendor_pyzmq,
)

__all__ = ["PYZMQ_VERSION", "install", "pip_platform_tag"]  # vendoring lives in protocol/

PLUGIN_NAME = "layeredit"
MANIFEST = "install-manifest.json"
CONFIG = "layeredit.json"
SCHEMAS = "schemas.json"
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


def default_plugins_dir(platform: str | None = None, env: dict[str, str] | None = None) -> Path:
    """GIMP 3's per-user plug-ins folder on this OS (GIMP honours XDG_CONFIG_HOME on Linux)."""
    platform = platform or sys.platform
    env = dict(os.environ) if env is None else env
    home = Path(env.get("HOME") or Path.home())
    if platform.startswith("win"):
        base = Path(env.get("APPDATA") or home / "AppData" / "Roaming")
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return base / "GIMP" / "3.0" / "plug-ins"


def install(
    project_root: str | Path,
    venv_python: str | Path,
    plugins_dir: str | Path | None = None,
    gimp_python: str | Path | None = None,
    uninstall: bool = False,
) -> list[Path]:
    """Install (or with ``uninstall=True`` remove) the plug-in; returns the files written (or removed).

    ``gimp_python``: the Python GIMP runs plug-ins with, when it is not the system one (Windows/macOS bundles):
    if it cannot import zmq, a matching pyzmq wheel is downloaded (pip, needs network) and unpacked into
    ``vendor/``, which the plug-in puts first on sys.path.
    """
    project_root = Path(project_root).resolve()
    target = Path(plugins_dir) if plugins_dir else default_plugins_dir()
    dest = target / PLUGIN_NAME
    removed = _remove_previous(dest)
    if uninstall:
        return removed
    source = project_root / "gimp_plugin" / PLUGIN_NAME
    if not (source / f"{PLUGIN_NAME}.py").is_file():
        raise FileNotFoundError(f"{source} has no {PLUGIN_NAME}.py: is {project_root} the project folder?")
    if dest.exists():
        raise FileExistsError(f"{dest} exists and was not installed by this installer; move it away first.")
    shutil.copytree(source, dest, ignore=_SKIP)
    shutil.copytree(project_root / "protocol", dest / "protocol", ignore=_SKIP)
    entry = dest / f"{PLUGIN_NAME}.py"
    entry.chmod(entry.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.utime(entry)  # GIMP re-queries a plug-in (and re-reads schemas.json) only when its file time changes
    config = {"project_root": str(project_root), "venv_python": str(Path(venv_python))}
    (dest / CONFIG).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    schemas = ask_schemas(LaunchConfig(project_root, Path(venv_python)))
    if schemas is not None:
        (dest / SCHEMAS).write_text(json.dumps(schemas, indent=1) + "\n", encoding="utf-8")
    if gimp_python and not can_import(Path(gimp_python), "zmq"):
        vendor_pyzmq(dest / "vendor", *python_tags(Path(gimp_python)), Path(venv_python))
    files = sorted(p for p in dest.rglob("*") if p.is_file())
    manifest = dest / MANIFEST
    rel = [str(p.relative_to(dest)) for p in files] + [MANIFEST]
    manifest.write_text(json.dumps({"files": rel}, indent=1) + "\n", encoding="utf-8")
    return [*files, manifest]


def _remove_previous(dest: Path) -> list[Path]:
    """Remove the files a previous install listed in its manifest, then the folders left empty."""
    manifest = dest / MANIFEST
    if not manifest.is_file():
        return []
    listed = json.loads(manifest.read_text(encoding="utf-8")).get("files", [])
    files, _folders = remove_installed([dest / rel for rel in listed], dest)
    return files


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project-root", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--venv-python", default=sys.executable)
    parser.add_argument("--plugins-dir")
    parser.add_argument("--gimp-python")
    parser.add_argument("--uninstall", action="store_true")
    args = parser.parse_args(argv)
    paths = install(args.project_root, args.venv_python, args.plugins_dir, args.gimp_python, args.uninstall)
    print(f"{'removed' if args.uninstall else 'installed'} {len(paths)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())

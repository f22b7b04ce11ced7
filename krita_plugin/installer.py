"""Install (or remove) the Krita plugin: stdlib only, called by the top-level install.py.

What it does, and records in a manifest so uninstall removes exactly that and nothing else:
- copies ``layeredit.desktop`` and the ``layeredit`` package into ``<resource dir>/pykrita``;
- vendors ``protocol/`` into ``layeredit/_vendor/protocol`` (Krita's Python cannot see the project's venv);
- writes ``layeredit/config.json`` (project root + venv python: the plugin starts the backend with them);
- optionally unzips the pyzmq wheel matching Krita's own Python into ``layeredit/_vendor`` (Krita's bundled
  Python on Windows/macOS/AppImage has no pyzmq; Debian's Krita uses the system Python and python3-zmq);
- sets ``[python] enable_layeredit=true`` in kritarc, keeping every other line as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the project root (with protocol/) must be importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol.vendoring import PYZMQ_VERSION, remove_installed, unzip_wheel, vendor_pyzmq

__all__ = ["PYZMQ_VERSION", "install", "unzip_wheel", "vendor_pyzmq"]  # vendoring lives in protocol/

PLUGIN = "layeredit"
HERE = Path(__file__).resolve().parent
MANIFEST = f"{PLUGIN}-install.json"  # in the resource dir, next to pykrita/ (outside what it lists)
ENABLE_KEY = f"enable_{PLUGIN}"


def default_resource_dir() -> Path:
    """Krita's per-user resource folder on this platform."""
    if sys.platform.startswith("win"):
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "krita"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "krita"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "krita"


def default_kritarc() -> Path:
    """Where Krita keeps kritarc (KConfig's per-user config location)."""
    if sys.platform.startswith("win"):
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "kritarc"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Preferences" / "kritarc"
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kritarc"


def pyzmq_platform_tag() -> str:
    """The wheel platform for Krita's bundled Python on this OS (AppImage on Linux)."""
    if sys.platform.startswith("win"):
        return "win_amd64"
    if sys.platform == "darwin":
        return "macosx_10_15_universal2"
    return "manylinux_2_28_x86_64"


def install(
    project_root: Path | str,
    venv_python: Path | str,
    resource_dir: Path | str | None = None,
    krita_python: str | None = None,
    uninstall: bool = False,
    *,
    kritarc: Path | str | None = None,
) -> list[Path]:
    """Install the plugin and return the paths written (files, plus kritarc when changed); with
    ``uninstall=True`` remove what an earlier install recorded and return the paths removed.
    ``krita_python`` ("3.10") vendors the pyzmq wheel for Krita's bundled Python of that version."""
    res = Path(resource_dir) if resource_dir else default_resource_dir()
    rc = Path(kritarc) if kritarc else default_kritarc()
    if uninstall:
        return _uninstall(res, rc)
    if (res / MANIFEST).exists():
        _uninstall(res, rc)  # reinstall: start from a clean slate so the manifest stays exact
    project_root = Path(project_root).resolve()
    written: list[Path] = []
    pykrita = res / "pykrita"
    created_dirs = [d for d in (res, pykrita) if not d.exists()]
    pykrita.mkdir(parents=True, exist_ok=True)
    written.append(_copy_file(HERE / f"{PLUGIN}.desktop", pykrita / f"{PLUGIN}.desktop"))
    pkg = pykrita / PLUGIN
    written += _copy_tree(HERE / PLUGIN, pkg)
    written += _copy_tree(project_root / "protocol", pkg / "_vendor" / "protocol")
    config = pkg / "config.json"
    config.write_text(
        json.dumps({"project_root": str(project_root), "venv_python": str(Path(venv_python))}, indent=2),
        "utf-8",
    )
    written.append(config)
    if krita_python:
        written += vendor_pyzmq(pkg / "_vendor", krita_python, pyzmq_platform_tag(), Path(venv_python))
    previous = _enable_in_kritarc(rc)
    manifest = {
        "files": [str(p) for p in written],
        "dirs": [str(d) for d in created_dirs],
        "package": str(pkg),
        "kritarc": str(rc),
        "kritarc_previous": previous,  # None: we added the key; "__created__": we created the file
    }
    (res / MANIFEST).write_text(json.dumps(manifest, indent=2), "utf-8")
    return [*written, rc, res / MANIFEST]


def _copy_file(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    return dst


def _copy_tree(src: Path, dst: Path) -> list[Path]:
    """Copy the .py/.desktop/.json/.html files of a package (no caches, no tests' leftovers); Manual.html is the
    manual the .desktop names (Krita's Python Plugin Manager shows it from inside the package folder)."""
    out = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_dir() or "__pycache__" in rel.parts or rel.parts[0] in ("_vendor", "config.json"):
            continue
        if path.suffix in (".py", ".desktop", ".json", ".md", ".txt", ".html"):
            out.append(_copy_file(path, dst / rel))
    return out


# ----------------------------------------------------------------------------------------------------------
# kritarc: a KConfig INI file. Edited line by line so comments, order and other keys stay untouched.


def _enable_in_kritarc(rc: Path) -> str | None:
    """Set ``enable_layeredit=true`` under [python]. Returns the previous value (None when the key was absent,
    "__created__" when kritarc did not exist) so uninstall can put back exactly what was there."""
    if not rc.exists():
        rc.parent.mkdir(parents=True, exist_ok=True)
        rc.write_text(f"[python]\n{ENABLE_KEY}=true\n", "utf-8")
        return "__created__"
    lines = rc.read_text("utf-8").splitlines(keepends=True)
    start, end = _section(lines, "python")
    if start is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines += ["\n" if lines else "", "[python]\n", f"{ENABLE_KEY}=true\n"]
        rc.write_text("".join(lines), "utf-8")
        return "__section__"
    for i in range(start + 1, end):
        key, _, value = lines[i].partition("=")
        if key.strip() == ENABLE_KEY:
            lines[i] = f"{ENABLE_KEY}=true\n"
            rc.write_text("".join(lines), "utf-8")
            return value.strip()
    lines.insert(start + 1, f"{ENABLE_KEY}=true\n")
    rc.write_text("".join(lines), "utf-8")
    return None


def _restore_kritarc(rc: Path, previous: str | None) -> bool:
    if not rc.exists():
        return False
    lines = rc.read_text("utf-8").splitlines(keepends=True)
    start, end = _section(lines, "python")
    if start is None:
        return False
    for i in range(start + 1, end):
        if lines[i].partition("=")[0].strip() == ENABLE_KEY:
            if previous in (None, "__created__", "__section__"):
                del lines[i]
            else:
                lines[i] = f"{ENABLE_KEY}={previous}\n"
            break
    else:
        return False
    if previous in ("__created__", "__section__"):
        start, end = _section(lines, "python")
        if start is not None and all(not ln.strip() for ln in lines[start + 1 : end]):
            del lines[start:end]
            if previous == "__section__" and start > 0 and not lines[start - 1].strip():
                del lines[start - 1]  # the blank line we put before the section
    if previous == "__created__" and not "".join(lines).strip():
        rc.unlink()
        return True
    rc.write_text("".join(lines), "utf-8")
    return True


def _section(lines: list[str], name: str) -> tuple[int | None, int]:
    start = None
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            if start is not None:
                return start, i
            if s[1:-1] == name:
                start = i
    return start, len(lines)


def _uninstall(res: Path, rc_default: Path) -> list[Path]:
    manifest_path = res / MANIFEST
    if not manifest_path.exists():
        return []
    manifest = json.loads(manifest_path.read_text("utf-8"))
    files = [Path(name) for name in manifest["files"]]
    pkg = Path(manifest["package"])
    removed: list[Path] = []
    for p in files:  # the .desktop file next to the package
        if pkg not in p.parents and p.is_file():
            p.unlink()
            removed.append(p)
    files.append(pkg / "config.json")  # older installs did not list it
    pkg_files, pkg_folders = remove_installed(files, pkg)  # also caches Krita's Python wrote, empty folders
    removed += pkg_files + pkg_folders
    manifest_path.unlink()
    removed.append(manifest_path)
    for d in sorted(map(Path, manifest["dirs"]), key=lambda p: len(p.parts), reverse=True):
        _rmdir_if_empty(d, removed)
    rc = Path(manifest.get("kritarc") or rc_default)
    if _restore_kritarc(rc, manifest.get("kritarc_previous")):
        removed.append(rc)
    return removed


def _rmdir_if_empty(d: Path, removed: list[Path]) -> None:
    try:
        d.rmdir()
        removed.append(d)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Install the LayerEdit plugin into Krita.")
    ap.add_argument("--project-root", default=str(HERE.parent))
    ap.add_argument("--venv-python", default=str(HERE.parent / ".venv" / "bin" / "python"))
    ap.add_argument("--resource-dir")
    ap.add_argument("--krita-python", help="Krita's bundled Python version (e.g. 3.10) to vendor pyzmq for")
    ap.add_argument("--uninstall", action="store_true")
    args = ap.parse_args(argv)
    paths = install(args.project_root, args.venv_python, args.resource_dir, args.krita_python, args.uninstall)
    print(("removed " if args.uninstall else "installed ") + f"{len(paths)} paths")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

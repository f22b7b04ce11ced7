"""Model presets: downloaded by backend/models/presets.py run in the venv; listed without one."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import InstallError
from .tools import Tools


def install_models(python: Path, args: argparse.Namespace, tools: Tools) -> None:
    """One preset at a time, so the output says which one failed."""
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    if not names:
        raise InstallError("--models needs at least one preset name, e.g. --models sd15-inpaint.")
    models_dir = args.models_dir or os.environ.get("LAYEREDIT_MODELS")
    for name in names:
        cmd = [str(python), "-m", "backend.models.presets", name]
        if models_dir:
            cmd += ["--dir", str(Path(models_dir).expanduser())]
        tools.run(cmd, f"installing model preset {name!r}", cwd=tools.project_root)


def list_models(project_root: Path) -> int:
    """`--models list` only lists: no venv, no packages, no plugins, no self-check. The presets module is
    standard library only at import time, so it is loaded by its path with the Python running this script."""
    import importlib.util

    path = project_root / "backend" / "models" / "presets.py"
    spec = importlib.util.spec_from_file_location("_layeredit_presets", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise InstallError(f"{path} is missing: this is not a complete LayerEdit checkout.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        module.main(["--list"])
    finally:
        sys.modules.pop(spec.name, None)
    print(
        f"\ninstall with: python3 {project_root / 'install.py'} --models NAME[,NAME] "
        "(into --models-dir, default $LAYEREDIT_MODELS or models/ next to install.py)"
    )
    return 0

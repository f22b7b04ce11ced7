"""The virtual environment and the packages in it (torch first, then the requirement files)."""

from __future__ import annotations

import argparse
import platform
import shutil
from pathlib import Path

from .errors import InstallError
from .state import PIP_OPTIONS, STATE_NAME, parts_to_install, requirements_file, save_state, wanted_parts
from .tools import Tools
from .torch_plan import TORCH_VERSION, TorchPlan, plan_torch, resolve_torch_build


def venv_python(venv: Path, system: str | None = None) -> Path:
    """The venv's interpreter: Scripts\\python.exe on Windows, bin/python elsewhere."""
    if (system or platform.system()) == "Windows":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def read_venv_version(venv: Path) -> str | None:
    """The Python version a venv was made with, from pyvenv.cfg (cheap: no interpreter start)."""
    cfg = venv / "pyvenv.cfg"
    if not cfg.is_file():
        return None
    for line in cfg.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            return value.strip()
    return None


def ensure_venv(venv: Path, args: argparse.Namespace, tools: Tools) -> Path:
    """Create the venv with this interpreter, or reuse one made by the same Python minor version."""
    python = venv_python(venv, tools.platform().system)
    running = f"{tools.python_version[0]}.{tools.python_version[1]}"
    found = read_venv_version(venv)
    if found is not None and args.recreate:
        print(f"    removing {venv} (--recreate)")
        if not args.dry_run:
            remove_venv(venv)
        found = None
    elif found is not None:
        if ".".join(found.split(".")[:2]) != running:
            raise InstallError(
                f"{venv} was made with Python {found} but install.py runs on Python {running}. Run install.py with that Python, "
                "or re-run with --recreate to rebuild the venv with this one."
            )
        if not python.exists() and not args.dry_run:
            raise InstallError(f"{venv} has no {python.name} (a broken venv); re-run with --recreate.")
        print(f"    reusing {venv} (Python {found})")
        return python
    elif venv.exists() and (not venv.is_dir() or any(venv.iterdir())):
        raise InstallError(
            f"{venv} exists and is not a virtual environment; pass another --venv DIR or move it away."
        )
    tools.run(
        [tools.python_executable, "-m", "venv", str(venv)],
        f"creating the virtual environment (on Debian/Ubuntu this needs: apt install python{running}-venv)",
    )
    if not args.dry_run and not python.exists():
        raise InstallError(f"the new venv at {venv} has no {python}; re-run with --recreate.")
    return python


def remove_venv(venv: Path) -> None:
    """Delete a venv, but only a directory that really is one (pyvenv.cfg inside): never a user's folder."""
    if not (venv / "pyvenv.cfg").is_file():
        raise InstallError(f"{venv} is not a virtual environment (no pyvenv.cfg); not removing it.")
    shutil.rmtree(venv)


def install_packages(python: Path, venv: Path, args: argparse.Namespace, tools: Tools, state: dict) -> None:
    facts = tools.platform()
    build = resolve_torch_build(args.torch, facts)
    wanted = wanted_parts(tools.project_root, args.dev, build, args.torch_index)
    todo = parts_to_install(wanted, state["parts"], args.force)
    if not todo:
        print(f"    packages up to date (torch {build} build; state {venv / STATE_NAME}); pip not run")
        return
    skipped = [name for name in wanted if name not in todo]
    if skipped:
        print("    already installed: {}".format(", ".join(skipped)))
    pip = [str(python), "-m", "pip", "install"]
    for part in todo:
        if part == "torch":
            plan = plan_torch(args.torch, facts, args.torch_index, tools.probe)
            print(f"    torch {TORCH_VERSION}, {plan.build} build, from {plan.source}", flush=True)
            previous = state["parts"].get("torch")
            if previous and previous != wanted["torch"]:
                # the same version of another build counts as satisfied for pip: remove ours first
                print(
                    f"    switching torch ({previous} -> {wanted['torch']}): removing the installed one first"
                )
                tools.run(
                    [str(python), "-m", "pip", "uninstall", "-y", "torch"],
                    "removing the previous torch build",
                )
            tools.run(pip + list(plan.pip_args), "installing torch")
            if not args.dry_run:
                report_torch(python, plan, tools, state)
        else:
            path = requirements_file(tools.project_root, part)
            tools.run(pip + [*PIP_OPTIONS.get(part, ()), "-r", str(path)], f"installing {path.name}")
        if not args.dry_run:
            state["parts"][part] = wanted[part]
            save_state(venv, state)


def report_torch(python: Path, plan: TorchPlan, tools: Tools, state: dict) -> None:
    """Say which torch actually landed (a local '+cpu' wheel can win over the asked-for CUDA build)."""
    out = tools.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('torch'))"],
        "reading the torch version",
        capture=True,
    )
    version = out.strip()
    if not version:
        return
    print(f"    installed torch {version}")
    state["torch"] = {"build": plan.build, "source": plan.source, "installed": version}
    if plan.build == "cuda" and version.endswith("+cpu"):
        print(
            f"    WARNING: asked for the CUDA build but the venv has torch {version} (a CPU build: already there, or "
            f"the one your pip indexes hold). Remove it with `{python} -m pip uninstall -y torch`, then re-run with "
            "--torch-index https://download.pytorch.org/whl/cu128 (or the index for your CUDA version)."
        )

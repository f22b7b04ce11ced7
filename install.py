#!/usr/bin/env python3
"""Install layer-edit: the backend's virtual environment, pinned dependencies, torch, models and host plugins.

Standard library only: this file runs before the virtual environment exists. It also keeps to syntax that older
Pythons can parse, so that running it with one prints a clear "needs Python 3.11" instead of a SyntaxError.

Run ``python3 install.py --help`` for every option. Re-running is cheap: a state file inside the venv records what
was installed (hashes of the requirement files and the torch choice), and pip only runs for the parts that changed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_PYTHON = (3, 11)
TORCH_VERSION = "2.13.0"
TORCH_CHOICES = ("auto", "cpu", "cuda", "mps")
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# PyPI's Windows torch wheels are CPU-only, so CUDA on Windows needs PyTorch's own index.
PYTORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
PROBE_TIMEOUT_S = 3.0
STATE_NAME = "layeredit-install.json"
STATE_VERSION = 1
HOSTS = ("krita", "gimp")
HOST_TITLES = {"krita": "Krita", "gimp": "GIMP 3"}
SELF_CHECK_TIMEOUT_S = 120.0

HELP_EPILOG = f"""\
what gets installed where:
  venv        --venv DIR (default: .venv next to install.py), made with the Python running this script
  packages    torch=={TORCH_VERSION} on its own (build per --torch), requirements.txt, requirements-nodeps.txt
              (pip --no-deps), and with --dev requirements-dev.txt
  plugins     Krita / GIMP 3 plugins into the hosts found on this machine (or the ones named with --krita/--gimp)
  models      only with --models; into --models-dir (default: $LAYEREDIT_MODELS or models/ next to install.py)

re-running:
  A state file (<venv>/{STATE_NAME}) records what was installed; pip runs again only for the parts whose
  requirement files or torch choice changed. --force reinstalls the packages anyway.

uninstalling:
  --uninstall removes the host plugins this script installed (all of them, or only those named with --krita/--gimp).
  The venv is removed only with --uninstall --all. Downloaded models are never removed (they are your data: delete
  the models folder yourself).

examples:
  python3 install.py                      # backend venv + plugins for the hosts found here
  python3 install.py --dev                # also the test tools (pytest, hypothesis, ruff)
  python3 install.py --torch cuda         # force the CUDA build of torch
  python3 install.py --models list        # the model presets there are
  python3 install.py --models sd15-inpaint --models-dir ~/models
  python3 install.py --uninstall          # remove the plugins again (keeps the venv)
  python3 install.py --uninstall --all    # ... and the venv
"""


class InstallError(Exception):
    """A failure the user can act on: the message says what happened and what to do."""


# ----------------------------------------------------------------------------------------------------------------
# Pure planning: platform facts in, decisions out (tested without touching the machine).


def check_python(version_info: tuple) -> None:
    """Refuse old Pythons up front: the venv inherits this interpreter, and the backend needs 3.11+."""
    if tuple(version_info[:2]) < MIN_PYTHON:
        found = ".".join(str(part) for part in version_info[:3])
        raise InstallError(
            f"layer-edit needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer, but install.py runs on Python "
            f"{found} ({sys.executable}). The virtual environment is made with the Python that runs this script: "
            "run it with a newer one, e.g. `python3.11 install.py` (install it from python.org or your package "
            "manager first)."
        )


@dataclass(frozen=True)
class PlatformFacts:
    """What the torch choice depends on; detected once, injected in tests."""

    system: str  # platform.system(): "Linux", "Darwin", "Windows"
    machine: str  # platform.machine(), lower case: "x86_64", "arm64", "aarch64", "amd64"
    has_nvidia: bool  # nvidia-smi found and lists a GPU


@dataclass(frozen=True)
class TorchPlan:
    """How torch gets installed: the build, the arguments after `pip install`, and why (printed)."""

    build: str  # "cpu" | "cuda" | "mps"
    pip_args: tuple
    source: str


def resolve_torch_build(choice: str, facts: PlatformFacts) -> str:
    """Turn --torch (auto|cpu|cuda|mps) into a concrete build, refusing builds that do not exist for this OS."""
    if choice not in TORCH_CHOICES:
        raise InstallError("--torch must be one of {}, not {!r}.".format("|".join(TORCH_CHOICES), choice))
    if choice == "auto":
        if facts.system == "Darwin" and facts.machine in ("arm64", "aarch64"):
            return "mps"
        if facts.has_nvidia and facts.system in ("Linux", "Windows"):
            return "cuda"
        return "cpu"
    if choice == "mps" and facts.system != "Darwin":
        raise InstallError(
            f"--torch mps is for Apple-silicon Macs; on {facts.system} use --torch cpu or cuda."
        )
    if choice == "cuda" and facts.system == "Darwin":
        raise InstallError(
            "PyTorch has no CUDA build for macOS; use --torch mps (Apple silicon) or --torch cpu."
        )
    return choice


def torch_key(build: str, index_url: str | None) -> str:
    """What identifies an installed torch in the state file: version, build and explicit index (not the probe)."""
    return "torch=={} build={} index={}".format(TORCH_VERSION, build, index_url or "")


def plan_torch(
    choice: str,
    facts: PlatformFacts,
    index_url: str | None = None,
    cpu_index_reachable: Callable = lambda: False,
) -> TorchPlan:
    """Pick where torch==TORCH_VERSION comes from. `cpu_index_reachable` is only called for a CPU build on Linux.

    On Linux, PyPI's torch is the multi-GB CUDA build, so a CPU install prefers PyTorch's CPU index; when that
    index cannot be reached (offline mirrors, firewalls) plain pip is used, which takes whatever the configured
    indexes hold (a local CPU wheel on some machines, the CUDA build on PyPI proper) and says so.
    """
    build = resolve_torch_build(choice, facts)
    spec = f"torch=={TORCH_VERSION}"
    if index_url:
        return TorchPlan(build, ("--index-url", index_url, spec), f"{index_url} (from --torch-index)")
    if facts.system == "Darwin" and facts.machine not in ("arm64", "aarch64"):
        raise InstallError(
            f"PyTorch publishes no torch {TORCH_VERSION} wheels for Intel Macs. Use an Apple-silicon Mac, or pass --torch-index "
            "with an index that has a build for this machine."
        )
    if build == "mps":
        return TorchPlan(build, (spec,), "your pip indexes (PyPI's macOS wheels include MPS)")
    if build == "cuda":
        if facts.system == "Windows":
            return TorchPlan(
                build,
                ("--index-url", PYTORCH_CUDA_INDEX, spec),
                f"{PYTORCH_CUDA_INDEX} (PyPI's Windows wheels are CPU-only)",
            )
        return TorchPlan(build, (spec,), "your pip indexes (PyPI's Linux wheels are the CUDA build)")
    if facts.system == "Linux":
        if cpu_index_reachable():
            return TorchPlan(
                build,
                ("--index-url", PYTORCH_CPU_INDEX, spec),
                f"{PYTORCH_CPU_INDEX} (PyTorch's CPU-only index)",
            )
        return TorchPlan(
            build,
            (spec,),
            f"your pip indexes: {PYTORCH_CPU_INDEX} did not answer (timeout {PROBE_TIMEOUT_S:.0f} s). On PyPI proper that is the large CUDA build; "
            "pass --torch-index URL to choose another source",
        )
    return TorchPlan(build, (spec,), f"your pip indexes (PyPI's {facts.system} wheels are the CPU build)")


def file_digest(path: Path) -> str:
    """The requirement file's identity for the state file: a change of any pin re-runs pip for that file."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


REQUIREMENT_FILES = {
    "runtime": "requirements.txt",
    "nodeps": "requirements-nodeps.txt",
    "dev": "requirements-dev.txt",
}
# requirements-nodeps.txt: packages used for a data file only, whose own pins clash with ours (see the file).
PIP_OPTIONS = {"nodeps": ("--no-deps",)}


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


# ----------------------------------------------------------------------------------------------------------------
# The state file inside the venv: what was installed, so re-runs skip pip and --uninstall knows what to remove.


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


# ----------------------------------------------------------------------------------------------------------------
# Effects on the machine, collected in Tools so tests can swap them.


def run_command(
    cmd: list, what: str, capture: bool = False, cwd: Path | None = None, env: dict | None = None
) -> str:
    """Run one step; a failure becomes an InstallError naming the step, the command and what to try."""
    shown = " ".join(str(part) for part in cmd)
    print(f"    $ {shown}", flush=True)
    try:
        done = subprocess.run(
            [str(part) for part in cmd],
            cwd=str(cwd) if cwd else None,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            text=True,
        )
    except OSError as exc:
        raise InstallError(f"{what} failed: cannot run {cmd[0]} ({exc}).") from exc
    if done.returncode != 0:
        raise InstallError(
            f"{what} failed (exit status {done.returncode}) running:\n    {shown}\nRead the output above for the "
            "cause. Network or index trouble: check `pip config list` and your proxy settings; a broken venv: "
            "re-run with --recreate."
        )
    return done.stdout or ""


def dry_run_command(
    cmd: list, what: str, capture: bool = False, cwd: Path | None = None, env: dict | None = None
) -> str:
    print("    would run: {}".format(" ".join(str(part) for part in cmd)), flush=True)
    return ""


def probe_url(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when the URL answers at all within the timeout (used to decide whether an index is usable)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except Exception:  # any failure (DNS, TLS, proxy, HTTP error) means: do not use it
        return False


def detect_platform() -> PlatformFacts:
    return PlatformFacts(platform.system(), platform.machine().lower(), has_nvidia_gpu())


def has_nvidia_gpu() -> bool:
    """An NVIDIA GPU with a working driver: nvidia-smi exists and lists at least one GPU."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        done = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and "GPU" in done.stdout


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


@dataclass
class Tools:
    """Everything install.py does to the machine, swappable in tests (fake pip, fake hosts)."""

    project_root: Path
    run: Callable = run_command
    facts: Callable = detect_platform
    probe: Callable = lambda: probe_url(PYTORCH_CPU_INDEX + "/torch/")
    find_host: Callable = find_host
    load_installer: Callable = load_installer
    self_check: Callable = lambda root, python: run_self_check(root, python)
    python_version: tuple = field(default_factory=lambda: tuple(sys.version_info[:3]))
    python_executable: str = sys.executable
    _facts: PlatformFacts | None = field(default=None, repr=False)

    def platform(self) -> PlatformFacts:
        """Detect once per run (nvidia-smi is not free)."""
        if self._facts is None:
            self._facts = self.facts()
        return self._facts


# ----------------------------------------------------------------------------------------------------------------
# Steps.


def phase(title: str) -> float:
    print(f"==> {title}", flush=True)
    return time.monotonic()


def phase_done(title: str, started: float) -> None:
    print(f"    {title}: {time.monotonic() - started:.1f} s", flush=True)


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


def host_options(host: str, args: argparse.Namespace) -> dict:
    """The keyword arguments of <host>_plugin.installer.install() that the command line sets."""
    if host == "krita":
        return {"resource_dir": args.krita_dir, "krita_python": args.krita_python}
    return {"plugins_dir": args.gimp_dir, "gimp_python": args.gimp_python}


def hosts_for_install(args: argparse.Namespace, tools: Tools) -> tuple:
    """(hosts, explicit): the named hosts, or with none named the hosts found on this machine."""
    named = [host for host in HOSTS if getattr(args, host)]
    if named:
        return named, True
    if args.no_hosts:
        return [], False
    return [host for host in HOSTS if tools.find_host(host)], False


def installer_kwargs(options: dict) -> dict:
    """Folders become Paths (with ~ expanded); the host Python (a path for GIMP, a version for Krita) stays text."""
    kwargs = {}
    for key, value in options.items():
        if value in (None, ""):
            kwargs[key] = None
        elif key.endswith("_dir"):
            kwargs[key] = Path(value).expanduser()
        else:
            kwargs[key] = str(value)
    return kwargs


def jsonable(value: Any) -> Any:
    """Installer results go into the state file as JSON; paths become strings, other objects their repr."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def install_plugins(python: Path, venv: Path, args: argparse.Namespace, tools: Tools, state: dict) -> list:
    """Install each host's plugin; returns warnings (found-but-failed hosts when none was named explicitly)."""
    hosts, explicit = hosts_for_install(args, tools)
    warnings = []
    if not hosts:
        reason = (
            "--no-hosts" if args.no_hosts else "no Krita or GIMP found here; name one with --krita / --gimp"
        )
        print(f"    no host plugin installed ({reason})")
        return warnings
    for host in hosts:
        options = host_options(host, args)
        print(
            "    {} plugin{}".format(HOST_TITLES[host], "" if explicit else " (host found on this machine)"),
            flush=True,
        )
        if args.dry_run:
            print(f"    would call {host}_plugin/installer.py install({options})")
            continue
        try:
            module = tools.load_installer(tools.project_root, host)
            result = module.install(tools.project_root, python, **installer_kwargs(options))
        except Exception as exc:
            message = exc if isinstance(exc, InstallError) else f"{type(exc).__name__}: {exc}"
            if explicit:
                raise InstallError(f"installing the {HOST_TITLES[host]} plugin failed: {message}") from exc
            warnings.append(f"{HOST_TITLES[host]} plugin not installed: {message} (retry with --{host})")
            print(f"    WARNING: {warnings[-1]}")
            continue
        state["plugins"][host] = {"options": jsonable(options), "result": jsonable(result)}
        save_state(venv, state)
        print(f"    {HOST_TITLES[host]} plugin installed")
    return warnings


# ----------------------------------------------------------------------------------------------------------------
# Self-check: start the backend in a private runtime dir, say hello through the real client, stop it.

# Runs in the venv (pyzmq lives there). A backend's very first start after an install can keep it busy for a
# few seconds (cold caches, first imports) so that the client declares it gone; it is retried while the server
# process lives, and the number of tries is reported.
CLIENT_SNIPPET = """\
import json, sys, time
from protocol.client import Client
from protocol.errors import ProtocolError
deadline = time.monotonic() + float(sys.argv[2])
attempt = 0
while True:
    attempt += 1
    try:
        with Client.connect(sys.argv[1]) as client:
            info = client.hello()
        break
    except ProtocolError as exc:
        if exc.code.value not in ("backend_gone", "timeout", "no_backend") or time.monotonic() > deadline:
            raise
        print("hello attempt %d: %s; retrying" % (attempt, exc), file=sys.stderr, flush=True)
        time.sleep(1.0)
print(json.dumps({"hello": info, "attempts": attempt}, default=str))
"""


def run_self_check(project_root: Path, python: Path, timeout: float = SELF_CHECK_TIMEOUT_S) -> dict:
    """Prove the installed backend starts and answers `hello`; the backend's log is shown when it does not."""
    runtime = Path(tempfile.mkdtemp(prefix="layeredit-check-"))
    os.chmod(runtime, 0o700)
    env = dict(os.environ, LAYEREDIT_RUNTIME_DIR=str(runtime))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project_root), env.get("PYTHONPATH")]))
    log_path = runtime / "self-check.log"
    connection = runtime / "backend.json"
    with open(log_path, "w", encoding="utf-8") as log:
        server = subprocess.Popen(
            [str(python), "-m", "backend", "serve"],
            cwd=str(project_root),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_connection_file(server, connection, log_path, timeout)
        done = subprocess.run(
            [str(python), "-c", CLIENT_SNIPPET, str(connection), str(timeout / 2)],
            cwd=str(project_root),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise InstallError(
                f"self-check: the backend started but `hello` failed:\n{done.stderr.strip()[-2000:]}\nbackend log:\n{tail(log_path)}"
            )
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
            info, attempts = answer["hello"], answer["attempts"]
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise InstallError(f"self-check: `hello` printed no JSON: {done.stdout[-500:]!r}") from exc
        if attempts > 1:
            notes = "".join(f"\n      {line}" for line in done.stderr.strip().splitlines())
            print(f"    the backend was busy at first and answered hello on try {attempts}:{notes}")
        return info
    except subprocess.TimeoutExpired as exc:
        raise InstallError(
            f"self-check: `hello` got no answer within {timeout:.0f} s.\nbackend log:\n{tail(log_path)}"
        ) from exc
    finally:
        stop_process(server)
        shutil.rmtree(runtime, ignore_errors=True)


def wait_for_connection_file(
    server: subprocess.Popen, connection: Path, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not connection.is_file():
        if server.poll() is not None:
            raise InstallError(
                f"self-check: `python -m backend serve` exited with status {server.returncode} before it was ready.\nbackend log:\n{tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise InstallError(
                f"self-check: the backend wrote no {connection.name} within {timeout:.0f} s.\nbackend log:\n{tail(log_path)}"
            )
        time.sleep(0.1)
    time.sleep(0.2)  # the server writes the file atomically, but give it a moment to start listening too


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def tail(path: Path, limit: int = 3000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return text[-limit:].rstrip() or "(empty log)"


def describe_hello(info: Any) -> str:
    """One line from the hello reply: versions, devices and op names (whatever of them the backend sent)."""
    if not isinstance(info, dict):
        return "answered"
    bits = [
        f"{key} {info[key]}"
        for key in sorted(info)
        if "version" in key or key in ("protocol", "device", "devices")
    ]
    ops = info.get("ops")
    if isinstance(ops, dict):
        ops = list(ops)
    if isinstance(ops, list):
        names = [str(op.get("name", "?")) if isinstance(op, dict) else str(op) for op in ops]
        bits.append("ops: " + ", ".join(names))
    return "; ".join(bits) or "answered"


# ----------------------------------------------------------------------------------------------------------------
# Uninstall.


def uninstall(venv: Path, args: argparse.Namespace, tools: Tools) -> None:
    """Remove the plugins recorded in the state file (or the named ones); the venv only with --all."""
    state = load_state(venv)
    named = [host for host in HOSTS if getattr(args, host)]
    hosts = named or [host for host in HOSTS if host in state["plugins"]]
    python = venv_python(venv, tools.platform().system)
    started = phase("removing host plugins")
    if not hosts:
        print("    no plugins recorded in %s" % (venv / STATE_NAME))
    for host in hosts:
        recorded = state["plugins"].get(host, {}).get("options", {})
        given = {k: v for k, v in host_options(host, args).items() if v is not None}
        options = dict(recorded, **given)
        if args.dry_run:
            print(f"    would call {host}_plugin/installer.py install({options}, uninstall=True)")
            continue
        module = tools.load_installer(tools.project_root, host)
        try:
            module.install(tools.project_root, python, uninstall=True, **installer_kwargs(options))
        except Exception as exc:
            raise InstallError(
                f"removing the {HOST_TITLES[host]} plugin failed: {type(exc).__name__}: {exc}"
            ) from exc
        print(f"    {HOST_TITLES[host]} plugin removed")
        if host in state["plugins"] and venv.is_dir():
            del state["plugins"][host]
            save_state(venv, state)
    phase_done("plugins", started)
    if args.all:
        started = phase(f"removing the virtual environment {venv}")
        if not venv.exists():
            print("    not there; nothing to remove")
        elif args.dry_run:
            print(f"    would remove {venv}")
        else:
            remove_venv(venv)
        phase_done("venv", started)
    else:
        print(f"    kept the venv {venv} (remove it with --uninstall --all)")
    print(
        "    downloaded models are never removed; delete the models folder yourself if you want the space back"
    )


# ----------------------------------------------------------------------------------------------------------------
# Command line.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="install.py",
        description="Install the layer-edit backend (a Python virtual environment with pinned dependencies and "
        f"torch {TORCH_VERSION}), optional models, and the Krita / GIMP 3 plugins; then check that the backend answers.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_argument_group("environment")
    where.add_argument(
        "--venv", metavar="DIR", help="where the virtual environment goes (default: .venv next to install.py)"
    )
    where.add_argument(
        "--dev", action="store_true", help="also install the test and lint tools from requirements-dev.txt"
    )
    where.add_argument(
        "--torch",
        choices=TORCH_CHOICES,
        default="auto",
        help="torch build: auto (default) picks mps on Apple-silicon Macs, cuda when nvidia-smi lists a GPU, else cpu",
    )
    where.add_argument(
        "--torch-index",
        metavar="URL",
        help="install torch from this package index instead (e.g. https://download.pytorch.org/whl/cu128)",
    )
    where.add_argument(
        "--force",
        action="store_true",
        help="run pip for every part even when the state file says it is current (pip still skips what is satisfied)",
    )
    where.add_argument(
        "--recreate", action="store_true", help="delete the venv and build it again from scratch"
    )
    models = parser.add_argument_group("models")
    models.add_argument(
        "--models",
        metavar="NAME[,NAME]",
        help="download these model presets (needs network, once); `--models list` shows them",
    )
    models.add_argument(
        "--models-dir",
        metavar="DIR",
        help="where models go (default: $LAYEREDIT_MODELS or models/ next to install.py)",
    )
    hosts = parser.add_argument_group("host plugins (default: every host found on this machine)")
    hosts.add_argument(
        "--krita",
        action="store_true",
        help="install (or with --uninstall remove) the Krita plugin, even if Krita is not found",
    )
    hosts.add_argument(
        "--gimp",
        action="store_true",
        help="install (or with --uninstall remove) the GIMP 3 plugin, even if GIMP is not found",
    )
    hosts.add_argument("--no-hosts", action="store_true", help="install no host plugin (backend only)")
    hosts.add_argument(
        "--krita-dir", metavar="DIR", help="Krita resource folder to install into (default: Krita's own)"
    )
    hosts.add_argument(
        "--krita-python",
        metavar="VERSION",
        help="version of the Python that Krita bundles (e.g. 3.10): a matching pyzmq is put into the plugin",
    )
    hosts.add_argument(
        "--gimp-dir", metavar="DIR", help="GIMP 3 plug-ins folder to install into (default: GIMP's own)"
    )
    hosts.add_argument(
        "--gimp-python",
        metavar="PATH",
        help="the Python GIMP 3 runs plug-ins with, when not the system one: a pyzmq is put into the plugin if it lacks one",
    )
    other = parser.add_argument_group("other")
    other.add_argument(
        "--uninstall",
        action="store_true",
        help="remove the host plugins this script installed (only the named ones with --krita/--gimp); keeps the venv",
    )
    other.add_argument(
        "--all", action="store_true", help="with --uninstall: also delete the venv (models are never deleted)"
    )
    other.add_argument(
        "--no-self-check", action="store_true", help="skip starting the backend and saying hello at the end"
    )
    other.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")
    return parser


def parse_args(argv: list | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.all and not args.uninstall:
        parser.error("--all only goes with --uninstall (it deletes the venv)")
    if args.no_hosts and (args.krita or args.gimp):
        parser.error("--no-hosts contradicts --krita/--gimp; pass one or the other")
    if args.torch_index and not args.torch_index.startswith(("http://", "https://", "file:")):
        parser.error(f"--torch-index must be a URL (http://, https:// or file:), got {args.torch_index!r}")
    return args


def install(venv: Path, args: argparse.Namespace, tools: Tools) -> int:
    """venv -> packages -> models -> plugins -> self-check, each phase timed."""
    timings: list = []

    def step(name: str, title: str, fn: Callable) -> Any:
        started = phase(title)
        result = fn()
        timings.append((name, time.monotonic() - started))
        phase_done(name, started)
        return result

    python = step("venv", f"virtual environment {venv}", lambda: ensure_venv(venv, args, tools))
    state = load_state(venv)
    if not args.dry_run:
        state["python"] = ".".join(str(part) for part in tools.python_version)
    step("packages", "packages", lambda: install_packages(python, venv, args, tools, state))
    if args.models:
        step("models", "models", lambda: install_models(python, args, tools))
    warnings = step("plugins", "host plugins", lambda: install_plugins(python, venv, args, tools, state))
    if args.no_self_check or args.dry_run:
        print("==> self-check skipped")
    else:
        info = step(
            "self-check", "self-check (backend hello)", lambda: tools.self_check(tools.project_root, python)
        )
        print(f"    backend OK: {describe_hello(info)}")
    total = sum(seconds for _, seconds in timings)
    print(
        f"==> done in {total:.1f} s ("
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings)
        + ")"
    )
    for warning in warnings:
        print(f"WARNING: {warning}")
    print(f"backend python: {python}")
    return 0


def main(argv: list | None = None, tools: Tools | None = None) -> int:
    try:
        check_python(tools.python_version if tools else sys.version_info)
        args = parse_args(argv)
        tools = tools or Tools(project_root=Path(__file__).resolve().parent)
        if args.dry_run:
            tools.run = dry_run_command
        venv = Path(args.venv).expanduser().resolve() if args.venv else tools.project_root / ".venv"
        if args.uninstall:
            uninstall(venv, args, tools)
            return 0
        if args.models and [n.strip() for n in args.models.split(",")] == ["list"]:
            return list_models(tools.project_root)
        return install(venv, args, tools)
    except InstallError as exc:
        print(f"install.py: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("install.py: interrupted; re-run it to finish (finished parts are skipped)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

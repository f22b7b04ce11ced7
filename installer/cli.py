"""The command line: flags, the install phases in order, uninstall, and main()."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import InstallError
from .hosts import HOST_TITLES, HOSTS
from .models import install_models, list_models
from .plugins import host_options, install_plugins, installer_kwargs
from .selfcheck import describe_hello
from .state import STATE_NAME, load_state, save_state
from .tools import Tools, dry_run_command, phase, phase_done
from .torch_plan import TORCH_CHOICES, TORCH_VERSION, check_python
from .venv import ensure_venv, install_packages, remove_venv, venv_python

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


def main(argv: list | None = None, tools: Tools | None = None) -> int:
    try:
        check_python(tools.python_version if tools else sys.version_info)
        args = parse_args(argv)
        tools = tools or Tools(project_root=Path(__file__).resolve().parent.parent)
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

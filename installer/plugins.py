"""Host plugins: install each host's plugin through its <host>_plugin/installer.py, recorded in the state file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .errors import InstallError
from .hosts import HOST_TITLES, HOSTS
from .state import save_state
from .tools import Tools


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

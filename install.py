#!/usr/bin/env python3
"""Install layer-edit: the backend's virtual environment, pinned dependencies, torch, models and host plugins.

Standard library only: this file runs before the virtual environment exists. The work lives in the ``installer``
package next to it (one module per concern); this file is the entry point the README names and re-exports the
package's public names. Both keep to syntax that older Pythons can parse, so that running it with one prints a
clear "needs Python 3.11" instead of a SyntaxError.

Run ``python3 install.py --help`` for every option. Re-running is cheap: a state file inside the venv records what
was installed (hashes of the requirement files and the torch choice), and pip only runs for the parts that changed.
"""

from __future__ import annotations

import sys

from installer.cli import HELP_EPILOG, build_parser, install, main, parse_args, uninstall
from installer.errors import InstallError
from installer.hosts import HOST_TITLES, HOSTS, find_host, load_installer
from installer.models import install_models, list_models
from installer.selfcheck import SELF_CHECK_TIMEOUT_S, describe_hello, run_self_check
from installer.state import STATE_NAME, STATE_VERSION, load_state, parts_to_install, save_state, wanted_parts
from installer.tools import Tools, dry_run_command, run_command
from installer.torch_plan import (
    MIN_PYTHON,
    PYTORCH_CPU_INDEX,
    PYTORCH_CUDA_INDEX,
    TORCH_CHOICES,
    TORCH_VERSION,
    PlatformFacts,
    TorchPlan,
    check_python,
    plan_torch,
    resolve_torch_build,
)
from installer.venv import ensure_venv, install_packages, venv_python

__all__ = [
    "HELP_EPILOG", "HOSTS", "HOST_TITLES", "MIN_PYTHON", "PYTORCH_CPU_INDEX", "PYTORCH_CUDA_INDEX",
    "SELF_CHECK_TIMEOUT_S", "STATE_NAME", "STATE_VERSION", "TORCH_CHOICES", "TORCH_VERSION", "InstallError",
    "PlatformFacts", "Tools", "TorchPlan", "build_parser", "check_python", "describe_hello", "dry_run_command",
    "ensure_venv", "find_host", "install", "install_models", "install_packages", "list_models", "load_installer",
    "load_state", "main", "parse_args", "parts_to_install", "plan_torch", "resolve_torch_build", "run_command",
    "run_self_check", "save_state", "uninstall", "venv_python", "wanted_parts",
]  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())

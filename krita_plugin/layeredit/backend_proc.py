"""Starting the backend from inside Krita: the Krita side of ``protocol.launcher``.

The installer writes ``config.json`` next to this package (project root + venv python);
$LAYEREDIT_PROJECT / $LAYEREDIT_PYTHON override it (tests, development). The docker polls the launcher
from a QTimer (``Launcher.poll`` never blocks) and shows ``failure_text`` (with the log tail) when it fails.
"""

from __future__ import annotations

import os
from pathlib import Path

from protocol.launcher import LaunchConfig, Launcher
from protocol.launcher import load_config as _load_config

PACKAGE_DIR = Path(__file__).resolve().parent
INSTALL_HINT = "python3 install.py --krita"


def load_config(path: Path | None = None) -> LaunchConfig:
    return _load_config(path or PACKAGE_DIR / "config.json", os.environ)


def new_launcher(config: LaunchConfig | None = None) -> Launcher:
    return Launcher(config or load_config(), host="krita", install_hint=INSTALL_HINT)

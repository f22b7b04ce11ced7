"""Finding and loading model weights offline: device/dtype choice, memory budget, install presets.

Importing this package is cheap (torch/diffusers load on first use). It also switches the Hugging Face
libraries to offline mode for this process unless the user said otherwise: the backend never downloads.
"""

from __future__ import annotations

import os

# Remembered so that the install-time downloader (presets.py) can lift the switch it did not get from the user.
OFFLINE_SET_HERE = "HF_HUB_OFFLINE" not in os.environ
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from .locate import Location  # noqa: E402
from .manager import LoadStats, ModelManager, module_bytes  # noqa: E402
from .presets import PRESETS, default_models_dir, install_command  # noqa: E402

__all__ = [
    "PRESETS",
    "LoadStats",
    "Location",
    "ModelManager",
    "default_models_dir",
    "install_command",
    "module_bytes",
]

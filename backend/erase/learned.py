"""Which learned erase filler (LaMa, MI-GAN) is installed: the one question erase's ``fill=auto`` asks.

The name fill-patchmatch's ``auto`` imports (agreed for issue 11); the answer lives with the loaders in
``fill_learned.py``: cheap (locates files, loads nothing), never raises for a missing model, "lama" before
"migan". An installed but broken model is still named, so using it says MODEL_BROKEN with the reinstall command.
"""

from __future__ import annotations

from .fill_learned import LEARNED_FILLS, installed_learned_fill, installed_learned_filler, learned_filler

__all__ = ["LEARNED_FILLS", "installed_learned_fill", "installed_learned_filler", "learned_filler"]

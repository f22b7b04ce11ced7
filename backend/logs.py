"""Logging: stderr plus a rotating file in the runtime directory (``<runtime>/logs/backend.log``)."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from protocol import connection

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level: int | str = logging.INFO, log_dir: Path | None = None) -> Path | None:
    """Configure the ``layeredit`` loggers once; returns the log file (None if it cannot be created)."""
    root = logging.getLogger("layeredit")
    root.setLevel(level)
    if getattr(root, "_layeredit_configured", False):
        return getattr(root, "_layeredit_file", None)
    stderr = logging.StreamHandler()
    stderr.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(stderr)
    path: Path | None = None
    try:
        log_dir = log_dir or connection.runtime_dir() / "logs"
        log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = log_dir / "backend.log"
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=5 << 20, backupCount=3, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter(FORMAT))
        path.chmod(0o600)  # prompts and file paths end up in there
        root.addHandler(handler)
    except OSError as exc:  # logging to stderr still works
        root.warning("no log file: %s", exc)
        path = None
    root._layeredit_configured = True  # type: ignore[attr-defined]
    root._layeredit_file = path  # type: ignore[attr-defined]
    return path

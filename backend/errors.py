"""Errors every layer of the backend raises: a leaf module, so models, pipelines and ops can all import it
without importing each other (``backend/ops/base.py`` re-exports both for the ops)."""

from __future__ import annotations

from protocol.errors import ProtocolError


class OpError(ProtocolError):
    """A user-facing failure with a stable code (missing model, empty selection...): the host shows its message."""


class JobCancelled(Exception):
    """Raised inside an op by ``JobContext.check_cancelled`` once a cancel arrived."""

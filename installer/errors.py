"""Errors the user can act on."""

from __future__ import annotations


class InstallError(Exception):
    """A failure the user can act on: the message says what happened and what to do."""

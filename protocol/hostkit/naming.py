"""Naming the result layers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from protocol.hostkit.modes import Mode


def layer_name(mode: Mode, params: dict[str, Any], *, limit: int = 48) -> str:
    """'Erase', 'Replace: a red car', 'Imagic η0.7: a dog sitting' — the op plus what the user asked for."""
    prompt = " ".join(str(params.get("prompt", "")).split())
    head = mode.label
    if mode.op == "imagic" and "eta" in params:
        eta = params["eta"]
        if isinstance(eta, list | tuple):
            eta = eta[0] if eta else None
        if eta is not None:
            head = f"{head} η{float(eta):g}"
    if not prompt:
        return head
    if len(prompt) > limit:
        prompt = prompt[: limit - 1].rstrip() + "…"
    return f"{head}: {prompt}"


def unique_name(name: str, existing: Iterable[str]) -> str:
    """Add ' (2)', ' (3)'... so repeated runs give distinguishable layers."""
    taken = set(existing)
    if name not in taken:
        return name
    n = 2
    while f"{name} ({n})" in taken:
        n += 1
    return f"{name} ({n})"

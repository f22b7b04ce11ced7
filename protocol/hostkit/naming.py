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


def result_names(
    mode: Mode, params: dict[str, Any], meta: dict[str, Any], count: int, existing: Iterable[str]
) -> list[str]:
    """One layer name per result image (the primary first, then the candidates), each unique among
    ``existing`` and the others. Imagic renders one image per eta: each is named after the eta the backend
    says it rendered it with (``meta["etas"]``, in the images' order), else after the requested ``eta`` list
    when that has one value per image; otherwise all are named from ``params`` (and numbered)."""
    etas = _one_per_image(meta.get("etas"), count)
    if etas is None:
        etas = _one_per_image(params.get("eta"), count)
    taken = list(existing)
    names = []
    for i in range(count):
        name = layer_name(mode, params if etas is None else {**params, "eta": etas[i]})
        names.append(unique_name(name, taken))
        taken.append(names[-1])
    return names


def _one_per_image(values: Any, count: int) -> list[Any] | None:
    return list(values) if isinstance(values, list | tuple) and len(values) == count else None

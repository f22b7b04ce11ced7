"""Op registry: the product's ops, by name. Each module defines one ``Op`` subclass.

Tests may register extra ops on a ``Registry`` of their own; the product registers only real ops.
"""

from __future__ import annotations

import importlib

from protocol.errors import ErrorCode

from .base import JobCancelled, JobContext, Op, OpError, OpInputs, OpResult, OpSpec, ParamSpec

# module name -> class name; modules import lazily so `hello` does not pay for torch until an op runs.
_PRODUCT_OPS: dict[str, tuple[str, str]] = {
    "imagic": ("backend.ops.imagic", "ImagicOp"),
    "replace": ("backend.ops.replace", "ReplaceOp"),
    "snap": ("backend.ops.snap", "SnapOp"),
    "erase": ("backend.ops.erase", "EraseOp"),
}


class Registry:
    def __init__(self, ops: dict[str, type[Op]] | None = None):
        self._ops: dict[str, type[Op]] = dict(ops or {})

    def register(self, op: type[Op]) -> type[Op]:
        self._ops[op.spec.name] = op
        return op

    def names(self) -> list[str]:
        return sorted(self._ops)

    def specs(self) -> list[OpSpec]:
        return [self._ops[n].spec for n in self.names()]

    def get(self, name: str) -> type[Op]:
        try:
            return self._ops[name]
        except KeyError:
            raise OpError(
                ErrorCode.UNKNOWN_OP,
                f"Unknown op {name!r}; this backend offers: {', '.join(self.names()) or 'none'}.",
                {"op": name},
            ) from None


def product_registry() -> Registry:
    """The registry the server and CLI use: every op listed in ``_PRODUCT_OPS``."""
    reg = Registry()
    for module, cls in _PRODUCT_OPS.values():
        reg.register(getattr(importlib.import_module(module), cls))
    return reg


__all__ = [
    "JobCancelled",
    "JobContext",
    "Op",
    "OpError",
    "OpInputs",
    "OpResult",
    "OpSpec",
    "ParamSpec",
    "Registry",
    "product_registry",
]

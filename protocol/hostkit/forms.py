"""Parameter forms built from the op schemas a backend advertises in ``hello``; widgets are the host's business."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import ErrorCode, ProtocolError
from protocol.params import Param

# One form field: the very type the backend declares its parameters with (protocol/params.py), read back from
# ``hello`` with ``Field.from_json``; ``parse`` takes a widget's value, ``to_text`` shows one.
Field = Param

# Params the docker shows as dedicated widgets (not in the generic form).
PROMPT_PARAMS = ("prompt", "negative_prompt")


@dataclass
class Form:
    """The parameter form of one op: basic fields up front, advanced ones folded; holds the current values."""

    op: str
    help: str
    fields: list[Field]
    values: dict[str, Any] = field(default_factory=dict)
    needs_selection: bool | None = None  # the op's schema flag; None: the schema does not say (older backend)

    @classmethod
    def from_op_json(cls, spec: dict) -> Form:
        fields = [Field.from_json(p) for p in spec.get("params", [])]
        needs = spec.get("needs_selection")
        return cls(
            str(spec["name"]),
            str(spec.get("help", "")),
            fields,
            {f.name: f.default for f in fields},
            None if needs is None else bool(needs),
        )

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def has(self, name: str) -> bool:
        return any(f.name == name for f in self.fields)

    @property
    def basic(self) -> list[Field]:
        return [f for f in self.fields if not f.advanced and f.name not in PROMPT_PARAMS]

    @property
    def advanced(self) -> list[Field]:
        return [f for f in self.fields if f.advanced and f.name not in PROMPT_PARAMS]

    def set(self, name: str, value: Any) -> None:
        """Set from a widget value; raises ``bad_param`` (the old value stays)."""
        self.values[name] = self.field(name).parse(value)

    def reset(self) -> None:
        self.values = {f.name: f.default for f in self.fields}

    def params(self, **overrides: Any) -> dict[str, Any]:
        """The params to submit: only names the op knows (the backend rejects unknown ones), values parsed."""
        out = dict(self.values)
        for name, value in overrides.items():
            if self.has(name):
                out[name] = self.field(name).parse(value)
        return out


def forms_from_hello(hello: dict) -> dict[str, Form]:
    """op name -> Form, from the ``ops`` list of a hello reply."""
    return {f.op: f for f in (Form.from_op_json(s) for s in hello.get("ops", []))}


def op_form(forms: Mapping[str, Form], op: str) -> Form:
    """The form of ``op`` among a backend's ``forms``; ``unknown_op`` (saying what it offers and how to update
    it) when that backend has no such op."""
    form = forms.get(op)
    if form is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_OP,
            f"This backend has no '{op}' op (it offers: {', '.join(sorted(forms)) or 'none'}); "
            "update it with: python3 install.py",
        )
    return form


def only_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> set[str]:
    """Names whose value differs between two param dicts (Imagic re-renders cheaply when only eta changed)."""
    if old is None:
        return set(new)
    return {k for k in set(old) | set(new) if old.get(k) != new.get(k)}

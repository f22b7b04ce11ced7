"""Parameter forms built from the op schemas a backend advertises in ``hello``; widgets are the host's business."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import ErrorCode, ProtocolError


@dataclass(frozen=True)
class Field:
    """One form field, built from ``ParamSpec.to_json``; widgets are the host's business."""

    name: str
    type: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    advanced: bool = False
    needs: tuple[tuple[str, str], ...] = ()  # (choice, model preset it needs), in the order of ``choices``

    @property
    def label(self) -> str:
        return self.name.replace("_", " ").capitalize()

    @property
    def unit(self) -> str:
        """ "px" for a number the schema's help measures in pixels (margin, grow, feather, ...), else ""."""
        return "px" if self.type in ("int", "float") and "pixel" in self.help.lower() else ""

    @classmethod
    def from_json(cls, spec: dict) -> Field:
        try:
            return cls(
                name=str(spec["name"]),
                type=str(spec["type"]),
                default=spec.get("default"),
                help=str(spec.get("help", "")),
                min=spec.get("min"),
                max=spec.get("max"),
                choices=tuple(spec.get("choices") or ()),
                advanced=bool(spec.get("advanced", False)),
                needs=_needs(spec.get("needs"), tuple(spec.get("choices") or ())),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProtocolError(
                ErrorCode.MALFORMED, f"Backend sent a bad parameter schema: {exc!r}."
            ) from None

    def parse(self, value: Any) -> Any:
        """Coerce a widget's value (often text) to this field's type, or raise ``bad_param`` saying what's wrong."""
        try:
            out = self._coerce(value)
        except (TypeError, ValueError):
            raise self._bad(value, _EXPECTED.get(self.type, self.type)) from None
        if self.type in ("int", "float"):
            self._check_range(out)
        elif self.type == "float_list":
            for v in out:
                self._check_range(v)
        elif self.type == "enum" and out not in self.choices:
            raise self._bad(value, "one of " + ", ".join(self.choices))
        return out

    def _coerce(self, value: Any) -> Any:
        if self.type == "bool":
            if isinstance(value, str):
                if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return value.strip().lower() in ("true", "1", "yes", "on")
            return bool(value)
        if self.type == "int":
            f = float(value)
            if not f.is_integer():
                raise ValueError(value)
            return int(f)
        if self.type == "float":
            f = float(value)
            if not math.isfinite(f):
                raise ValueError(value)
            return f
        if self.type == "float_list":
            if isinstance(value, str):
                items = value.replace(";", ",").split(",")
            elif isinstance(value, int | float) and not isinstance(value, bool):
                items = [value]  # a slider's single value
            else:
                items = list(value)
            out = [float(v) for v in items if str(v).strip()]
            if not out or not all(math.isfinite(v) for v in out):
                raise ValueError(value)
            return out
        return str(value)

    def _check_range(self, v: float) -> None:
        if (self.min is not None and v < self.min) or (self.max is not None and v > self.max):
            raise self._bad(v, f"between {self.min} and {self.max}")

    def _bad(self, value: Any, expected: str) -> ProtocolError:
        return ProtocolError(
            ErrorCode.BAD_PARAM, f"{self.label} got {value!r}; expected {expected}.", {"param": self.name}
        )

    def to_text(self, value: Any) -> str:
        if self.type == "float_list":
            return ", ".join(f"{v:g}" for v in value)
        if self.type == "bool":
            return "true" if value else "false"
        return "" if value is None else str(value)


def _needs(raw: Any, choices: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The schema's ``needs`` ({choice: preset}) as pairs, in the schema's order (the op lists the choice it
    recommends first); choices the field does not offer are dropped."""
    if not raw:
        return ()
    return tuple((str(c), str(p)) for c, p in raw.items() if not choices or str(c) in choices)


_EXPECTED = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "float_list": "numbers separated by commas",
}

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

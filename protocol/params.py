"""One description of an op parameter, for both ends of the wire.

The backend declares a parameter once, as a field of an op's params dataclass with ``param(...)`` metadata
(backend/params/); ``schema(cls)`` turns those fields into ``Param`` objects, ``hello`` sends their ``to_json``,
the backend's door checks wire values with ``Param.validate`` and ``build(cls, values)`` turns checked values into
the dataclass the pipeline runs. The hosts read the same ``Param`` back with ``from_json`` and parse widget text with
``parse``: one type, so the CLI, the Krita docker and the GIMP dialog all show what the dataclass says.
Stdlib only: this module runs inside Krita's and GIMP's Python.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ErrorCode, ProtocolError

ParamType = Literal["int", "float", "bool", "str", "enum", "float_list"]
META_KEY = "layeredit.param"  # dataclass field metadata key holding a ``_Meta``

_EXPECTED = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "float_list": "numbers separated by commas",
}


@dataclass(frozen=True)
class Param:
    """One typed, documented parameter: what ``hello`` advertises, what the door checks, what a form shows."""

    name: str
    type: ParamType
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    advanced: bool = False  # hosts fold these away behind an "Advanced" section
    max_length: int = 2000  # for str
    max_items: int = 16  # for float_list
    # enum: (choice, model preset) for choices that need a model installed; hosts compare it with the presets
    # ``hello`` reports installed, to say what better quality needs and the command that installs it.
    needs: tuple[tuple[str, str], ...] = ()
    nonempty: bool = False  # str: blank text is refused at the door (a prompt)

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices or ()))
        object.__setattr__(self, "needs", tuple(tuple(pair) for pair in self.needs or ()))

    # -- the wire -------------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "help": self.help,
        }
        for key in ("min", "max"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.choices:
            out["choices"] = list(self.choices)
        if self.advanced:
            out["advanced"] = True
        if self.needs:
            out["needs"] = dict(self.needs)
        if self.nonempty:
            out["nonempty"] = True
        return out

    @classmethod
    def from_json(cls, spec: dict) -> Param:
        """The backend's schema entry; a malformed one is a ``malformed`` error (the backend is at fault)."""
        try:
            choices = tuple(str(c) for c in spec.get("choices") or ())
            return cls(
                name=str(spec["name"]),
                type=str(spec["type"]),  # type: ignore[arg-type]
                default=spec.get("default"),
                help=str(spec.get("help", "")),
                min=spec.get("min"),
                max=spec.get("max"),
                choices=choices,
                advanced=bool(spec.get("advanced", False)),
                needs=_needs(spec.get("needs"), choices),
                nonempty=bool(spec.get("nonempty", False)),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProtocolError(
                ErrorCode.MALFORMED, f"Backend sent a bad parameter schema: {exc!r}."
            ) from None

    def validate(self, value: Any) -> Any:
        """A wire (JSON) value, checked strictly: the value in this type, or ``bad_param`` saying what is expected."""
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            raise self._bad_wire(value, "true or false")
        if self.type == "int":
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)  # NaN/Infinity: JSON from the network may carry them
                or value != int(value)
            ):
                raise self._bad_wire(value, "a whole number")
            return self._ranged(int(value), self._bad_wire)
        if self.type == "float":
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise self._bad_wire(value, "a number")
            return self._ranged(float(value), self._bad_wire)
        if self.type == "str":
            if not isinstance(value, str):
                raise self._bad_wire(value, "a string")
            if len(value) > self.max_length:
                raise self._bad_wire(f"{len(value)} characters", f"at most {self.max_length} characters")
            if self.nonempty and not value.strip():
                raise ProtocolError(
                    ErrorCode.BAD_PARAM,
                    f"Parameter '{self.name}' is empty; {self.help[:1].lower()}{self.help[1:]}",
                    {"param": self.name},
                )
            return value
        if self.type == "enum":
            if not isinstance(value, str) or value not in self.choices:
                raise self._bad_wire(value, f"one of {', '.join(self.choices)}")
            return value
        if self.type == "float_list":
            items = [value] if isinstance(value, int | float) and not isinstance(value, bool) else value
            if not isinstance(items, list | tuple) or not items or len(items) > self.max_items:
                raise self._bad_wire(value, f"a list of 1 to {self.max_items} numbers")
            single = Param(self.name, "float", 0.0, self.help, self.min, self.max)
            return [single.validate(v) for v in items]
        raise AssertionError(f"unknown param type {self.type}")

    # -- the hosts' forms ------------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        return self.name.replace("_", " ").capitalize()

    @property
    def unit(self) -> str:
        """ "px" for a number the help measures in pixels (margin, grow, feather, ...), else ""."""
        return "px" if self.type in ("int", "float") and "pixel" in self.help.lower() else ""

    def parse(self, value: Any) -> Any:
        """A widget's value (often text), coerced leniently to this type, or ``bad_param`` saying what's wrong."""
        try:
            out = self._coerce(value)
        except (TypeError, ValueError):
            raise self._bad_text(value, _EXPECTED.get(self.type, self.type)) from None
        if self.type in ("int", "float"):
            self._ranged(out, self._bad_text)
        elif self.type == "float_list":
            for v in out:
                self._ranged(v, self._bad_text)
        elif self.type == "enum" and out not in self.choices:
            raise self._bad_text(value, "one of " + ", ".join(self.choices))
        return out

    def to_text(self, value: Any) -> str:
        if self.type == "float_list":
            return ", ".join(f"{v:g}" for v in value)
        if self.type == "bool":
            return "true" if value else "false"
        return "" if value is None else str(value)

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

    def _ranged(self, value: Any, bad: Any) -> Any:
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise bad(value, f"between {self.min} and {self.max}")
        return value

    def _bad_wire(self, value: Any, expected: str) -> ProtocolError:
        return ProtocolError(
            ErrorCode.BAD_PARAM,
            f"Parameter '{self.name}' got {value!r}; expected {expected}.",
            {"param": self.name},
        )

    def _bad_text(self, value: Any, expected: str) -> ProtocolError:
        return ProtocolError(
            ErrorCode.BAD_PARAM, f"{self.label} got {value!r}; expected {expected}.", {"param": self.name}
        )


def _needs(raw: Any, choices: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The schema's ``needs`` ({choice: preset}) as pairs, in the schema's order (the op lists the choice it
    recommends first); choices the field does not offer are dropped."""
    if not raw:
        return ()
    return tuple((str(c), str(p)) for c, p in raw.items() if not choices or str(c) in choices)


# ----------------------------------------------------------------------------------------------------------
# Declaring parameters on a dataclass: the field is the parameter.


_UNSET: Any = type("_Unset", (), {"__repr__": lambda self: "UNSET"})()


@dataclass(frozen=True)
class _Meta:
    help: str
    type: str | None = None
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    advanced: bool = False
    needs: tuple[tuple[str, str], ...] = ()
    nonempty: bool = False
    max_length: int = 2000
    max_items: int = 16
    wire: str | None = None  # the wire name, where the pipeline's field name differs
    none: Any = _UNSET  # the wire value that stands for the field's None ("0 = the model's own")
    wire_default: Any = _UNSET  # the wire's default, where it differs (seed -1 = "pick one")
    group: bool = False  # a nested params dataclass whose fields are on the wire, flat
    fmt: tuple[tuple[str, str], ...] = ()  # group: values for ``{name}`` in its fields' help


_SAME = (
    "min",
    "max",
    "choices",
    "advanced",
    "max_length",
    "max_items",
    "needs",
    "nonempty",
)  # _Meta -> Param


def param(
    default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING, **meta
):
    """A dataclass field that is an op parameter on the wire; keywords as ``_Meta`` (help, min, max, choices,
    advanced, needs, nonempty, wire, none, wire_default, type)."""
    for key in ("choices", "needs"):
        if key in meta:
            meta[key] = tuple(meta[key])
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={META_KEY: _Meta(help=help, **meta)}
    )


def group(factory: Any, **fmt: str):
    """A nested params dataclass whose parameters go on the wire flat, in its field order; ``fmt`` fills
    ``{name}`` placeholders in their help (e.g. verb="erase")."""
    return dataclasses.field(
        default_factory=factory, metadata={META_KEY: _Meta(help="", group=True, fmt=tuple(fmt.items()))}
    )


def schema(cls: type) -> tuple[Param, ...]:
    """The wire parameters of a params dataclass, in field order (groups flattened)."""
    return tuple(p for p, _ in _walk(cls, ()))


def build(cls: type, values: dict[str, Any]) -> Any:
    """The params dataclass from checked wire values (names and None-values mapped back); wire names missing from
    ``values`` keep the dataclass's own default."""
    return _build(cls, values, ())


def refuse_blank(obj: Any) -> None:
    """ValueError naming the first ``nonempty`` field of a params dataclass that is blank: the same declaration the
    door checks on the wire, applied for library callers that build the dataclass themselves (benches, tests)."""
    for f in dataclasses.fields(obj):
        meta = f.metadata.get(META_KEY)
        value = getattr(obj, f.name)
        if meta is not None and meta.nonempty and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"{f.name}: {meta.help[:1].lower()}{meta.help[1:]}")


def _walk(cls: type, fmt: tuple) -> list[tuple[Param, dataclasses.Field]]:
    hints = typing.get_type_hints(cls)
    out: list[tuple[Param, dataclasses.Field]] = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(META_KEY)
        if meta is None:
            continue
        if meta.group:
            out.extend(_walk(hints[f.name], meta.fmt))
            continue
        if meta.wire_default is not _UNSET:
            default = meta.wire_default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = f.default
        if default is None and meta.none is not _UNSET:
            default = meta.none
        p = Param(
            name=meta.wire or f.name,
            type=meta.type or _type_of(hints[f.name], meta),  # type: ignore[arg-type]
            default=default,
            help=meta.help.format(**dict(fmt)) if fmt else meta.help,
            **{key: getattr(meta, key) for key in _SAME},
        )
        out.append((p, f))
    return out


def _type_of(hint: Any, meta: _Meta) -> str:
    if meta.choices:
        return "enum"
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is list:
        return "float_list"
    if args and hint not in (bool, int, float, str):
        hint = args[0]
    names = {bool: "bool", int: "int", float: "float", str: "str"}
    if hint not in names:
        raise TypeError(f"no wire type for {hint!r}; give param(type=...)")
    return names[hint]


def _build(cls: type, values: dict[str, Any], fmt: tuple) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(META_KEY)
        if meta is None:
            continue
        if meta.group:
            kwargs[f.name] = _build(hints[f.name], values, meta.fmt)
            continue
        name = meta.wire or f.name
        if name not in values:
            continue
        value = values[name]
        if meta.none is not _UNSET and value == meta.none:
            value = None
        kwargs[f.name] = list(value) if isinstance(value, list) else value
    return cls(**kwargs)

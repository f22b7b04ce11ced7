"""PDB arguments built from the backend's op schemas, and the config -> params mapping back.

GIMP registers a procedure's arguments when it queries the plug-in (at start-up, cached until the plug-in
changes), so the schemas come from ``schemas.json`` written by the installer, which asked the backend's
registry. The same arguments serve the GimpUi dialog (interactive), scripts and batch mode (non-interactive).
At run time the live ``hello`` schema decides what is sent: a parameter the backend no longer knows is
dropped, one it added but GIMP has not registered yet takes the backend's default.
"""

from __future__ import annotations

import json
from typing import Any

from protocol.errors import ErrorCode, ProtocolError
from protocol.hostkit import REACH_PARAMS, Form
from protocol.params import Param

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
FLOAT_LIMIT = 1e9
EXTRA = "extra-params"  # JSON object of params by op name, for parameters without their own argument
SELECT = "select-mask"  # make the snapped mask the selection (ops that return one)
HOST_ARGS = (EXTRA, SELECT)


def arg_name(param: str) -> str:
    """PDB names are lower-case kebab: negative_prompt -> negative-prompt."""
    return param.replace("_", "-").lower()


DIALOG_KEYS = "slhrco"  # taken by the dialog's own buttons (Load/Save settings, Help, Reset, Cancel, OK)


def nick(param: str, used: set[str] | None = None) -> str:
    """The dialog label with a keyboard mnemonic (GimpUi wants one per field): the first letter not yet taken."""
    label = param.replace("_", " ").capitalize()
    used = set(DIALOG_KEYS) if used is None else used
    for i, ch in enumerate(label):
        if ch.isalnum() and ch.lower() not in used:
            used.add(ch.lower())
            return f"{label[:i]}_{label[i:]}"
    return label


def add_arguments(
    procedure: Any, op_schema: dict, gimp: Any, gobject: Any, *, select: bool = True
) -> list[str]:
    """Register one PDB argument per schema parameter (plus the host's own); returns their names.
    ``select``: also "Select the snapped object" (only ops that return the snapped object's mask)."""
    flags = gobject.ParamFlags.READWRITE
    names = []
    keys = set(DIALOG_KEYS)
    for p in (
        Param.from_json(raw) for raw in op_schema.get("params", [])
    ):  # the type the backend declares with
        name, label, default = arg_name(p.name), nick(p.name, keys), p.default
        if p.type == "int":
            lo, hi = int(_or(p.min, INT_MIN)), int(_or(p.max, INT_MAX))
            procedure.add_int_argument(name, label, p.help, lo, hi, int(default), flags)
        elif p.type == "float":
            lo, hi = float(_or(p.min, -FLOAT_LIMIT)), float(_or(p.max, FLOAT_LIMIT))
            procedure.add_double_argument(name, label, p.help, lo, hi, float(default), flags)
        elif p.type == "bool":
            procedure.add_boolean_argument(name, label, p.help, bool(default), flags)
        elif p.type == "enum":
            choice = gimp.Choice.new()
            for i, value in enumerate(p.choices):
                choice.add(value, i, value, "")
            procedure.add_choice_argument(name, label, p.help, choice, str(default), flags)
        elif p.type == "float_list":
            text = p.to_text(default if isinstance(default, list) else [default])
            procedure.add_string_argument(name, label, p.help + " (comma list)", text, flags)
        else:  # "str" and any type added later: a string the backend validates
            procedure.add_string_argument(name, label, p.help, str(default or ""), flags)
        names.append(name)
    if select:
        procedure.add_boolean_argument(
            SELECT,
            nick("select_the_snapped_object", keys),
            "Make the snapped object the selection",
            False,
            flags,
        )
    # For scripts only (the dialog never shows it: raw JSON is not for artists).
    procedure.add_string_argument(
        EXTRA, nick("extra_params", keys) + " (JSON)", "Further op params as a JSON object", "{}", flags
    )
    return names


def _or(value: float | None, fallback: float) -> float:
    return fallback if value is None else value


def advanced_names(schema_params: list[dict]) -> list[str]:
    """Arguments the dialog folds away: the schema's advanced ones."""
    return [arg_name(p["name"]) for p in schema_params if p.get("advanced")]


def params_from_config(config: Any, form: Form, registered: set[str]) -> dict[str, Any]:
    """The params to send, for the LIVE op form (from ``hello``): every registered argument the op still knows,
    parsed by the shared form logic; ``extra-params`` (JSON) on top, checked by the backend."""
    for f in form.fields:
        name = arg_name(f.name)
        if name in registered:
            form.set(f.name, config.get_property(name))
    params = form.params()
    extra_text = config.get_property(EXTRA) if EXTRA in registered else ""
    if extra_text and extra_text.strip():
        try:
            extra = json.loads(extra_text)
        except ValueError as exc:
            raise ProtocolError(
                ErrorCode.BAD_PARAM,
                f"'{EXTRA}' is not valid JSON ({exc}); give an object like {{\"seed\": 3}}.",
            ) from None
        if not isinstance(extra, dict):
            raise ProtocolError(ErrorCode.BAD_PARAM, f"'{EXTRA}' must be a JSON object like {{\"seed\": 3}}.")
        params.update(extra)
    return params


def reach_params(config: Any, registered: set[str]) -> dict[str, Any]:
    """The chosen values of the parameters that widen what an op reads (``hostkit.op_reach``: margin, grow),
    for ``read_source``, which runs before any backend is asked (so a missing selection is said without one).
    ``extra-params`` wins, as in ``params_from_config``; what cannot be read is left to the defaults (and an
    invalid ``extra-params`` is reported by ``params_from_config``)."""
    out = {n: config.get_property(arg_name(n)) for n in REACH_PARAMS if arg_name(n) in registered}
    try:
        extra = json.loads(config.get_property(EXTRA) or "{}") if EXTRA in registered else {}
    except ValueError:
        extra = {}
    if isinstance(extra, dict):
        out.update({n: extra[n] for n in REACH_PARAMS if n in extra})
    return out

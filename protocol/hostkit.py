"""Host-neutral plugin logic shared by the Krita docker and the GIMP plug-in.

Everything here is plain Python (stdlib only: it runs inside the hosts' Python, where numpy may be missing) so
it is tested without a host: which pixel layout a host's colour model maps to, which rectangle of the image to
send, how the selection relates to it, the parameter form built from the schemas ``hello`` advertises, the
job's state machine, and the name of the result layer. The host plugins only do I/O and widgets.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from protocol import connection
from protocol.errors import ErrorCode, ProtocolError

# ----------------------------------------------------------------------------------------------------------
# Modes: what the user picks, and which backend op runs it.


LAYER, SELECTION = "layer", "selection"  # what a mode's result becomes in the host


@dataclass(frozen=True)
class Mode:
    label: str  # shown in the UI and used in layer names
    op: str  # backend op name
    needs_selection: bool  # False: without a selection the whole layer is the input
    has_prompt: bool
    has_negative: bool
    output: str = LAYER  # LAYER: new layer(s) above the source; SELECTION: the result replaces the selection
    snaps: bool = (
        False  # returns the snapped object's mask: hosts offer "select the snapped object afterwards"
    )

    @property
    def makes_layer(self) -> bool:
        return self.output == LAYER


# The order both hosts show them in: the Krita docker's Mode list and GIMP's Filters > AI Edit menu.
MODES: tuple[Mode, ...] = (
    Mode("Erase", "erase", needs_selection=True, has_prompt=False, has_negative=False, snaps=True),
    Mode("Replace", "replace", needs_selection=True, has_prompt=True, has_negative=True, snaps=True),
    Mode("Imagic", "imagic", needs_selection=False, has_prompt=True, has_negative=True),
    # The snap op as a smart selection tool (like Photoshop's Object Selection): rough selection in, the
    # selection snapped to the object out; no pixels change and no layer is added.
    Mode(
        "Select object", "snap", needs_selection=True, has_prompt=False, has_negative=False, output=SELECTION
    ),
)


def mode_by_label(label: str) -> Mode:
    for m in MODES:
        if m.label.lower() == label.lower() or m.op == label.lower():
            return m
    raise ProtocolError(
        ErrorCode.UNKNOWN_OP, f"Unknown mode {label!r}; pick one of {', '.join(m.label for m in MODES)}."
    )


def no_selection_message(mode: Mode) -> str:
    """What to tell the user when a mode needs a selection and there is none (stable wording for tests)."""
    what = {"erase": "remove", "snap": "select"}.get(mode.op, "replace")
    return (
        f"{mode.label} needs a selection: select roughly around the object you want to {what} "
        "(any selection tool; it is snapped to the object's edge), then press Run."
    )


# ----------------------------------------------------------------------------------------------------------
# Pixel layouts.


@dataclass(frozen=True)
class PixelLayout:
    """How a host hands out pixels: sample type, channel count and channel order (as the protocol names them)."""

    sample: str  # "u8" | "u16" | "f16" | "f32"
    order: str  # "BGRA", "RGBA", "GA", ...

    @property
    def channels(self) -> int:
        return len(self.order)

    @property
    def bytes_per_sample(self) -> int:
        return SAMPLE_BYTES[self.sample]

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * self.bytes_per_sample

    def nbytes(self, width: int, height: int) -> int:
        return width * height * self.bytes_per_pixel


SAMPLE_BYTES = {"u8": 1, "u16": 2, "f16": 2, "f32": 4}
_KRITA_DEPTHS = {"U8": "u8", "U16": "u16", "F16": "f16", "F32": "f32"}


def krita_layout(color_model: str, depth: str) -> PixelLayout:
    """Krita's Node.pixelData layout. Integer RGB depths are stored BGRA (KoBgrU8/U16 traits), float depths RGBA;
    sending the host's order as-is lets the backend reorder with numpy instead of Python loops here."""
    sample = _KRITA_DEPTHS.get(depth)
    if sample is None:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"Colour depth {depth} is not supported; use Image > Convert Image Color Space to 8/16-bit integer "
            "or 16/32-bit float.",
        )
    if color_model == "RGBA":
        return PixelLayout(sample, "BGRA" if sample in ("u8", "u16") else "RGBA")
    # Grey+alpha has no wire order (the protocol carries gray, RGB, RGBA, BGRA): converting is one click.
    raise ProtocolError(
        ErrorCode.UNSUPPORTED_FORMAT,
        f"Colour model {color_model} is not supported; convert the image to RGB/Alpha "
        "(Image > Convert Image Color Space) and run again.",
    )


# ----------------------------------------------------------------------------------------------------------
# Rectangles and the region to send.


@dataclass(frozen=True)
class Rect:
    """An axis-aligned pixel rectangle in document coordinates; width/height 0 means empty."""

    x: int
    y: int
    w: int
    h: int

    @classmethod
    def from_corners(cls, x0: int, y0: int, x1: int, y1: int) -> Rect:
        return cls(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    @property
    def empty(self) -> bool:
        return self.w <= 0 or self.h <= 0

    @property
    def area(self) -> int:
        return 0 if self.empty else self.w * self.h

    def intersect(self, other: Rect) -> Rect:
        x0, y0 = max(self.x, other.x), max(self.y, other.y)
        x1, y1 = min(self.right, other.right), min(self.bottom, other.bottom)
        return Rect.from_corners(x0, y0, max(x0, x1), max(y0, y1))

    def grow(self, dx: int, dy: int | None = None) -> Rect:
        dy = dx if dy is None else dy
        return Rect(self.x - dx, self.y - dy, self.w + 2 * dx, self.h + 2 * dy)

    def contains(self, other: Rect) -> bool:
        return other.empty or (
            self.x <= other.x
            and self.y <= other.y
            and other.right <= self.right
            and other.bottom <= self.bottom
        )

    def translated(self, dx: int, dy: int) -> Rect:
        return Rect(self.x + dx, self.y + dy, self.w, self.h)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


@dataclass(frozen=True)
class RegionPlan:
    """What to read from the host and send: ``region`` in document coordinates, and whether a selection mask
    goes with it (``selection`` is the selection's bounds clipped to the region, or None)."""

    region: Rect
    selection: Rect | None


CONTEXT_FRACTION = 0.5  # context sent around the selection, as a fraction of its larger side
CONTEXT_MIN = 32  # ...but at least this many pixels: the snapper and the fill need surroundings


def plan_region(
    mode: Mode,
    source: Rect,
    canvas: Rect,
    selection: Rect | None,
    *,
    context_fraction: float = CONTEXT_FRACTION,
    context_min: int = CONTEXT_MIN,
) -> RegionPlan:
    """Pick the rectangle to send. ``source`` is the layer's extent (or the canvas for the visible image); only
    what lies on the canvas is sent (the user sees nothing else). With a selection the region is its bounds plus
    context, so a small object on a huge canvas does not ship the whole canvas; the backend crops further.
    Raises ``no_selection`` when the mode needs a selection and there is none (or it misses the layer)."""
    usable = source.intersect(canvas)
    if usable.empty:
        raise ProtocolError(
            ErrorCode.MISSING_INPUT,
            "The layer is empty where the canvas is: paint something on it or pick another layer.",
        )
    sel = None if selection is None or selection.empty else selection.intersect(usable)
    if selection is not None and not selection.empty and (sel is None or sel.empty):
        raise ProtocolError(
            ErrorCode.NO_SELECTION,
            "The selection does not overlap the layer's pixels: select on the layer you want to edit "
            "(or choose 'Visible image' as the source).",
        )
    if sel is None:
        if mode.needs_selection:
            raise ProtocolError(ErrorCode.NO_SELECTION, no_selection_message(mode))
        return RegionPlan(usable, None)
    margin = max(context_min, math.ceil(context_fraction * max(sel.w, sel.h)))
    return RegionPlan(sel.grow(margin).intersect(usable), sel)


def mask_coverage(mask: bytes | bytearray | memoryview) -> int:
    """Number of selected (non-zero) samples in an 8-bit mask: an all-zero selection counts as none."""
    data = bytes(mask)
    return len(data) - data.count(0)


def mask_bounds(mask: bytes | bytearray | memoryview, width: int, height: int) -> Rect | None:
    """Tight bounds of the non-zero samples of a row-major 8-bit mask (relative to the mask), None if empty."""
    data = bytes(mask)
    if len(data) != width * height:
        raise ProtocolError(ErrorCode.BAD_BUFFER, f"mask has {len(data)} bytes, expected {width}x{height}.")
    rows = [y for y in range(height) if data[y * width : (y + 1) * width].count(0) != width]
    if not rows:
        return None
    x0, x1 = width, 0
    for y in rows:
        row = data[y * width : (y + 1) * width]
        first = next(i for i, v in enumerate(row) if v)
        last = width - next(i for i, v in enumerate(reversed(row)) if v)
        x0, x1 = min(x0, first), max(x1, last)
    return Rect.from_corners(x0, rows[0], x1, rows[-1] + 1)


_NONZERO = bytes([0] + [1] * 255)  # bytes.translate table: selected (any value > 0) -> 1


def mask_runs(row: bytes) -> list[tuple[int, int]]:
    """[start, end) of the selected (non-zero) runs of one mask row."""
    bits, runs, x = row.translate(_NONZERO), [], 0
    while (start := bits.find(1, x)) >= 0:
        end = bits.find(0, start)
        end = len(bits) if end < 0 else end
        runs.append((start, end))
        x = end
    return runs


def outline_rects(
    mask: bytes | bytearray | memoryview, width: int, height: int
) -> list[tuple[int, int, int, int]]:
    """Rectangles (x, y, w, h) whose union is exactly the selected pixels of a row-major 8-bit mask: each row's
    runs, plus a two-row bridge wherever runs of neighbouring rows overlap. The bridges make neighbouring rows
    overlap instead of merely touching, so a path union of the rectangles has no seams between rows (Krita
    builds its marching-ants outline that way from ``Selection.select`` calls)."""
    data = bytes(mask)
    if len(data) != width * height:
        raise ProtocolError(ErrorCode.BAD_BUFFER, f"mask has {len(data)} bytes, expected {width}x{height}.")
    rects: list[tuple[int, int, int, int]] = []
    above: list[tuple[int, int]] = []
    for y in range(height):
        runs = mask_runs(data[y * width : (y + 1) * width])
        rects.extend((x0, y, x1 - x0, 1) for x0, x1 in runs)
        for a0, a1 in above:
            for b0, b1 in runs:
                lo, hi = max(a0, b0), min(a1, b1)
                if lo < hi:
                    rects.append((lo, y - 1, hi - lo, 2))
        above = runs
    return rects


# ----------------------------------------------------------------------------------------------------------
# Forms from the op schemas advertised in ``hello``.


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

    @classmethod
    def from_op_json(cls, spec: dict) -> Form:
        fields = [Field.from_json(p) for p in spec.get("params", [])]
        return cls(str(spec["name"]), str(spec.get("help", "")), fields, {f.name: f.default for f in fields})

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


# ----------------------------------------------------------------------------------------------------------
# Telling the user what to install, with a command they can paste.

_INSTALL_PY = re.compile(r"(?<![\w/.~-])python3? install\.py\b")


def install_py(project_root: str | os.PathLike | None) -> str:
    """``python3 /abs/path/install.py`` when the plugin's config knows the project folder, else the relative form."""
    if not project_root:
        return "python3 install.py"
    path = str(Path(project_root) / "install.py")
    if os.name == "nt":  # cmd.exe quotes with double quotes only
        return f'python "{path}"' if " " in path else f"python {path}"
    return f"python3 {shlex.quote(path)}"


def with_project_path(text: str, project_root: str | os.PathLike | None) -> str:
    """Make every ``python3 install.py ...`` in a message name the project's install.py by its absolute path
    (the user reads the message in Krita or GIMP, whose working folder is not the project). ``project_root``
    None (unknown, or a remote backend, whose messages are about another machine): the text is unchanged."""
    if not project_root:
        return text
    return _INSTALL_PY.sub(lambda _m: install_py(project_root), text)


def installed_presets(hello: dict | None) -> dict[str, bool] | None:
    """Model preset -> installed, as the backend's ``hello`` advertises it; None from a backend that does not
    say (then hosts show no install hints rather than wrong ones)."""
    presets = (hello or {}).get("presets")
    if not isinstance(presets, dict):
        return None
    return {str(k): bool(v) for k, v in presets.items()}


def model_hint(
    field: Field, presets: Mapping[str, bool] | None, project_root: str | os.PathLike | None = None
) -> str:
    """What to show next to a choice field some of whose choices need a model (erase's fill: learned or
    diffusion fillers) when none of those models is installed: what better quality needs and the one command
    that installs the recommended model (the first such choice in the op's order). '' when there is nothing
    to say: no such choices, one of them installed, or a backend that does not report presets."""
    if not field.needs or presets is None:
        return ""
    if any(presets.get(preset, False) for _choice, preset in field.needs):
        return ""
    names = [choice for choice, _preset in field.needs]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    preset = field.needs[0][1]
    return (
        f"Better {field.label.lower()} quality needs a model ({listed}); none is installed. "
        f"Install one with: {install_py(project_root)} --models {preset}"
    )


def model_hints(
    form: Form | None, presets: Mapping[str, bool] | None, project_root: str | os.PathLike | None = None
) -> dict[str, str]:
    """field name -> hint (``model_hint``) for every field of ``form`` that has one."""
    if form is None:
        return {}
    hints = {f.name: model_hint(f, presets, project_root) for f in form.fields}
    return {name: text for name, text in hints.items() if text}


def only_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> set[str]:
    """Names whose value differs between two param dicts (Imagic re-renders cheaply when only eta changed)."""
    if old is None:
        return set(new)
    return {k for k in set(old) | set(new) if old.get(k) != new.get(k)}


# ----------------------------------------------------------------------------------------------------------
# The connection line: what an artist reads (where the backend runs, on what); the address goes in a tooltip.


def device_words(devices: Iterable[str]) -> str:
    """'CPU', 'GPU', 'Apple GPU' (several: joined) from the device names a hello lists (cpu, cuda:0, mps);
    "" when none is known yet."""
    words: list[str] = []
    for d in devices:
        d = str(d).lower()
        if d == "auto":  # not resolved yet (a backend started with --no-model-report): say nothing
            continue
        word = "GPU" if d.startswith("cuda") else "Apple GPU" if d.startswith("mps") else d.upper()
        if word not in words:
            words.append(word)
    return " + ".join(words)


def backend_status(hello: dict, endpoint: str, remote_name: str | None = None) -> tuple[str, str]:
    """(line, tooltip) for a connected backend: "Backend: running on this computer (CPU)"."""
    where = f"remote {remote_name}" if remote_name is not None else "this computer"
    devices = [str(d) for d in hello.get("devices") or []]
    hardware = device_words(devices)
    line = f"Backend: running on {where}" + (f" ({hardware})" if hardware else "")
    tip = (
        f"LayerEdit backend {hello.get('backend_version') or '?'} at {endpoint}; "
        f"devices: {', '.join(devices) or '?'}"
    )
    return line, tip


def no_backend_status(reason: str, remote: bool) -> tuple[str, str]:
    """(line, tooltip) when nothing answers. Locally Connect starts the backend, so say that rather than a
    shell command; the technical reason goes in the tooltip."""
    if remote:
        return f"Backend: not reachable. {reason}", reason
    return "Backend: not running. Press Connect to start it on this computer.", reason


# ----------------------------------------------------------------------------------------------------------
# Stage names: the backend reports internal words (snap, fill, composite, denoise, ...); artists see these.

STAGE_WORDS: dict[str, str] = {
    "snap": "Finding the object",
    "fill": "Filling",
    "composite": "Blending",
    "denoise": "Painting",
    "embedding": "Learning the text",
    "finetune": "Learning the image",
    "generate": "Rendering",
}


def stage_words(stage: str) -> str:
    """The plain words for a backend stage; a stage this table does not know is shown as sent (a newer
    backend's stage, a test op's)."""
    return STAGE_WORDS.get(stage, stage)


# ----------------------------------------------------------------------------------------------------------
# The job state machine.


class JobState(StrEnum):
    IDLE = "idle"
    STARTING_BACKEND = "starting_backend"
    SUBMITTING = "submitting"
    RUNNING = "running"
    CANCELLING = "cancelling"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


_TERMINAL = {JobState.IDLE, JobState.DONE, JobState.FAILED, JobState.CANCELLED}
_ALLOWED: dict[JobState, set[JobState]] = {
    JobState.IDLE: {JobState.STARTING_BACKEND, JobState.SUBMITTING},
    JobState.STARTING_BACKEND: {JobState.SUBMITTING, JobState.FAILED, JobState.CANCELLED},
    JobState.SUBMITTING: {JobState.RUNNING, JobState.DONE, JobState.FAILED, JobState.CANCELLING},
    JobState.RUNNING: {JobState.RUNNING, JobState.DONE, JobState.FAILED, JobState.CANCELLING},
    JobState.CANCELLING: {JobState.CANCELLED, JobState.DONE, JobState.FAILED},
}
for _t in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
    _ALLOWED[_t] = {JobState.STARTING_BACKEND, JobState.SUBMITTING, JobState.IDLE}


@dataclass
class JobTracker:
    """One job's life as the UI sees it. Transitions not in the table are ignored and reported (a late
    progress message after a cancel must not bring a job back to life). ``status_text`` is what the UI shows."""

    state: JobState = JobState.IDLE
    job_id: str | None = None
    stage: str = ""
    step: int = 0
    total: int = 0
    message: str = ""
    error_code: str | None = None
    history: list[JobState] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        return self.state not in _TERMINAL

    @property
    def fraction(self) -> float:
        if self.state == JobState.DONE:
            return 1.0
        return 0.0 if self.total <= 0 else max(0.0, min(1.0, self.step / self.total))

    def _go(self, new: JobState) -> bool:
        if new not in _ALLOWED.get(self.state, set()):
            return False
        self.state = new
        self.history.append(new)
        return True

    def starting_backend(self) -> bool:
        ok = self._go(JobState.STARTING_BACKEND)
        if ok:
            self._reset("Starting the backend…")
        return ok

    def submitting(self) -> bool:
        ok = self._go(JobState.SUBMITTING)
        if ok:
            self._reset("Sending…")
        return ok

    def _reset(self, message: str) -> None:
        self.job_id, self.stage, self.step, self.total, self.error_code = None, "", 0, 0, None
        self.message = message

    def accepted(self, job_id: str) -> bool:
        if self.state == JobState.CANCELLING and self.job_id is None:
            self.job_id = job_id  # cancel pressed before the id came back: the caller sends the cancel now
            return True
        ok = self._go(JobState.RUNNING)
        if ok:
            self.job_id = job_id
            self.message = "Queued…"
        return ok

    def progress(self, stage: str, step: int, total: int) -> bool:
        if self.state not in (JobState.RUNNING, JobState.SUBMITTING):
            return False
        self._go(JobState.RUNNING)
        self.stage, self.step, self.total = stage, int(step), int(total)
        self.message = f"{self.stage_label} {step}/{total}" if total else self.stage_label
        return True

    @property
    def stage_label(self) -> str:
        """The current stage in plain words ("" before the first progress of this job)."""
        return stage_words(self.stage) if self.stage else ""

    @property
    def bar_text(self) -> str:
        """A progress bar's format for this job (Qt's %p% is the percentage): the stage while it runs, the
        outcome after. Reset by every new job, so a finished job's "100%" never shows under the next one."""
        if self.state in (JobState.RUNNING, JobState.CANCELLING) and self.stage:
            return f"{self.stage_label} %p%"
        return {
            JobState.STARTING_BACKEND: "Starting the backend…",
            JobState.SUBMITTING: "Sending…",
            JobState.RUNNING: "Queued…",
            JobState.CANCELLING: "Cancelling…",
            JobState.DONE: "Done",
            JobState.FAILED: "Failed",
            JobState.CANCELLED: "Cancelled",
        }.get(self.state, "")

    @property
    def bar_fraction(self) -> float:
        """What a progress bar fills: 0 unless a job is running or done (a failed job shows an empty bar)."""
        return self.fraction if self.state in (JobState.RUNNING, JobState.CANCELLING, JobState.DONE) else 0.0

    def cancel(self) -> bool:
        ok = self._go(JobState.CANCELLING)
        if not ok and self.state == JobState.STARTING_BACKEND:
            ok = self._go(JobState.CANCELLED)
        if ok:
            self.message = "Cancelling…" if self.state == JobState.CANCELLING else "Cancelled."
        return ok

    def finished(self, message: str = "Done.") -> bool:
        ok = self._go(JobState.DONE)
        if ok:
            self.message = message
        return ok

    def failed(self, code: str, message: str) -> bool:
        if code == ErrorCode.CANCELLED and self.state == JobState.CANCELLING:
            ok = self._go(JobState.CANCELLED)
            if ok:
                self.error_code, self.message = code, "Cancelled."
            return ok
        ok = self._go(JobState.FAILED)
        if ok:
            self.error_code, self.message = str(code), message
        return ok

    @property
    def status_text(self) -> str:
        if self.state == JobState.FAILED and self.error_code:
            return f"Failed ({self.error_code}): {self.message}"
        return self.message


# ----------------------------------------------------------------------------------------------------------
# Naming the result.


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


# ----------------------------------------------------------------------------------------------------------
# Which backend this host uses: the local one (default) or an imported remote connection.

CHOICE_FILE = "backend-choice.json"  # in the config dir: the choice must survive a reboot, like the remotes
LOCAL_WORDS = ("", "local", "default")


@dataclass(frozen=True)
class BackendChoice:
    """``connection_file`` None means the local backend (``backend.json`` in the runtime dir, started on
    demand); otherwise the path of an imported remote connection file. Both plugins read the same file, so
    choosing in Krita also moves GIMP."""

    connection_file: str | None = None
    name: str = ""
    pending_key: str = ""  # a fresh key pair made from a pasted address: the admin still has to allow this

    @property
    def local(self) -> bool:
        return self.connection_file is None

    @property
    def label(self) -> str:
        if self.local:
            return "Local backend"
        return f"Remote: {self.name or Path(self.connection_file).stem}"


def _choice_path(config: Path | None, create: bool = True) -> Path:
    return (config or connection.config_dir(create=create)) / CHOICE_FILE


def load_choice(config: Path | None = None) -> BackendChoice:
    """The saved choice; a missing, damaged or dangling one (its connection file was deleted) means local."""
    try:
        data = json.loads(_choice_path(config, create=False).read_text("utf-8"))
        path = data.get("connection_file") if isinstance(data, dict) else None
    except (OSError, ValueError):
        return BackendChoice()
    if not isinstance(path, str) or not Path(path).is_file():
        return BackendChoice()
    return BackendChoice(path, str(data.get("name") or ""), str(data.get("pending_key") or ""))


def save_choice(choice: BackendChoice, config: Path | None = None) -> Path:
    path = _choice_path(config)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(choice), indent=2), "utf-8")
    os.replace(tmp, path)
    return path


def choose_backend(text: str, config: Path | None = None) -> BackendChoice:
    """Turn what the user typed or pasted into the saved choice: "local"; a connection string
    (``layeredit1:...``); the path of a connection file; or "ADDRESS SERVER_KEY SIGNING_KEY" (three words, or
    lines), which makes a fresh client key pair the admin must allow (``pending_key``). Raises
    ``bad_connection`` saying what to do; the previous choice then stays."""
    text = str(text).strip()
    if text.lower() in LOCAL_WORDS:
        choice = BackendChoice()
        save_choice(choice, config)
        return choice
    remotes = (config or connection.config_dir()) / "remotes"
    words = text.split()
    pending = ""
    if (
        not text.startswith(connection.STRING_PREFIX)
        and len(words) == 3
        and not Path(text).expanduser().exists()
    ):
        info = connection.from_address(*words)
        pending = info.curve_publickey or ""
        path = connection.import_connection(connection.to_string(info), directory=remotes)
    elif len(words) > 1 and not text.startswith(connection.STRING_PREFIX):
        raise ProtocolError(
            ErrorCode.BAD_CONNECTION,
            "Paste a connection string (layeredit1:...), a connection file's path, or three words: "
            "ADDRESS:PORT SERVER_KEY SIGNING_KEY (from: python -m backend keys show).",
        )
    else:
        path = connection.import_connection(text, directory=remotes)
    info = connection.read(path)
    choice = BackendChoice(str(path), info.name or info.endpoint, pending)
    save_choice(choice, config)
    return choice


def refused_message(info: connection.ConnectionInfo) -> str:
    """What to say when a remote backend does not answer: most often the server has not admitted this key."""
    who = info.name or "this-computer"
    return (
        f"The remote backend at {info.endpoint} does not answer. If the address is right, its admin must allow "
        f"this computer's key: python -m backend keys allow {info.curve_publickey} {_safe_word(who)}"
    )


def _safe_word(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text.strip())[:40] or "this-computer"

"""The contract between the job server (or the CLI) and an op.

An op is a thin adapter: it declares a typed parameter schema (advertised in ``hello`` so host UIs build
their forms from it, and used by the CLI for ``--help``), and maps validated parameters plus decoded
pixel arrays onto a pipeline from ``backend/<task>/pipeline_<task>.py``. Ops never see wire bytes:
the server decodes buffers to numpy, aligns the selection to the image, and encodes the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from backend.errors import JobCancelled, OpError
from protocol.errors import ErrorCode

if TYPE_CHECKING:  # pragma: no cover
    from backend.models import ModelManager

ParamType = Literal["int", "float", "bool", "str", "enum", "float_list"]


@dataclass(frozen=True)
class ParamSpec:
    """One typed, documented op parameter. ``to_json`` is what ``hello`` advertises."""

    name: str
    type: ParamType
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    advanced: bool = False  # hosts fold these away behind an "Advanced" section
    max_length: int = 2000  # for str
    max_items: int = 16  # for float_list
    # enum: (choice, model preset) for choices that need a model installed; hosts compare it with the presets
    # ``hello`` reports installed, to say what better quality needs and the command that installs it.
    needs: tuple[tuple[str, str], ...] = ()

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
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.advanced:
            out["advanced"] = True
        if self.needs:
            out["needs"] = dict(self.needs)
        return out

    def validate(self, value: Any) -> Any:
        """Return the value coerced to this type, or raise ``bad_param`` saying what is expected."""
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            raise self._bad(value, "true or false")
        if self.type == "int":
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)  # NaN/Infinity: JSON from the network may carry them
                or value != int(value)
            ):
                raise self._bad(value, "a whole number")
            return self._ranged(int(value))
        if self.type == "float":
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise self._bad(value, "a number")
            return self._ranged(float(value))
        if self.type == "str":
            if not isinstance(value, str):
                raise self._bad(value, "a string")
            if len(value) > self.max_length:
                raise self._bad(f"{len(value)} characters", f"at most {self.max_length} characters")
            return value
        if self.type == "enum":
            if not isinstance(value, str) or value not in (self.choices or ()):
                raise self._bad(value, f"one of {', '.join(self.choices or ())}")
            return value
        if self.type == "float_list":
            items = [value] if isinstance(value, int | float) and not isinstance(value, bool) else value
            if not isinstance(items, list | tuple) or not items or len(items) > self.max_items:
                raise self._bad(value, f"a list of 1 to {self.max_items} numbers")
            single = ParamSpec(self.name, "float", 0.0, self.help, self.min, self.max)
            return [single.validate(v) for v in items]
        raise AssertionError(f"unknown param type {self.type}")

    def _ranged(self, value: float | int) -> float | int:
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise self._bad(value, f"between {self.min} and {self.max}")
        return value

    def _bad(self, value: Any, expected: str) -> OpError:
        return OpError(
            ErrorCode.BAD_PARAM,
            f"Parameter '{self.name}' got {value!r}; expected {expected}.",
            {"param": self.name},
        )


@dataclass(frozen=True)
class OpSpec:
    """What an op is called, what it needs, and which parameters it takes."""

    name: str
    help: str
    params: tuple[ParamSpec, ...]
    needs_image: bool = True
    needs_selection: bool = False  # True: an empty or missing selection is a ``no_selection`` error

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def validate(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Fill defaults and check every value; unknown names are errors, never silently dropped."""
        params = params or {}
        if not isinstance(params, dict):
            raise OpError(ErrorCode.MALFORMED, "params must be a JSON object.")
        known = {p.name for p in self.params}
        unknown = sorted(set(params) - known)
        if unknown:
            raise OpError(
                ErrorCode.UNKNOWN_PARAM,
                f"Op '{self.name}' has no parameter {', '.join(map(repr, unknown))}; "
                f"it takes: {', '.join(sorted(known)) or 'none'}.",
                {"params": unknown},
            )
        return {p.name: p.validate(params[p.name]) if p.name in params else p.default for p in self.params}

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "help": self.help,
            "needs_image": self.needs_image,
            "needs_selection": self.needs_selection,
            "params": [p.to_json() for p in self.params],
        }


@dataclass
class OpInputs:
    """Decoded inputs. ``image`` keeps the host's sample type (u8/u16/f16/f32 -> uint8/uint16/float16/float32)
    with channels in RGB(A) or gray order, shape HxWxC. ``selection`` is float32 HxW in [0, 1], already aligned
    to the image's rectangle (zero where the host's selection did not reach), or None when there was none."""

    image: np.ndarray | None
    selection: np.ndarray | None = None
    origin: tuple[int, int] = (0, 0)  # image's top-left in document coordinates


@dataclass
class OpResult:
    """What an op returns. ``image`` has the input's shape and dtype (the server encodes it back in the host's
    format); ``mask`` is the region the op changed / snapped to, uint8 HxW (0..255), or None.

    ``object_mask`` (uint8 HxW or None): the snapped object, when ``mask`` is the edited region grown past it
    (erase). It travels as a second ``mask`` buffer after the first, and ``meta["masks"]`` names both
    (``["region", "object"]``), so a client that reads only the first mask sees what it always saw."""

    image: np.ndarray | None
    mask: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    extra_images: list[np.ndarray] = field(default_factory=list)  # e.g. several Imagic eta candidates
    object_mask: np.ndarray | None = None


ProgressFn = Callable[[str, int, int, "np.ndarray | None"], None]
StepFn = Callable[..., None]  # (stage, step, total) or (stage, step, total, preview): what pipelines call


@dataclass
class JobContext:
    """Given to every op run: progress reporting, cooperative cancel, and the shared model manager."""

    models: ModelManager | None = None
    progress_fn: ProgressFn | None = None
    cancel_check: Callable[[], bool] | None = None
    device: str | None = None

    def progress(self, stage: str, step: int, total: int, preview: np.ndarray | None = None) -> None:
        if self.progress_fn is not None:
            self.progress_fn(stage, step, total, preview)

    @property
    def cancelled(self) -> bool:
        return bool(self.cancel_check and self.cancel_check())

    def check_cancelled(self) -> None:
        """Call between model steps; raises JobCancelled once a cancel has arrived."""
        if self.cancelled:
            raise JobCancelled()

    def step_callback(self) -> StepFn:
        """The callback every pipeline takes, ``(stage, step, total[, preview])``: reports the step, then raises
        JobCancelled once a cancel has arrived, so a pipeline stops within one step. One closure for every op."""

        def step(stage: str, i: int, total: int, preview: np.ndarray | None = None) -> None:
            self.progress(stage, i, total, preview)
            self.check_cancelled()

        return step

    def model_manager(self) -> ModelManager:
        """The shared ModelManager, made on first use for this context's device when the caller gave none (a
        bare CLI or test context): every op that needs a model gets it this one way."""
        if self.models is None:
            from backend.models import ModelManager

            self.models = ModelManager(device=self.device)
        return self.models


class Op:
    """Base class of registered ops. Subclasses set ``spec`` and implement ``run``."""

    spec: ClassVar[OpSpec]

    def run(self, inputs: OpInputs, params: dict[str, Any], ctx: JobContext) -> OpResult:
        raise NotImplementedError

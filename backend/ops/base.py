"""The contract between the job server (or the CLI) and an op.

An op is a thin adapter: its typed parameter schema (advertised in ``hello`` so host UIs build their forms from
it, and used by the CLI for ``--help``) is derived from its params dataclass in ``backend/params/``, which is what
its pipeline from ``backend/<task>/pipeline_<task>.py`` runs. Ops never see wire bytes, nor unchecked input: the
one door (``backend.jobs.admit``, for the server and the CLI alike) checks the parameters, the buffers and the
selection an op needs; the server decodes buffers to numpy, aligns the selection to the image, and encodes the
result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from backend.errors import JobCancelled, OpError
from protocol.errors import ErrorCode, ProtocolError
from protocol.params import Param, build, schema

if TYPE_CHECKING:  # pragma: no cover
    from backend.models import ModelManager

# One parameter type for the backend and the hosts (protocol/params.py); ``ParamSpec`` is its backend name.
ParamSpec = Param


@dataclass(frozen=True)
class OpSpec:
    """What an op is called, what it needs, and which parameters it takes."""

    name: str
    help: str
    params: tuple[ParamSpec, ...]
    needs_image: bool = True
    needs_selection: bool = False  # True: an empty or missing selection is a ``no_selection`` error
    # False: a selection that was sent must select something on the layer (none at all is fine); backend-only
    empty_selection_ok: bool = True
    job: type | None = field(
        default=None, compare=False, repr=False
    )  # the params dataclass ``params`` came from

    @classmethod
    def of(cls, name: str, help: str, job: type, **needs: bool) -> OpSpec:
        """The spec of an op whose wire parameters are the ``param`` fields of its params dataclass ``job``."""
        return cls(name, help, schema(job), job=job, **needs)

    def build(self, checked: dict[str, Any]) -> Any:
        """Checked parameters -> the op's params dataclass (names and 0-means-None mapped back by its metadata)."""
        if self.job is None:
            raise TypeError(f"op {self.name!r} declares no params dataclass")
        return build(self.job, checked)

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
        try:
            return {p.name: self._value(p, params) for p in self.params}
        except ProtocolError as exc:
            raise OpError(exc.code, exc.message, exc.details) from None

    @staticmethod
    def _value(p: ParamSpec, params: dict[str, Any]) -> Any:
        """A sent value, checked; a missing one takes its default, which is checked only when ``nonempty``: a
        prompt left out is as blank as an empty one, refused here before ``accepted`` and before any model loads."""
        if p.name in params:
            return p.validate(params[p.name])
        return p.validate(p.default) if p.nonempty else p.default

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

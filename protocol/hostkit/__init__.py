"""Host-neutral plugin logic shared by the Krita docker and the GIMP plug-in.

Everything here is plain Python (stdlib + pyzmq: it runs inside the hosts' Python, where numpy may be missing)
so it is tested without a host. One module per concern; this package re-exports their public names, so hosts
write ``from protocol.hostkit import X``:

- ``modes``: what the user picks (``MODES``) and which op runs it;
- ``layouts``: pixel layouts (sample type, channel order) a host hands out (Krita's own mapping from its
  colour model and depth stays in the Krita plugin);
- ``region``: rectangles and which rectangle of the image to send (``plan_region``);
- ``masks``: selection-mask maths (coverage, bounds, outline rectangles);
- ``results``: the buffers a job sends, and the result's buffers checked against what was sent;
- ``forms``: parameter forms built from the schemas ``hello`` advertises (and the unknown-op error);
- ``hints``: what to install, with a command the user can paste;
- ``status``: the connection line and stage names in plain words;
- ``jobs``: the job's state machine;
- ``naming``: the names of the result layers;
- ``choice``: the saved choice of backend (local or an imported remote).

The host plugins only do I/O and widgets.
"""

from __future__ import annotations

from protocol.hostkit.choice import (
    CHOICE_FILE,
    LOCAL_WORDS,
    BackendChoice,
    choose_backend,
    load_choice,
    refused_message,
    save_choice,
)
from protocol.hostkit.forms import PROMPT_PARAMS, Field, Form, forms_from_hello, only_changed, op_form
from protocol.hostkit.hints import install_py, installed_presets, model_hint, model_hints, with_project_path
from protocol.hostkit.jobs import JobState, JobTracker
from protocol.hostkit.layouts import SAMPLE_BYTES, PixelLayout
from protocol.hostkit.masks import mask_bounds, mask_coverage, mask_runs, outline_rects, selection_to_send
from protocol.hostkit.modes import LAYER, MODES, SELECTION, Mode, mode_by_label, no_selection_message
from protocol.hostkit.naming import layer_name, result_names, unique_name
from protocol.hostkit.region import (
    CONTEXT_FRACTION,
    CONTEXT_MIN,
    REACH_PARAMS,
    Rect,
    RegionPlan,
    op_reach,
    plan_region,
)
from protocol.hostkit.results import job_buffers, packed, result_image, result_mask
from protocol.hostkit.status import (
    STAGE_WORDS,
    backend_status,
    device_words,
    no_backend_status,
    stage_words,
)

__all__ = [
    "CHOICE_FILE",
    "CONTEXT_FRACTION",
    "CONTEXT_MIN",
    "LAYER",
    "LOCAL_WORDS",
    "MODES",
    "PROMPT_PARAMS",
    "REACH_PARAMS",
    "SAMPLE_BYTES",
    "SELECTION",
    "STAGE_WORDS",
    "BackendChoice",
    "Field",
    "Form",
    "JobState",
    "JobTracker",
    "Mode",
    "PixelLayout",
    "Rect",
    "RegionPlan",
    "backend_status",
    "choose_backend",
    "device_words",
    "forms_from_hello",
    "install_py",
    "installed_presets",
    "job_buffers",
    "layer_name",
    "load_choice",
    "mask_bounds",
    "mask_coverage",
    "mask_runs",
    "mode_by_label",
    "model_hint",
    "model_hints",
    "no_backend_status",
    "no_selection_message",
    "only_changed",
    "op_form",
    "op_reach",
    "outline_rects",
    "packed",
    "plan_region",
    "refused_message",
    "result_image",
    "result_mask",
    "result_names",
    "save_choice",
    "selection_to_send",
    "stage_words",
    "unique_name",
    "with_project_path",
]

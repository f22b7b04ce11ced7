"""The plug-in's logic, with GIMP's modules passed in: procedures from schemas, and one job from the active
layer to a new layer. ``layeredit.py`` only wires this to ``Gimp.PlugIn``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import connection
from protocol.errors import ErrorCode, ProtocolError
from protocol.hostkit import (
    MODES,
    Form,
    JobTracker,
    Mode,
    forms_from_hello,
    layer_name,
    load_choice,
    unique_name,
)
from protocol.launcher import ask_schemas
from protocol.wire import Buffer

from .backend import choose as choose_backend
from .backend import connect_or_start, read_config
from .gimpio import Source, read_source, write_result
from .guard import CancelGuard
from .pdbargs import EXTRA, SELECT, add_arguments, advanced_names, arg_name, params_from_config

PROC_PREFIX = "plug-in-layeredit-"
CONNECT_PROC = PROC_PREFIX + "connect"
CONNECT_ARG = "connection"
MENU = "<Image>/Filters/AI Edit"
SCHEMAS_NAME = "schemas.json"


def procedure_names() -> list[str]:
    return [PROC_PREFIX + m.op for m in MODES] + [CONNECT_PROC]


def create_connect_procedure(plugin: Any, run_fn: Callable, gimp: Any, gobject: Any) -> Any:
    """Filters > AI Edit > Connect to backend…: one string, "local", a connection string or a file's path.
    An image procedure like the others (so it sits in the same menu), usable without an image."""
    proc = gimp.ImageProcedure.new(plugin, CONNECT_PROC, gimp.PDBProcType.PLUGIN, run_fn, None)
    proc.set_image_types("*")
    proc.set_sensitivity_mask(gimp.ProcedureSensitivityMask.ALWAYS)
    proc.set_menu_label("Connect to backend…")
    proc.add_menu_path(MENU)
    proc.set_documentation(
        "Choose the backend Layer Edit uses",
        "'local' (this computer, started on demand), a connection string (layeredit1:...) or the path of a "
        "connection file from the backend's admin, or 'ADDRESS:PORT SERVER_KEY SIGNING_KEY'.",
        CONNECT_PROC,
    )
    proc.add_string_argument(
        CONNECT_ARG,
        "Connection",
        "local, a connection string, a connection file's path, or ADDRESS:PORT SERVER_KEY SIGNING_KEY",
        "local",
        gobject.ParamFlags.READWRITE,
    )
    return proc


def run_connect(config: Any) -> str:
    """The Connect procedure's body: the message to show; raises ProtocolError (bad_connection, no_backend)."""
    return choose_backend(str(config.get_property(CONNECT_ARG) or "local"))


def mode_of(procedure_name: str) -> Mode:
    for m in MODES:
        if procedure_name == PROC_PREFIX + m.op:
            return m
    raise KeyError(procedure_name)


def load_schemas(plugin_dir: Path) -> dict[str, dict]:
    """op name -> schema: the installer's snapshot, else asked from the project's venv, else nothing
    (then only the host's own arguments are registered and the backend's defaults apply)."""
    try:
        ops = json.loads((plugin_dir / SCHEMAS_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        config = read_config(plugin_dir)
        ops = (ask_schemas(config, timeout=60) if config is not None else None) or []
    return {o["name"]: o for o in ops if isinstance(o, dict) and "name" in o}


def create_procedure(
    plugin: Any, name: str, run_fn: Callable, gimp: Any, gobject: Any, plugin_dir: Path
) -> Any:
    if name == CONNECT_PROC:
        return create_connect_procedure(plugin, run_fn, gimp, gobject)
    mode = mode_of(name)
    proc = gimp.ImageProcedure.new(plugin, name, gimp.PDBProcType.PLUGIN, run_fn, None)
    proc.set_image_types("RGB*")
    proc.set_sensitivity_mask(gimp.ProcedureSensitivityMask.DRAWABLE)
    proc.set_menu_label(f"{mode.label}…")
    proc.add_menu_path(MENU)
    schema = load_schemas(plugin_dir).get(mode.op) or {"name": mode.op, "help": "", "params": []}
    blurb = schema.get("help") or f"Layer Edit: {mode.label}"
    proc.set_documentation(
        blurb,
        f"{blurb}\nThe result is a new layer above the active layer; the layer itself is not changed. "
        "Needs the Layer Edit backend (it is started when the installer's config says how).",
        name,
    )
    proc.set_attribution("Layer Edit contributors", "Layer Edit contributors", "2026")
    add_arguments(proc, schema, gimp, gobject)
    return proc


@dataclass
class Outcome:
    layer: Any
    job: str
    params: dict
    meta: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)  # all new layers, top first (Imagic: one per eta)
    timings: dict = field(default_factory=dict)  # read_s, job_s (send + backend + receive), write_s, total_s


def source_buffers(source: Source) -> tuple[Buffer, Buffer | None]:
    r, fmt = source.region, source.fmt
    image = Buffer(source.pixels, r.w, r.h, 4, fmt.sample, "RGBA", x=r.x, y=r.y, role="image")
    if source.selection is None:
        return image, None
    sel = Buffer(source.selection, r.w, r.h, 1, fmt.mask_sample, "gray", x=r.x, y=r.y, role="selection")
    return image, sel


def packed(buf: Buffer) -> bytes:
    """The buffer's rows without stride padding."""
    data = memoryview(buf.data).cast("B")
    if buf.stride == buf.row_bytes:
        return bytes(data)
    return b"".join(bytes(data[y * buf.stride : y * buf.stride + buf.row_bytes]) for y in range(buf.height))


def check_result_image(buf: Buffer | None, source: Source) -> bytes:
    r = source.region
    if buf is None or (buf.width, buf.height, buf.dtype, buf.order) != (r.w, r.h, source.fmt.sample, "RGBA"):
        got = None if buf is None else (buf.width, buf.height, buf.dtype, buf.order)
        raise ProtocolError(
            ErrorCode.BAD_BUFFER,
            f"The backend returned {got}, expected {(r.w, r.h, source.fmt.sample, 'RGBA')}; "
            "update the plug-in and the backend together (python3 install.py).",
        )
    return packed(buf)


def result_names(mode: Mode, params: dict, meta: dict, count: int, image: Any) -> list[str]:
    """One layer name per result image; Imagic's candidates are named after their eta (``meta["etas"]``)."""
    etas = meta.get("etas") if isinstance(meta.get("etas"), list) else None
    taken = [layer.get_name() for layer in image.get_layers()]
    names = []
    for i in range(count):
        p = dict(params, eta=etas[i]) if etas is not None and i < len(etas) else params
        names.append(unique_name(layer_name(mode, p), taken))
        taken.append(names[-1])
    return names


class Progress:
    """Job progress on GIMP's progress bar: the stage as text, step/total as the fraction."""

    def __init__(self, gimp: Any, mode: Mode):
        self.gimp, self.mode, self.tracker = gimp, mode, JobTracker()

    def text(self, text: str) -> None:
        self.gimp.progress_set_text(f"{self.mode.label}: {text}")

    def __call__(self, p: Any) -> None:
        if self.tracker.progress(p.stage, p.step, p.total):
            self.text(self.tracker.message)
            self.gimp.progress_update(self.tracker.fraction)


def run_job(
    gimp: Any,
    gegl: Any,
    image: Any,
    drawable: Any,
    mode: Mode,
    config: Any,
    registered: set[str],
    plugin_dir: Path,
    connect: Callable[..., Any] = connect_or_start,
    guard: Callable[[Path], Any] = CancelGuard.start,
) -> Outcome:
    """Read -> submit -> wait -> new layer. Any failure raises ProtocolError before the image is touched."""
    started = time.perf_counter()
    source = read_source(gimp, gegl, image, drawable, mode)
    timings = {"read_s": time.perf_counter() - started}
    gimp.progress_init(f"{mode.label}: connecting to the backend…")
    progress = Progress(gimp, mode)
    client = connect(plugin_dir, on_status=progress.text)
    try:
        forms = forms_from_hello(client.hello())
        form: Form | None = forms.get(mode.op)
        if form is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_OP,
                f"This backend has no '{mode.op}' op (it offers: {', '.join(sorted(forms)) or 'none'}); "
                "update it with: python3 install.py",
            )
        params = params_from_config(config, form, registered)
        image_buf, sel_buf = source_buffers(source)
        progress.tracker.submitting()
        chosen = load_choice().connection_file  # the guard reaches the same backend the plug-in uses
        watchdog = guard(
            Path(chosen) if chosen else connection.default_path()
        )  # spawned before the submit: no unguarded window
        try:
            job = client.submit(mode.op, params, image=image_buf, selection=sel_buf)
            watchdog.watch(job)
            progress.tracker.accepted(job)
            sent = time.perf_counter()
            result = client.wait(job, on_progress=progress)
            timings["job_s"] = time.perf_counter() - sent
        finally:
            watchdog.done()
        pixels = check_result_image(result.image, source)
        mask = None
        if SELECT in registered and config.get_property(SELECT) and result.mask is not None:
            mask = packed(result.mask)
        names = result_names(mode, params, result.meta, 1 + len(result.candidates), image)
        extra = [
            (n, check_result_image(c, source)) for n, c in zip(names[1:], result.candidates, strict=True)
        ]
        written = time.perf_counter()
        layers = write_result(gimp, gegl, image, source, pixels, names[0], mask=mask, extra=extra)
        timings["write_s"] = time.perf_counter() - written
        timings["total_s"] = time.perf_counter() - started
        gimp.progress_update(1.0)
        progress.tracker.finished()
        return Outcome(layers[0], job, params, result.meta, layers, timings)
    finally:
        client.close()
        gimp.progress_end()


def fill_dialog(dialog: Any, schema_params: list[dict], registered: set[str], spin_type: Any = None) -> None:
    """Basic arguments up front, advanced ones (and the JSON escape hatch) in a folded expander; only
    arguments GIMP registered (a newer schemas.json than GIMP's last query must not name unknown ones).
    Narrow float ranges (strength 0..1) get increments that fit them (GIMP's default page is 10)."""
    for p in schema_params:
        name = arg_name(p["name"])
        if (
            spin_type is not None
            and name in registered
            and p["type"] == "float"
            and "min" in p
            and "max" in p
        ):
            span = float(p["max"]) - float(p["min"])
            if 0 < span < 10:
                dialog.get_widget(name, spin_type).set_increments(span / 100, span / 10)
    order = [arg_name(p["name"]) for p in schema_params] + [SELECT, EXTRA]
    advanced = [n for n in advanced_names(schema_params) if n in registered]
    basic = [n for n in order if n in registered and n not in advanced]
    dialog.get_label("layeredit-advanced-title", "Advanced", False, False)
    dialog.fill_box("layeredit-advanced-box", advanced)
    dialog.fill_expander("layeredit-advanced", "layeredit-advanced-title", False, "layeredit-advanced-box")
    dialog.fill([*basic, "layeredit-advanced"])

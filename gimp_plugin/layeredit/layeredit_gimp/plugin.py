"""The plug-in's logic, with GIMP's modules passed in: procedures from schemas, and one job from the active
layer to a new layer. ``layeredit.py`` only wires this to ``Gimp.PlugIn``."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import connection
from protocol.errors import ProtocolError
from protocol.hostkit import (
    MODES,
    Form,
    JobTracker,
    Mode,
    forms_from_hello,
    installed_presets,
    job_buffers,
    load_choice,
    model_hints,
    op_form,
    packed,
    result_image,
    result_mask,
    result_names,
    with_project_path,
)
from protocol.launcher import ask_schemas

from .backend import choose as choose_backend
from .backend import connect_or_start, read_config
from .gimpio import read_source, replace_selection, write_result
from .guard import CancelGuard
from .pdbargs import SELECT, add_arguments, advanced_names, arg_name, params_from_config, reach_params

PROC_PREFIX = "plug-in-layeredit-"
CONNECT_PROC = PROC_PREFIX + "connect"
CONNECT_ARG = "connection"
MENU = "<Image>/Filters/AI Edit"
SELECT_MENU = "<Image>/Select/[Modify]"  # next to Shrink, Grow, Sharpen...: it refines the current selection
SCHEMAS_NAME = "schemas.json"


def procedure_names() -> list[str]:
    """In the order of the Krita docker: Erase, Replace, Imagic, Select object, then Connect to backend."""
    return [PROC_PREFIX + m.op for m in MODES] + [CONNECT_PROC]


def menu_path(name: str) -> str:
    """The AI Edit menu path for a procedure. GIMP sorts the plug-in entries of one menu path by label at
    start-up (Connect, Erase, Imagic, Replace...), so each entry gets its own unnamed section, "[1 ...]" to
    "[5 ...]": GIMP sorts by that first, and a section name the menu does not define puts the entry at the
    end of the menu itself (no submenu, no separator), which keeps the order above."""
    index = procedure_names().index(name) + 1
    return f"{MENU}/[{index} layeredit]"


def user_text(message: str, plugin_dir: Path) -> str:
    """An error as the user reads it: ``python3 install.py`` names the project's install.py by its absolute
    path (from the installer's config), unless the backend is a remote one (its messages are about another
    machine)."""
    if not load_choice().local:
        return message
    config = read_config(plugin_dir)
    return with_project_path(message, config.project_root if config is not None else None)


def create_connect_procedure(plugin: Any, run_fn: Callable, gimp: Any, gobject: Any) -> Any:
    """Filters > AI Edit > Connect to backend…: one string, "local", a connection string or a file's path.
    An image procedure like the others (so it sits in the same menu), usable without an image."""
    proc = gimp.ImageProcedure.new(plugin, CONNECT_PROC, gimp.PDBProcType.PLUGIN, run_fn, None)
    proc.set_image_types("*")
    proc.set_sensitivity_mask(gimp.ProcedureSensitivityMask.ALWAYS)
    proc.set_menu_label("Connect to backend…")
    proc.add_menu_path(menu_path(CONNECT_PROC))
    proc.set_documentation(
        "Choose the backend LayerEdit uses",
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


def load_schemas(plugin_dir: Path, ask_venv: bool = True) -> dict[str, dict]:
    """op name -> schema: the installer's snapshot, else asked from the project's venv (``ask_venv``), else
    nothing (then only the host's own arguments are registered and the backend's defaults apply)."""
    try:
        ops = json.loads((plugin_dir / SCHEMAS_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        config = read_config(plugin_dir) if ask_venv else None
        ops = (ask_schemas(config, timeout=60) if config is not None else None) or []
    return {o["name"]: o for o in ops if isinstance(o, dict) and "name" in o}


def needs_selection(plugin_dir: Path, op: str) -> bool | None:
    """What the schema snapshot says of ``op``'s selection (None: no snapshot, or it does not say). Read
    before connecting, so a missing selection is reported without starting a backend; ``hello`` comes later."""
    needs = load_schemas(plugin_dir, ask_venv=False).get(op, {}).get("needs_selection")
    return None if needs is None else bool(needs)


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
    proc.add_menu_path(menu_path(name))
    if not mode.makes_layer:
        proc.add_menu_path(SELECT_MENU)  # a selection tool: also where GIMP keeps the selection modifiers
    schema = load_schemas(plugin_dir).get(mode.op) or {"name": mode.op, "help": "", "params": []}
    blurb = schema.get("help") or f"LayerEdit: {mode.label}"
    result = (
        "The result is a new layer above the active layer; the layer itself is not changed."
        if mode.makes_layer
        else "A rough selection in, the selection snapped to the object out; no layer is added and no pixel "
        "changes (Edit > Undo brings the rough selection back)."
    )
    proc.set_documentation(
        blurb,
        f"{blurb}\n{result} Needs the LayerEdit backend (it is started when the installer's config says how).",
        name,
    )
    proc.set_attribution("LayerEdit contributors", "LayerEdit contributors", "2026")
    add_arguments(proc, schema, gimp, gobject, select=mode.snaps)
    return proc


@dataclass
class Outcome:
    layer: Any
    job: str
    params: dict
    meta: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)  # all new layers, top first (Imagic: one per eta)
    timings: dict = field(default_factory=dict)  # read_s, job_s (send + backend + receive), write_s, total_s
    region: tuple = ()  # (x, y, w, h) in image coordinates: what was sent, where the masks lie
    masks: dict = field(default_factory=dict)  # the masks returned, by name (erase: region, object)


def _masks_of(result: Any, region: Any) -> tuple[tuple, dict[str, bytes]]:
    return region.as_tuple(), {name: packed(buf) for name, buf in result.named_masks().items()}


def dump_outcome(outcome: Outcome, directory: str) -> None:
    """Test hook (``LAYEREDIT_RESULT_DUMP``): the region sent and every mask the backend returned, so a
    real-host test can check the new layer against the edited region and the selection against the object."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in outcome.masks.items():
        (out / f"mask_{name}.raw").write_bytes(data)
    info = {"job": outcome.job, "region": list(outcome.region), "masks": sorted(outcome.masks)}
    (out / "result.json").write_text(json.dumps({**info, "meta": outcome.meta}, default=str), "utf-8")


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
    # the installer's schema snapshot says whether the op needs a selection before any backend is asked
    mode = mode.with_schema(needs_selection(plugin_dir, mode.op))
    source = read_source(gimp, gegl, image, drawable, mode, reach_params(config, registered))
    timings = {"read_s": time.perf_counter() - started}
    gimp.progress_init(f"{mode.label}: connecting to the backend…")
    progress = Progress(gimp, mode)
    client = connect(plugin_dir, on_status=progress.text)
    try:
        form = op_form(forms_from_hello(client.hello()), mode.op)
        params = params_from_config(config, form, registered)
        r, fmt = source.region, source.fmt
        image_buf, sel_buf = job_buffers(
            r, source.pixels, fmt.sample, "RGBA", source.selection, fmt.mask_sample
        )
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
        if (
            not mode.makes_layer
        ):  # Select object: the snapped mask becomes the selection, nothing else changes
            written = time.perf_counter()
            replace_selection(gimp, gegl, image, source, result_mask(result.mask, r))
            timings["write_s"] = time.perf_counter() - written
            timings["total_s"] = time.perf_counter() - started
            gimp.progress_update(1.0)
            progress.tracker.finished()
            return Outcome(None, job, params, result.meta, [], timings, *_masks_of(result, r))
        pixels = [result_image(img, r, fmt.sample, "RGBA") for img in (result.image, *result.candidates)]
        mask = None
        selected = result.selection_mask  # the snapped object, not the wider region erase repainted
        if SELECT in registered and config.get_property(SELECT) and selected is not None:
            mask = result_mask(selected, r)
        taken = [layer.get_name() for layer in image.get_layers()]
        names = result_names(mode, params, result.meta, len(pixels), taken)
        extra = list(zip(names[1:], pixels[1:], strict=True))
        written = time.perf_counter()
        layers = write_result(gimp, gegl, image, source, pixels[0], names[0], mask=mask, extra=extra)
        timings["write_s"] = time.perf_counter() - written
        timings["total_s"] = time.perf_counter() - started
        gimp.progress_update(1.0)
        progress.tracker.finished()
        return Outcome(layers[0], job, params, result.meta, layers, timings, *_masks_of(result, r))
    finally:
        client.close()
        gimp.progress_end()


def fill_dialog(
    dialog: Any,
    schema_params: list[dict],
    registered: set[str],
    spin_type: Any = None,
    hints: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Basic arguments up front, advanced ones in a folded expander; only arguments GIMP registered (a newer
    schemas.json than GIMP's last query must not name unknown ones). The JSON escape hatch stays a PDB
    argument for scripts but is never shown: raw JSON is not for artists. ``hints`` (param -> text, e.g. what
    better fill quality needs and the command that installs it) go in a label right under their field; the
    labels are returned by param name so the caller can change their text later.
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
    order = [arg_name(p["name"]) for p in schema_params] + [SELECT]
    advanced = [n for n in advanced_names(schema_params) if n in registered]
    basic = [n for n in order if n in registered and n not in advanced]
    labels: dict[str, Any] = {}
    for param, text in (hints or {}).items():
        name = arg_name(param)
        if name not in registered:
            continue
        label_id = f"layeredit-hint-{name}"
        labels[param] = label = dialog.get_label(label_id, text, False, False)
        label.set_line_wrap(True)
        label.set_max_width_chars(72)  # wrap instead of widening the dialog
        label.set_selectable(True)  # the command can be copied
        label.set_xalign(0.0)
        for ids in (basic, advanced):
            if name in ids:
                ids.insert(ids.index(name) + 1, label_id)
    if advanced:
        dialog.get_label("layeredit-advanced-title", "Advanced", False, False)
        dialog.fill_box("layeredit-advanced-box", advanced)
        dialog.fill_expander(
            "layeredit-advanced", "layeredit-advanced-title", False, "layeredit-advanced-box"
        )
        basic.append("layeredit-advanced")
    dialog.fill(basic)
    return labels


_ASK_PRESETS = (
    "import json; from backend.models import ModelManager; "
    "print(json.dumps(ModelManager(device='cpu').installed_presets()))"
)


class PresetProbe:
    """Which model presets are installed, for the dialog's install hints (e.g. next to Erase's Fill), found
    without holding the dialog back: a backend that already runs answers in its ``hello``; otherwise the
    project's venv is asked in a child process (a few seconds) that the dialog polls from GTK's loop."""

    def __init__(self, plugin_dir: Path, schema: dict):
        self.plugin_dir = plugin_dir
        self.form = Form.from_op_json({"name": schema.get("name", ""), **schema}) if schema else None
        self.presets: dict[str, bool] | None = None
        self.proc: subprocess.Popen | None = None
        self.done = True

    @property
    def fields(self) -> list[str]:
        """Params whose hint may show: the dialog makes room for them before the answer is in."""
        return [f.name for f in self.form.fields if f.needs] if self.form is not None else []

    @classmethod
    def start(cls, plugin_dir: Path, schema: dict, ask_venv: bool = True) -> PresetProbe:
        probe = cls(plugin_dir, schema)
        if not probe.fields:
            return probe
        probe.presets = running_backend_presets()
        config = read_config(plugin_dir)
        if probe.presets is None and ask_venv and load_choice().local and config is not None:
            try:
                probe.proc = subprocess.Popen(
                    [str(config.venv_python), "-c", _ASK_PRESETS],
                    cwd=str(config.project_root) if config.project_root else None,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                probe.done = False
            except OSError:
                probe.proc = None
        return probe

    def poll(self) -> bool:
        """True once the answer is in (or there will be none)."""
        if self.done or self.proc is None or self.proc.poll() is None:
            return self.done
        out = self.proc.stdout.read() if self.proc.stdout else ""
        try:
            presets = json.loads(out.strip().splitlines()[-1]) if self.proc.returncode == 0 else None
        except (ValueError, IndexError):
            presets = None
        self.presets = installed_presets({"presets": presets})
        self.done = True
        return True

    def wait(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.poll() and time.monotonic() < deadline:
            time.sleep(0.05)

    def hints(self) -> dict[str, str]:
        if not self.done:
            return {}
        local = load_choice().local
        config = read_config(self.plugin_dir) if local else None
        return model_hints(self.form, self.presets, config.project_root if config is not None else None)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def running_backend_presets(timeout: float = 3.0) -> dict[str, bool] | None:
    """The presets the chosen backend reports, if it is already running and answers at once; else None
    (starting a backend just to draw a dialog would hold the dialog back for seconds)."""
    from protocol.client import Client

    try:
        client = Client.connect(load_choice().connection_file, check=False)
    except ProtocolError:
        return None
    try:
        return installed_presets(client.hello(timeout=timeout))
    except ProtocolError:
        return None
    finally:
        client.close(linger_ms=0)

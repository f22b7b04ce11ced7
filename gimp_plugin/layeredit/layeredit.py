#!/usr/bin/env python3
"""LayerEdit for GIMP 3: Filters > AI Edit > Erase / Replace / Imagic (a new layer from a local backend) and
Select object (the rough selection snapped to the object; also in Select, next to Grow and Shrink).

Thin entry point: puts the plug-in folder (and ``vendor/``, where the installer unpacks pyzmq for GIMP's
bundled Python on Windows/macOS) first on sys.path, then hands GIMP's modules to ``layeredit_gimp``.
"""

import json
import os
import sys
import traceback
from pathlib import Path

HERE = Path(os.path.abspath(__file__)).parent
if str(HERE) not in sys.path:  # GIMP runs this file as a script: its folder (with protocol/) is already there
    sys.path.insert(0, str(HERE))
from protocol.vendoring import put_first_on_path  # noqa: E402

put_first_on_path(HERE / "vendor", HERE)  # pyzmq for GIMP's bundled Python first, then our own packages

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402
from layeredit_gimp import plugin  # noqa: E402

from protocol.errors import ProtocolError  # noqa: E402


class LayerEdit(Gimp.PlugIn):
    def do_query_procedures(self):
        return plugin.procedure_names()

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        return plugin.create_procedure(self, name, self.run, Gimp, GObject, HERE)

    def run(self, procedure, run_mode, image, drawables, config, data):
        if procedure.get_name() == plugin.CONNECT_PROC:
            return _connect(procedure, run_mode, config)
        mode = plugin.mode_of(procedure.get_name())
        if len(drawables) != 1:
            return _error(
                procedure, f"{mode.label} works on one layer: select exactly one layer and run again."
            )
        if run_mode == Gimp.RunMode.INTERACTIVE and not _dialog(procedure, config, mode):
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        registered = {spec.get_name() for spec in procedure.get_arguments()}
        try:
            outcome = plugin.run_job(Gimp, Gegl, image, drawables[0], mode, config, registered, HERE)
        except ProtocolError as exc:
            return _error(
                procedure, f"{mode.label} failed ({exc.code.value}): {plugin.user_text(exc.message, HERE)}"
            )
        except Exception as exc:  # noqa: BLE001 - a bug: show it instead of dying silently
            traceback.print_exc()
            return _error(procedure, f"{mode.label} failed (internal): {exc!r}. The image was not changed.")
        Gimp.displays_flush()
        dump = os.environ.get("LAYEREDIT_RESULT_DUMP")  # test hook: the masks the backend returned
        if dump:
            plugin.dump_outcome(outcome, dump)
        times = ", ".join(f"{k} {v:.3f}" for k, v in outcome.timings.items())
        print(f"layeredit: {mode.op} job {outcome.job}: {times}", file=sys.stderr)  # GIMP's terminal / log
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def _connect(procedure, run_mode, config):
    """Connect to backend…: ask for the connection text (interactive), save the choice, say what happened."""
    if run_mode == Gimp.RunMode.INTERACTIVE:
        gi.require_version("GimpUi", "3.0")
        from gi.repository import GimpUi

        GimpUi.init("layeredit")
        dialog = GimpUi.ProcedureDialog.new(procedure, config, "AI Edit: Connect to backend")
        dialog.fill(None)
        ok = dialog.run()
        dialog.destroy()
        if not ok:
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
    try:
        text = plugin.run_connect(config)
    except ProtocolError as exc:
        return _error(procedure, f"Connect failed ({exc.code.value}): {plugin.user_text(exc.message, HERE)}")
    Gimp.message(text)
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def _dialog(procedure, config, mode):
    gi.require_version("GimpUi", "3.0")
    from gi.repository import GimpUi

    GimpUi.init("layeredit")
    dialog = GimpUi.ProcedureDialog.new(procedure, config, f"AI Edit: {mode.label}")
    schema = plugin.load_schemas(HERE).get(mode.op, {})
    probe = plugin.PresetProbe.start(HERE, schema)  # install hints: answered now, or by a child process
    try:
        registered = {spec.get_name() for spec in procedure.get_arguments()}
        hints = {name: "" for name in probe.fields} | probe.hints()  # room for the hints, filled when known
        labels = plugin.fill_dialog(
            dialog, schema.get("params", []), registered, GimpUi.SpinScale.__gtype__, hints=hints
        )
    except Exception:  # noqa: BLE001 - an older GimpUi without expanders: show everything flat
        traceback.print_exc()
        dialog.fill(None)
        labels = {}
    GLib.timeout_add(200, _show_hints, probe, labels)
    report = os.environ.get("LAYEREDIT_DIALOG_REPORT")  # test hook: describe the dialog, then press OK
    if report:  # "{op}" in the path: one report (and screenshot) per procedure
        GLib.timeout_add(300, _auto_ok, dialog, report.replace("{op}", mode.op), probe, labels)
    ok = dialog.run()
    probe.close()
    dialog.destroy()
    return ok


def _show_hints(probe, labels):
    """GTK timer: once the probe has its answer, put the hints in their labels (then stop)."""
    if not probe.poll():
        return True
    for name, text in probe.hints().items():
        if name in labels:
            labels[name].set_text(text)
    return False


def _auto_ok(dialog, report_path, probe, hint_labels):
    from gi.repository import Gtk

    if not probe.poll():  # wait for the install hints, so the report (and screenshot) shows them
        return True
    _show_hints(probe, hint_labels)
    while Gtk.events_pending():
        Gtk.main_iteration()
    _screenshot(dialog, report_path.rsplit(".", 1)[0] + ".png")
    labels = []

    def walk(widget):
        if isinstance(widget, Gtk.Label):
            labels.append(widget.get_text())
        elif isinstance(widget, Gtk.Expander):
            labels.append("expander:" + (widget.get_label() or ""))
        if isinstance(widget, Gtk.Container):
            for child in widget.get_children():
                walk(child)

    walk(dialog)
    with open(report_path, "w", encoding="utf-8") as f:
        json.dump({"title": dialog.get_title(), "labels": labels}, f)
    dialog.response(Gtk.ResponseType.OK)
    return False


def _screenshot(dialog, path):
    """The dialog as the user sees it, as a PNG (test hook: docs/images are taken from real runs)."""
    try:
        gi.require_version("Gdk", "3.0")
        from gi.repository import Gdk

        window = dialog.get_window()
        pixbuf = Gdk.pixbuf_get_from_window(window, 0, 0, window.get_width(), window.get_height())
        pixbuf.savev(path, "png", [], [])
    except Exception:  # noqa: BLE001 - a screenshot must never fail the run
        traceback.print_exc()


def _error(procedure, message):
    return procedure.new_return_values(
        Gimp.PDBStatusType.EXECUTION_ERROR,
        GLib.Error.new_literal(GLib.quark_from_string("layeredit"), message, 0),
    )


Gimp.main(LayerEdit.__gtype__, sys.argv)

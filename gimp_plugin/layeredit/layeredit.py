#!/usr/bin/env python3
"""Layer Edit for GIMP 3: Filters > AI Edit > Erase / Replace / Imagic, as a new layer from a local backend.

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
            return _error(procedure, f"{mode.label} failed ({exc.code.value}): {exc.message}")
        except Exception as exc:  # noqa: BLE001 - a bug: show it instead of dying silently
            traceback.print_exc()
            return _error(procedure, f"{mode.label} failed (internal): {exc!r}. The image was not changed.")
        Gimp.displays_flush()
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
        return _error(procedure, f"Connect failed ({exc.code.value}): {exc.message}")
    Gimp.message(text)
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def _dialog(procedure, config, mode):
    gi.require_version("GimpUi", "3.0")
    from gi.repository import GimpUi

    GimpUi.init("layeredit")
    dialog = GimpUi.ProcedureDialog.new(procedure, config, f"AI Edit: {mode.label}")
    schema = plugin.load_schemas(HERE).get(mode.op, {})
    try:
        registered = {spec.get_name() for spec in procedure.get_arguments()}
        plugin.fill_dialog(dialog, schema.get("params", []), registered, GimpUi.SpinScale.__gtype__)
    except Exception:  # noqa: BLE001 - an older GimpUi without expanders: show everything flat
        traceback.print_exc()
        dialog.fill(None)
    report = os.environ.get("LAYEREDIT_DIALOG_REPORT")  # test hook: describe the dialog, then press OK
    if report:
        GLib.timeout_add(300, _auto_ok, dialog, report)
    ok = dialog.run()
    dialog.destroy()
    return ok


def _auto_ok(dialog, report_path):
    from gi.repository import Gtk

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


def _error(procedure, message):
    return procedure.new_return_values(
        Gimp.PDBStatusType.EXECUTION_ERROR,
        GLib.Error.new_literal(GLib.quark_from_string("layeredit"), message, 0),
    )


Gimp.main(LayerEdit.__gtype__, sys.argv)

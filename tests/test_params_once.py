"""A parameter is declared once, on the pipeline's params dataclass, and every host shows it (issue 10).

The test adds one field to the erase pipeline's params dataclass (a subclass: no product file changes) and
registers the real erase op with it, then finds that field, with its default, range and help, in the CLI's ``--help``
and parsing, in the Krita docker's form (the controller against a real server, fake ``krita``, and the docker's own
widget code over a recording stand-in for PyQt5), and in the GIMP procedure's PDB arguments and its config ->
params mapping (fake Gimp). The value the hosts send reaches the pipeline as the dataclass field.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from dataclasses import dataclass
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from backend import cli
from backend.erase import pipeline_erase
from backend.ops import JobContext, Op, OpResult, OpSpec, Registry
from backend.ops.erase import EraseOp
from backend.params import EraseParams
from backend.server import Server, ServerConfig
from protocol.errors import ErrorCode, ProtocolError
from protocol.hostkit import Form
from protocol.params import param, refuse_blank, schema
from tests import fake_krita

HELP = "Edge sharpness of the fill: 0 soft, 2 crisp."


@dataclass
class SharperErase(EraseParams):
    sharpness: float = param(0.5, help=HELP, min=0.0, max=2.0)


class SharperEraseOp(EraseOp):
    spec = OpSpec.of("erase", EraseOp.spec.help, SharperErase, needs_selection=True)


@pytest.fixture
def registry():
    return Registry({"erase": SharperEraseOp})


@pytest.fixture
def seen(monkeypatch):
    """Every params object the erase pipeline is run with."""
    got: list = []
    original = pipeline_erase.ErasePipeline.__call__

    def spy(self, image, selection, params=None, *args, **kwargs):
        got.append(params)
        return original(self, image, selection, params, *args, **kwargs)

    monkeypatch.setattr(pipeline_erase.ErasePipeline, "__call__", spy)
    return got


def test_the_schema_is_the_dataclass():
    names = [p.name for p in schema(SharperErase)]
    assert names == [p.name for p in EraseOp.spec.params] + ["sharpness"]
    p = SharperEraseOp.spec.param("sharpness")
    assert p.to_json() == {
        "name": "sharpness",
        "type": "float",
        "default": 0.5,
        "help": HELP,
        "min": 0.0,
        "max": 2.0,
    }
    assert SharperEraseOp.spec.build(SharperEraseOp.spec.validate({"sharpness": 1})).sharpness == 1.0
    with pytest.raises(ProtocolError) as err:
        SharperEraseOp.spec.validate({"sharpness": 2.5})
    assert err.value.code == ErrorCode.BAD_PARAM and "sharpness" in err.value.message


def test_cli_help_and_parsing(registry, seen, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["erase", "--help"], registry=registry, models_factory=None)
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--sharpness X" in text
    assert f"{HELP} (default: 0.5; range 0.0..2.0)" in text

    image = np.full((24, 32, 3), 120, np.uint8)
    image[8:16, 10:20] = (20, 40, 200)
    mask = np.zeros((24, 32), np.uint8)
    mask[6:18, 8:22] = 255
    cv2.imwrite(str(tmp_path / "in.png"), image)
    cv2.imwrite(str(tmp_path / "sel.png"), mask)
    argv = ["erase", str(tmp_path / "in.png"), "--selection", str(tmp_path / "sel.png"), "--no-snap"]
    argv += ["--fill", "telea", "--quiet", "--out", str(tmp_path / "out.png"), "--sharpness", "1.5"]
    assert cli.main(argv, registry=registry, models_factory=None) == 0
    assert isinstance(seen[-1], SharperErase) and seen[-1].sharpness == 1.5 and seen[-1].fill == "telea"
    assert (tmp_path / "out.png").exists()
    assert cli.main([*argv[:-1], "3"], registry=registry, models_factory=None) == cli.EXIT_ERROR
    assert "sharpness" in capsys.readouterr().err


@pytest.fixture
def server(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    srv = Server(
        ServerConfig(connection_file=tmp_path / "backend.json", report_models=False),
        registry,
        models_factory=None,
    ).start()
    yield srv
    srv.stop()


class _AnyAttribute(type):
    """Class attributes (enums such as ``QImage.Format_RGBA8888``) are names, as good as any here."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return f"{cls.__name__}.{name}"


class _Recorder(metaclass=_AnyAttribute):
    """Stands in for any PyQt5 class: remembers every call made on it."""

    def __init__(self, *args, **kwargs):
        self.args, self.calls = args, {}

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.calls.__setitem__(name, args)


def _fake_qt(monkeypatch) -> None:
    qt = types.ModuleType("PyQt5")
    for sub in ("QtCore", "QtGui", "QtWidgets"):
        mod = types.ModuleType(f"PyQt5.{sub}")
        mod.__getattr__ = lambda name: type(name, (_Recorder,), {})  # type: ignore[method-assign]
        setattr(qt, sub, mod)
        monkeypatch.setitem(sys.modules, f"PyQt5.{sub}", mod)
    monkeypatch.setitem(sys.modules, "PyQt5", qt)
    monkeypatch.setattr(fake_krita, "DockWidget", _Recorder, raising=False)


def test_krita_docker_form(server, seen, monkeypatch):
    from tests.test_krita_plugin import layer_doc, make_controller, select, wait_for

    fake_krita.Krita._instance = None
    app = fake_krita.Krita.instance()
    c = make_controller(app, server)
    form = c.forms["erase"]
    f = form.field("sharpness")
    assert (f.type, f.default, f.min, f.max, f.help) == ("float", 0.5, 0.0, 2.0, HELP)
    assert f in form.basic and form.values["sharpness"] == 0.5

    _fake_qt(monkeypatch)  # the docker's own widget code, over a recording PyQt5
    try:
        docker = importlib.import_module("krita_plugin.layeredit.docker")
        fake_self = SimpleNamespace(param_widgets={})
        layout = _Recorder()
        docker.LayerEditDocker._add_field(fake_self, layout, form, f)
    finally:
        sys.modules.pop("krita_plugin.layeredit.docker", None)
    field, widget = fake_self.param_widgets["sharpness"]
    assert field is f and type(widget).__name__ == "QDoubleSpinBox"
    assert widget.calls["setRange"] == (0.0, 2.0) and widget.calls["setValue"] == (0.5,)
    assert widget.calls["setToolTip"] == (HELP,) and layout.calls["addRow"] == ("Sharpness", widget)

    form.set("sharpness", "1.25")  # what the docker's collect_params does with the spin box's value
    doc, node = layer_doc(app)
    select(doc, 10, 8, 12, 10)
    assert c.run(doc, node, "Erase", form.params(snap=False, fill="telea"))
    wait_for(lambda: not c.job.busy, c)
    assert c.job.state.value == "done", c.job.status_text
    assert isinstance(seen[-1], SharperErase) and seen[-1].sharpness == 1.25


def test_gimp_pdb_arguments(registry, tmp_path, capsys):
    from tests.test_gimp_plugin import pdbargs, plugin, procedure_modules

    assert cli.main(["schemas"], registry=registry) == 0  # what the installer snapshots for GIMP
    (tmp_path / plugin.SCHEMAS_NAME).write_text(capsys.readouterr().out)
    gimp, gobject = procedure_modules()
    proc = plugin.create_procedure(None, "plug-in-layeredit-erase", None, gimp, gobject, tmp_path)
    kind, (label, blurb, lo, hi, default, _flags) = proc.args["sharpness"]
    assert (kind, blurb, lo, hi, default) == ("double", HELP, 0.0, 2.0, 0.5)
    assert label.replace("_", "") == "Sharpness"

    schema_json = json.loads((tmp_path / plugin.SCHEMAS_NAME).read_text())[0]
    config = SimpleNamespace(get_property={"sharpness": 1.75}.get)
    params = pdbargs.params_from_config(config, Form.from_op_json(schema_json), {"sharpness"})
    assert params["sharpness"] == 1.75
    with pytest.raises(ProtocolError) as err:
        bad = SimpleNamespace(get_property={"sharpness": 9.0}.get)
        pdbargs.params_from_config(bad, Form.from_op_json(schema_json), {"sharpness"})
    assert err.value.code == ErrorCode.BAD_PARAM


# ---- validated once, at the door ------------------------------------------------------------------------------


@dataclass
class NoteParams:
    text: str = param("", help="Say something.", nonempty=True)
    times: int = param(1, help="How often.", min=1, max=3)


class NoteOp(Op):
    """Counts its runs: a job the door refuses never reaches ``run``."""

    spec = OpSpec.of("note", "Echo the image (test op).", NoteParams, empty_selection_ok=False)
    runs: list = []

    def run(self, inputs, params, ctx):
        NoteOp.runs.append(self.spec.build(params))
        return OpResult(inputs.image)


def test_the_door_refuses_before_the_op_runs_for_server_and_cli(tmp_path, monkeypatch):
    from backend.jobs import admit, run_job
    from backend.wire_images import array_buffer
    from protocol.client import Client

    image = array_buffer(np.zeros((6, 5, 4), np.uint8))
    empty_sel = array_buffer(np.zeros((6, 5), np.uint8), role="selection")
    registry = Registry({"note": NoteOp})
    NoteOp.runs.clear()
    with pytest.raises(ProtocolError) as err:
        admit(NoteOp.spec, {"text": " \n"}, image, None)
    assert err.value.code == ErrorCode.BAD_PARAM and "'text' is empty; say something" in err.value.message
    with pytest.raises(ProtocolError) as err:  # a selection sent must cover the layer (this op says so)
        run_job(registry, "note", {"text": "hi"}, image, empty_sel, JobContext())
    assert err.value.code == ErrorCode.NO_SELECTION
    assert admit(NoteOp.spec, {"text": "hi"}, image, None) == {"text": "hi", "times": 1}
    with pytest.raises(ValueError, match="text: say something"):  # library callers: the same declaration
        refuse_blank(NoteParams(" "))

    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    srv = Server(
        ServerConfig(connection_file=tmp_path / "b.json", report_models=False), registry, models_factory=None
    )
    srv.start()
    try:
        client = Client.connect(srv.connection_file)
        for params, sel, code in (
            ({"text": ""}, None, ErrorCode.BAD_PARAM),
            ({"text": "hi", "times": 4}, None, ErrorCode.BAD_PARAM),
            ({"text": "hi"}, empty_sel, ErrorCode.NO_SELECTION),
        ):
            with pytest.raises(ProtocolError) as err:
                client.run("note", params, image=image, selection=sel, timeout=30)
            assert err.value.code == code, params
        assert NoteOp.runs == []  # refused at the door: not one run started
        client.run("note", {"text": "hi", "times": 2}, image=image, timeout=30)
        assert NoteOp.runs == [NoteParams("hi", 2)]
        client.close()
    finally:
        srv.stop()


def test_a_prompt_left_out_is_refused_at_the_door_like_a_blank_one():
    """The real Replace and Imagic schemas: leaving ``prompt`` out (the CLI without --prompt, a client that omits
    it) is the same ``bad_param`` as sending "", before any model loads; before, the default "" skipped the check
    and Replace loaded its inpainting model only to fail with ``internal``."""
    from backend.jobs import admit
    from backend.ops.imagic import ImagicOp
    from backend.ops.replace import ReplaceOp
    from backend.wire_images import array_buffer

    image = array_buffer(np.zeros((8, 8, 3), np.uint8))
    selection = array_buffer(np.full((8, 8), 255, np.uint8), role="selection")
    for spec in (ReplaceOp.spec, ImagicOp.spec):
        for params in ({}, {"prompt": "  "}):
            with pytest.raises(ProtocolError) as err:
                admit(spec, params, image, selection)
            assert err.value.code == ErrorCode.BAD_PARAM and err.value.details == {"param": "prompt"}, (
                spec.name,
                params,
            )
        assert admit(spec, {"prompt": "a red vase"}, image, selection)["prompt"] == "a red vase"


def test_replace_refuses_what_the_wire_range_cannot_say_before_loading_a_model():
    """resolution 1-63 passes the wire's 0-2048 range (0 means the model's own) but no run can use it: a
    ``bad_param`` from the op before it asks the model manager for anything, not ``internal`` after a load."""
    from backend.jobs import run_job
    from backend.ops import Registry
    from backend.ops.replace import ReplaceOp
    from backend.wire_images import array_buffer

    class NoModels:
        def __getattr__(self, name):
            raise AssertionError(f"the model manager was asked for {name!r}")

    image = array_buffer(np.zeros((8, 8, 3), np.uint8))
    selection = array_buffer(np.full((8, 8), 255, np.uint8), role="selection")
    with pytest.raises(ProtocolError) as err:
        run_job(
            Registry({"replace": ReplaceOp}),
            "replace",
            {"prompt": "a red vase", "resolution": 32},
            image,
            selection,
            JobContext(models=NoModels()),
        )
    assert err.value.code == ErrorCode.BAD_PARAM and "resolution must be at least 64" in err.value.message

"""The GIMP plug-in's adapter logic without GIMP: a fake Gimp/Gegl (tests/hosts/gimp/fake_gimp.py), the shared
hostkit, a real backend server in a thread, and the real installer."""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from protocol.errors import ErrorCode, ProtocolError
from protocol.hostkit import Form, mode_by_label, result_mask
from tests.hosts.gimp import fake_gimp

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = ROOT / "gimp_plugin" / "layeredit"
sys.path.insert(0, str(PLUGIN_DIR))

from layeredit_gimp import gimpio, pdbargs, plugin  # noqa: E402

ERASE, IMAGIC = mode_by_label("erase"), mode_by_label("imagic")


def _image(precision="u8-non-linear", size=(40, 30), layer=(24, 20), offset=(10, 6)):
    image = fake_gimp.Image(*size, precision=precision)
    src = fake_gimp.Layer(image, "src", *layer, image.pixel_babl)
    src.set_offsets(*offset)
    bpp = src.buffer.bpp
    src.buffer.data[:] = bytes((i * 7 + 3) % 251 for i in range(layer[0] * layer[1] * bpp))
    image.layers.append(src)
    return image, src


@pytest.mark.parametrize(
    ("nick", "babl", "sample", "mask"),
    [
        ("u8-non-linear", "R'G'B'A u8", "u8", "Y u8"),
        ("u16-non-linear", "R'G'B'A u16", "u16", "Y float"),
        ("u16-linear", "RGBA u16", "u16", "Y float"),
        ("half-perceptual", "R~G~B~A half", "f16", "Y float"),
        ("float-linear", "RGBA float", "f32", "Y float"),
        ("double-non-linear", "R'G'B'A float", "f32", "Y float"),
    ],
)
def test_pixel_format_follows_precision(nick, babl, sample, mask):
    fmt = gimpio.pixel_format(nick)
    assert (fmt.babl, fmt.sample, fmt.mask_babl) == (babl, sample, mask)


def test_new_channels_of_8_bit_non_linear_images_are_written_non_linear():
    """GIMP 3.0.4 makes such channels "Y' u8" and select_item copies their values into the linear selection:
    a mask written as "Y u8" came out brightened (54 -> 127), so it goes in as "Y' u8" there."""
    assert gimpio.pixel_format("u8-non-linear").channel_babl == "Y' u8"
    assert gimpio.pixel_format("u8-linear").channel_babl == "Y u8"
    assert gimpio.pixel_format("float-linear").channel_babl == "Y float"
    data, babl = gimpio.mask_in_format(bytes([0, 54, 128, 255]), "Y' u8")
    assert (data, babl) == (bytes([0, 54, 128, 255]), "Y' u8")


def test_pixel_format_rejects_unknown():
    with pytest.raises(ValueError):
        gimpio.pixel_format("u12-linear")


def test_read_source_offset_layer_region_and_selection():
    gimp, gegl = fake_gimp.make_modules()
    image, src = _image()
    image.select_rectangle("REPLACE", 14, 10, 6, 5)  # inside the layer (layer spans x 10..34, y 6..26)
    source = gimpio.read_source(gimp, gegl, image, src, ERASE)
    r = source.region
    # region = selection + context, clipped to the layer and the canvas
    assert (r.x, r.y, r.right, r.bottom) == (10, 6, 34, 26)
    assert len(source.pixels) == r.w * r.h * 4
    local = gegl.Rectangle.new(r.x - 10, r.y - 6, r.w, r.h)
    assert source.pixels == src.buffer.get(local, 1.0, "R'G'B'A u8", gegl.AbyssPolicy.NONE)
    sel = source.selection
    assert sel is not None and sel.count(255) == 30 and sel.count(0) == r.w * r.h - 30
    # the first selected sample sits at image (14, 10) -> region-relative (4, 4)
    assert sel.index(255) == (10 - r.y) * r.w + (14 - r.x)


def test_read_source_without_selection():
    gimp, gegl = fake_gimp.make_modules()
    image, src = _image(layer=(50, 20), offset=(-5, 4))  # sticks out of the canvas on the left and right
    with pytest.raises(ProtocolError) as err:
        gimpio.read_source(gimp, gegl, image, src, ERASE)
    assert err.value.code == ErrorCode.NO_SELECTION
    source = gimpio.read_source(gimp, gegl, image, src, IMAGIC)  # whole visible part of the layer
    assert source.selection is None
    assert (source.region.x, source.region.y, source.region.w, source.region.h) == (0, 4, 40, 20)


def test_read_source_selection_missing_the_layer_is_an_error():
    gimp, gegl = fake_gimp.make_modules()
    image, src = _image()
    image.select_rectangle("REPLACE", 0, 0, 5, 5)
    with pytest.raises(ProtocolError) as err:
        gimpio.read_source(gimp, gegl, image, src, ERASE)
    assert err.value.code == ErrorCode.NO_SELECTION


def test_read_source_u16_and_float_use_matching_formats():
    gimp, gegl = fake_gimp.make_modules()
    for precision, bpp in (("u16-non-linear", 8), ("float-linear", 16)):
        image, src = _image(precision=precision)
        image.select_rectangle("REPLACE", 14, 10, 6, 5)
        source = gimpio.read_source(gimp, gegl, image, src, ERASE)
        assert len(source.pixels) == source.region.w * source.region.h * bpp
        assert len(source.selection) == source.region.w * source.region.h * 4  # "Y float"


def test_write_result_new_layer_above_source_in_one_undo_group():
    gimp, gegl = fake_gimp.make_modules()
    image, src = _image()
    image.select_rectangle("REPLACE", 14, 10, 6, 5)
    before = bytes(src.buffer.data)
    source = gimpio.read_source(gimp, gegl, image, src, ERASE)
    r = source.region
    result = bytes(255 - b for b in source.pixels)
    mask = bytes(255 if i % 3 == 0 else 0 for i in range(r.w * r.h))
    (layer,) = gimpio.write_result(gimp, gegl, image, source, result, "Erase", mask=mask)
    assert image.layers == [layer, src]  # right above the source
    assert image.get_selected_layers() == [src]  # GIMP selected the new layer; the source is selected again
    assert (layer.x, layer.y, layer.width, layer.height) == (r.x, r.y, r.w, r.h)
    assert bytes(layer.buffer.data) == result
    assert bytes(src.buffer.data) == before  # the source is never written
    assert image.undo_groups == 1 and image.undo_depth == 0
    assert image.channels == []  # the temporary channel is gone
    got = image.selection.buffer.get(
        gegl.Rectangle.new(r.x, r.y, r.w, r.h), 1.0, "Y u8", gegl.AbyssPolicy.NONE
    )
    assert got == mask
    with pytest.raises(ValueError):
        gimpio.write_result(gimp, gegl, image, source, result[:-1], "Erase")
    assert image.layers == [layer, src]


def test_write_result_failure_half_way_leaves_no_layer(monkeypatch):
    gimp, gegl = fake_gimp.make_modules()
    image, src = _image()
    image.select_rectangle("REPLACE", 14, 10, 6, 5)
    source = gimpio.read_source(gimp, gegl, image, src, ERASE)

    def broken_select(*args):
        raise RuntimeError("GEGL said no")

    monkeypatch.setattr(gimpio, "_select_mask", broken_select)
    with pytest.raises(RuntimeError):
        gimpio.write_result(gimp, gegl, image, source, source.pixels, "Erase", mask=b"x")
    assert image.layers == [src] and image.undo_depth == 0
    assert image.get_selected_layers() == [src]


SCHEMA = {
    "name": "replace",
    "help": "Replace the object",
    "params": [
        {"name": "prompt", "type": "str", "default": "", "help": "what to paint"},
        {"name": "strength", "type": "float", "default": 0.9, "help": "s", "min": 0.0, "max": 1.0},
        {"name": "seed", "type": "int", "default": -1, "help": "seed", "min": -1, "max": 2**31 - 1},
        {"name": "snap", "type": "bool", "default": True, "help": "snap"},
        {
            "name": "snapper",
            "type": "enum",
            "default": "grabcut",
            "help": "x",
            "choices": ["grabcut", "u2net"],
        },
        {"name": "eta", "type": "float_list", "default": [0.7], "help": "eta", "advanced": True},
    ],
}


class FakeChoice:
    def __init__(self):
        self.items = []

    @classmethod
    def new(cls):
        return cls()

    def add(self, nick, ident, label, help_):
        self.items.append(nick)


def test_add_arguments_from_schema():
    proc = fake_gimp.RecordingProcedure()
    gimp = type("G", (), {"Choice": FakeChoice})
    gobject = type("O", (), {"ParamFlags": type("F", (), {"READWRITE": 3})})
    names = pdbargs.add_arguments(proc, SCHEMA, gimp, gobject)
    assert names == ["prompt", "strength", "seed", "snap", "snapper", "eta"]
    assert proc.args["strength"] == ("double", ("S_trength", "s", 0.0, 1.0, 0.9, 3))
    assert proc.args["seed"][0] == "int" and proc.args["seed"][1][2:5] == (-1, 2**31 - 1, -1)
    assert proc.args["snap"][0] == "boolean"
    kind, rest = proc.args["snapper"]
    assert kind == "choice" and rest[2].items == ["grabcut", "u2net"] and rest[3] == "grabcut"
    assert proc.args["eta"] == ("string", ("Eta", "eta (comma list)", "0.7", 3))  # e, t, a all taken
    # at most one mnemonic per key, none taken from the dialog's own buttons
    labels = [rest[0] for _kind, rest in proc.args.values()]
    keys = [label[label.index("_") + 1].lower() for label in labels if "_" in label]
    assert len(set(keys)) == len(keys) and not set(keys) & set(pdbargs.DIALOG_KEYS)
    assert {pdbargs.SELECT, pdbargs.EXTRA} <= set(proc.args)
    assert pdbargs.advanced_names(SCHEMA["params"]) == ["eta"]  # the JSON escape hatch is never shown
    no_snap = fake_gimp.RecordingProcedure()  # Imagic and Select object return no snapped object to select
    pdbargs.add_arguments(no_snap, SCHEMA, gimp, gobject, select=False)
    assert pdbargs.SELECT not in no_snap.args and pdbargs.EXTRA in no_snap.args  # scripts keep extra-params


def test_params_from_config_uses_live_schema():
    config = fake_gimp.Config(
        prompt="a red car",
        strength=0.5,
        seed=7,
        snap=False,
        snapper="u2net",
        eta="0.6, 0.8",
        **{pdbargs.EXTRA: '{"steps": 4}', pdbargs.SELECT: False, "gone": 1},
    )
    registered = {
        "prompt",
        "strength",
        "seed",
        "snap",
        "snapper",
        "eta",
        "gone",
        pdbargs.EXTRA,
        pdbargs.SELECT,
    }
    params = pdbargs.params_from_config(config, Form.from_op_json(SCHEMA), registered)
    assert params == {
        "prompt": "a red car",
        "strength": 0.5,
        "seed": 7,
        "snap": False,
        "snapper": "u2net",
        "eta": [0.6, 0.8],
        "steps": 4,
    }
    # a parameter GIMP has not registered (backend newer than the plug-in's registration) keeps its default
    params = pdbargs.params_from_config(config, Form.from_op_json(SCHEMA), {"prompt"})
    assert params["strength"] == 0.9 and params["prompt"] == "a red car"


@pytest.mark.parametrize("extra", ["{nope", "[1, 2]"])
def test_params_from_config_bad_extra(extra):
    config = fake_gimp.Config(prompt="x", **{pdbargs.EXTRA: extra})
    with pytest.raises(ProtocolError) as err:
        pdbargs.params_from_config(config, Form.from_op_json(SCHEMA), {"prompt", pdbargs.EXTRA})
    assert err.value.code == ErrorCode.BAD_PARAM


def test_params_from_config_out_of_range_is_bad_param():
    config = fake_gimp.Config(strength=2.0)
    with pytest.raises(ProtocolError) as err:
        pdbargs.params_from_config(config, Form.from_op_json(SCHEMA), {"strength"})
    assert err.value.code == ErrorCode.BAD_PARAM


class RecordingDialog:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args)) or self

    def set_increments(self, *args):
        self.calls.append(("set_increments", *args))


def test_fill_dialog_basic_up_front_advanced_folded():
    dialog = RecordingDialog()
    registered = {
        "prompt",
        "strength",
        "seed",
        "snap",
        "snapper",
        pdbargs.SELECT,
        pdbargs.EXTRA,
    }  # eta: not (yet)
    plugin.fill_dialog(dialog, SCHEMA["params"], registered, spin_type="SpinScale")
    calls = {c[0]: c[1:] for c in dialog.calls}
    assert "fill_box" not in calls  # eta is advanced but unregistered: no empty Advanced expander
    assert calls["fill"] == (["prompt", "strength", "seed", "snap", "snapper", pdbargs.SELECT],)
    assert ("get_widget", "strength", "SpinScale") in dialog.calls
    assert calls["set_increments"] == (0.01, 0.1)
    # with eta registered it is folded away; extra-params (raw JSON) never shows, though it is registered
    dialog = RecordingDialog()
    plugin.fill_dialog(dialog, SCHEMA["params"], registered | {"eta"})
    calls = {c[0]: c[1:] for c in dialog.calls}
    assert calls["fill_box"] == ("layeredit-advanced-box", ["eta"])
    assert calls["fill"] == (
        ["prompt", "strength", "seed", "snap", "snapper", pdbargs.SELECT, "layeredit-advanced"],
    )
    assert all(pdbargs.EXTRA not in str(c) for c in dialog.calls)


def test_fill_dialog_puts_an_install_hint_under_its_field():
    dialog = RecordingDialog()
    hint = "Better snapper quality needs a model (u2net); none is installed. Install one with: ..."
    registered = {"prompt", "snapper", "eta", pdbargs.SELECT}
    labels = plugin.fill_dialog(dialog, SCHEMA["params"], registered, hints={"snapper": hint, "gone": "x"})
    assert list(labels) == ["snapper"]
    assert ("get_label", "layeredit-hint-snapper", hint, False, False) in dialog.calls
    assert ("set_line_wrap", True) in dialog.calls and ("set_selectable", True) in dialog.calls
    calls = {c[0]: c[1:] for c in dialog.calls}
    assert calls["fill"] == (
        ["prompt", "snapper", "layeredit-hint-snapper", pdbargs.SELECT, "layeredit-advanced"],
    )


def test_procedures_cover_the_modes_in_the_dockers_order():
    names = plugin.procedure_names()
    assert names == [
        "plug-in-layeredit-erase",
        "plug-in-layeredit-replace",
        "plug-in-layeredit-imagic",
        "plug-in-layeredit-snap",
        "plug-in-layeredit-connect",
    ]
    assert plugin.mode_of("plug-in-layeredit-imagic").op == "imagic"
    assert plugin.mode_of("plug-in-layeredit-snap").label == "Select object"
    # GIMP sorts one menu path's entries by label; each entry's own section keeps the order above
    paths = [plugin.menu_path(n) for n in names]
    assert all(p.startswith(plugin.MENU + "/[") for p in paths) and paths == sorted(paths)


class FakeProcedure(fake_gimp.RecordingProcedure):
    def __init__(self, name):
        super().__init__()
        self.name, self.menu_paths, self.calls = name, [], {}

    def add_menu_path(self, path):
        self.menu_paths.append(path)

    def __getattr__(self, attr):
        if attr.startswith("set_"):
            return lambda *args: self.calls.__setitem__(attr, args)
        return super().__getattr__(attr)


def procedure_modules() -> tuple[SimpleNamespace, SimpleNamespace]:
    """(gimp, gobject) enough for ``plugin.create_procedure``: procedures are FakeProcedures."""
    gimp = SimpleNamespace(
        ImageProcedure=SimpleNamespace(new=lambda _plugin, name, *_args: FakeProcedure(name)),
        PDBProcType=SimpleNamespace(PLUGIN=1),
        ProcedureSensitivityMask=SimpleNamespace(DRAWABLE=2, ALWAYS=3),
        Choice=FakeChoice,
    )
    return gimp, SimpleNamespace(ParamFlags=SimpleNamespace(READWRITE=3))


def test_select_object_procedure_sits_in_ai_edit_and_in_select(tmp_path):
    gimp, gobject = procedure_modules()
    (tmp_path / plugin.SCHEMAS_NAME).write_text(json.dumps([SNAP_SCHEMA, INVERT_SPEC.to_json()]))
    snap = plugin.create_procedure(None, "plug-in-layeredit-snap", None, gimp, gobject, tmp_path)
    assert snap.calls["set_menu_label"] == ("Select object…",)
    assert snap.menu_paths == [plugin.menu_path(snap.name), "<Image>/Select/[Modify]"]
    assert "no layer is added" in snap.calls["set_documentation"][1]
    assert set(snap.args) == {"method", "margin", pdbargs.EXTRA}  # nothing to "select afterwards"
    erase = plugin.create_procedure(None, "plug-in-layeredit-erase", None, gimp, gobject, tmp_path)
    assert erase.menu_paths == [plugin.menu_path(erase.name)] and pdbargs.SELECT in erase.args


def test_load_schemas_prefers_snapshot(tmp_path):
    (tmp_path / plugin.SCHEMAS_NAME).write_text(json.dumps([SCHEMA]))
    assert plugin.load_schemas(tmp_path) == {"replace": SCHEMA}
    assert plugin.load_schemas(tmp_path / "missing") == {}  # no snapshot, no config: host args only


# -- against a real backend server (in a thread) with test ops -------------------------------------------
from backend.ops import Op, OpResult, OpSpec, ParamSpec, Registry  # noqa: E402

INVERT_SPEC = OpSpec(
    "erase",
    "test stand-in: inverts RGB where the selection is",
    (
        ParamSpec("amount", "int", 255, "xor value", 0, 255),
        ParamSpec("steps", "int", 3, "progress steps", 1, 400),
    ),
    needs_selection=True,
)


class InvertOp(Op):
    spec = INVERT_SPEC

    def run(self, inputs, params, ctx):
        import numpy as np

        out = inputs.image.copy()
        inside = inputs.selection > 0.5
        for step in range(params["steps"]):
            ctx.check_cancelled()
            ctx.progress("inverting", step + 1, params["steps"])
            if params["steps"] > 3:
                time.sleep(0.05)
        out[..., :3][inside] = params["amount"] - out[..., :3][inside]
        region = (inside * 255).astype(np.uint8)
        obj = region.copy()
        obj[1::2] = 0  # the "object": every other row of the region, so the test tells them apart
        meta = {"masks": ["region", "object"]}
        return OpResult(out, mask=region, meta=meta, object_mask=obj)


from backend.ops.snap import SnapOp  # noqa: E402

SNAP_SCHEMA = SnapOp.spec.to_json()


class SnapStandIn(Op):
    """The real snap schema; the "object" is every other row of the selection, so the test can tell the
    snapped mask from the rough selection."""

    spec = SnapOp.spec

    def run(self, inputs, params, ctx):
        import numpy as np

        ctx.progress("snap", 1, 1)
        mask = (inputs.selection > 0.5).astype(np.uint8) * 255
        mask[1::2] = 0
        return OpResult(None, mask=mask, meta={"method": params["method"]})


class ImagicStandIn(Op):
    """Returns one image per eta (as the real Imagic op does: first in ``image``, the rest as candidates)."""

    spec = OpSpec(
        "imagic",
        "test stand-in",
        (ParamSpec("prompt", "str", "", "p"), ParamSpec("eta", "float_list", [0.7], "e")),
    )

    def run(self, inputs, params, ctx):
        outs = [inputs.image // 2 + int(100 * eta) for eta in params["eta"]]
        return OpResult(outs[0], meta={"etas": params["eta"]}, extra_images=outs[1:])


@pytest.fixture
def no_hang():
    """Turns a hang into a failure with a traceback (SIGALRM interrupts any blocking wait in this thread),
    so a lost reply fails the test instead of eating the whole run."""

    def hung(_signum, frame):
        raise TimeoutError("the test hung for 120 s (stack above shows where)")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, 120)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def server(tmp_path, monkeypatch):
    from backend.server import Server, ServerConfig

    run = tmp_path / "run"
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(run))
    srv = Server(
        ServerConfig(report_models=False),
        registry=Registry({"erase": InvertOp, "imagic": ImagicStandIn, "snap": SnapStandIn}),
        models_factory=None,
    ).start()
    yield srv
    srv.stop()


def test_run_job_end_to_end_with_real_server(server, tmp_path):
    gimp, gegl = fake_gimp.make_modules()
    image, src = _image()
    image.select_rectangle("REPLACE", 14, 10, 6, 5)
    before = bytes(src.buffer.data)
    config = fake_gimp.Config(amount=255, steps=3, **{pdbargs.SELECT: True, pdbargs.EXTRA: "{}"})
    registered = {"amount", "steps", pdbargs.SELECT, pdbargs.EXTRA}
    out = plugin.run_job(gimp, gegl, image, src, ERASE, config, registered, tmp_path)
    layer = out.layer
    assert image.layers == [layer, src] and layer.name == "Erase"
    assert bytes(src.buffer.data) == before
    x0, y0 = layer.x, layer.y
    new = layer.buffer.data
    for y in range(layer.height):
        for x in range(layer.width):
            i = 4 * (y * layer.width + x)
            sx, sy = x + x0 - src.x, y + y0 - src.y
            j = 4 * (sy * src.width + sx)
            inside = 14 <= x + x0 < 20 and 10 <= y + y0 < 15
            expected = bytes(255 - v for v in before[j : j + 3]) if inside else before[j : j + 3]
            assert new[i : i + 3] == expected, (x, y, inside)
            assert new[i + 3] == before[j + 3]
    texts = [c[1] for c in gimp.progress_calls if c[0] == "text"]
    assert "Erase: inverting 3/3" in texts and gimp.progress_calls[-1] == ("end",)
    assert ("select_item", "layeredit mask") in image.log
    # "Select the snapped object" selects the object (odd rows of the region left out), not the region
    top = out.region[1]
    sel = image.selection.buffer.data
    selected = {(i % image.width, i // image.width) for i, v in enumerate(sel) if v}
    assert selected == {(x, y) for x in range(14, 20) for y in range(10, 15) if (y - top) % 2 == 0}
    assert set(out.masks) == {"region", "object"}
    plugin.dump_outcome(out, str(tmp_path / "dump"))  # the real-host tests' hook
    rx, ry, rw, rh = out.region
    region = (tmp_path / "dump" / "mask_region.raw").read_bytes()
    assert len(region) == rw * rh
    assert {(rx + i % rw, ry + i // rw) for i, v in enumerate(region) if v} == {
        (x, y) for x in range(14, 20) for y in range(10, 15)
    }
    dumped = json.loads((tmp_path / "dump" / "result.json").read_text())
    assert dumped["region"] == list(out.region) and dumped["masks"] == ["object", "region"]
    # a second Run (GIMP passes the selected layers) reads the source again and gets a distinct layer name
    (selected,) = image.get_selected_layers()
    assert selected is src
    out2 = plugin.run_job(gimp, gegl, image, selected, ERASE, config, registered, tmp_path)
    assert out2.layer.name == "Erase (2)"


@pytest.mark.parametrize(
    ("precision", "one"), [("u8-non-linear", b"\xff"), ("float-linear", b"\x00\x00\x80?")]
)
def test_select_object_replaces_the_selection_and_adds_no_layer(server, tmp_path, precision, one):
    gimp, gegl = fake_gimp.make_modules()
    image, src = _image(precision=precision)
    image.set_selected_layers([src])
    image.select_rectangle("REPLACE", 14, 10, 6, 5)
    before = bytes(src.buffer.data)
    select = mode_by_label("Select object")
    config = fake_gimp.Config(method="none", margin=24, **{pdbargs.EXTRA: "{}"})
    out = plugin.run_job(
        gimp, gegl, image, src, select, config, {"method", "margin", pdbargs.EXTRA}, tmp_path
    )
    assert out.layer is None and out.layers == [] and out.meta["method"] == "none"
    assert image.layers == [src] and image.get_selected_layers() == [src]  # no layer, same layer selected
    assert bytes(src.buffer.data) == before  # no pixel changed
    assert image.undo_groups == 1 and image.undo_depth == 0 and image.channels == []
    assert ("select_item", "layeredit mask") in image.log
    size, sel = len(one), bytes(image.selection.buffer.data)
    pixels = [sel[i : i + size] for i in range(0, len(sel), size)]
    selected = {(i % image.width, i // image.width) for i, v in enumerate(pixels) if v == one}
    assert set(pixels) == {one, bytes(size)}  # the channel's own format: fully selected or not at all
    region_top = gimpio.read_source(gimp, gegl, image, src, select).region.y  # the op dropped odd region rows
    assert selected == {(x, y) for x in range(14, 20) for y in range(10, 15) if (y - region_top) % 2 == 0}
    texts = [c[1] for c in gimp.progress_calls if c[0] == "text"]
    assert any(t.startswith("Select object: ") for t in texts) and gimp.progress_calls[-1] == ("end",)


def test_select_object_bad_mask_leaves_the_selection(server, tmp_path):
    gimp, gegl = fake_gimp.make_modules()
    image, src = _image()
    image.select_rectangle("REPLACE", 14, 10, 6, 5)
    source = gimpio.read_source(gimp, gegl, image, src, mode_by_label("Select object"))
    with pytest.raises(ProtocolError) as err:
        result_mask(None, source.region)
    assert err.value.code == ErrorCode.BAD_BUFFER and "selection is unchanged" in err.value.message
    with pytest.raises(ValueError):
        gimpio.replace_selection(gimp, gegl, image, source, b"\x00")
    assert image.undo_groups == 0 and image.selection_bounds == (14, 10, 20, 15)


def test_imagic_without_selection_gives_one_layer_per_eta(server, tmp_path):
    gimp, gegl = fake_gimp.make_modules()
    image, src = _image()
    config = fake_gimp.Config(prompt="a dog", eta="0.6, 0.8", **{pdbargs.EXTRA: ""})
    out = plugin.run_job(gimp, gegl, image, src, IMAGIC, config, {"prompt", "eta", pdbargs.EXTRA}, tmp_path)
    assert [layer.name for layer in image.layers] == ["Imagic η0.6: a dog", "Imagic η0.8: a dog", "src"]
    assert out.layers == image.layers[:2] and image.undo_groups == 1
    top, second = out.layers
    assert (top.x, top.y, top.width, top.height) == (src.x, src.y, src.width, src.height)  # whole layer
    assert top.buffer.data[0] == src.buffer.data[0] // 2 + 60
    assert second.buffer.data[0] == src.buffer.data[0] // 2 + 80


def test_run_job_errors_leave_image_unchanged(server, tmp_path):
    gimp, gegl = fake_gimp.make_modules()
    image, src = _image()
    image.select_rectangle("REPLACE", 14, 10, 6, 5)
    config = fake_gimp.Config(**{pdbargs.EXTRA: '{"nope": 1}'})
    with pytest.raises(ProtocolError) as err:
        plugin.run_job(gimp, gegl, image, src, ERASE, config, {pdbargs.EXTRA}, tmp_path)
    assert err.value.code == ErrorCode.UNKNOWN_PARAM
    replace = mode_by_label("replace")
    with pytest.raises(ProtocolError) as err:  # this backend has no replace op
        plugin.run_job(gimp, gegl, image, src, replace, config, set(), tmp_path)
    assert err.value.code == ErrorCode.UNKNOWN_OP and "install.py" in err.value.message
    assert image.layers == [src] and image.undo_groups == 0


def test_no_backend_without_config_says_what_to_do(tmp_path, monkeypatch, no_hang):
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "empty-run"))
    gimp, gegl = fake_gimp.make_modules()
    image, src = _image()
    image.select_rectangle("REPLACE", 14, 10, 6, 5)
    with pytest.raises(ProtocolError) as err:
        plugin.run_job(gimp, gegl, image, src, ERASE, fake_gimp.Config(), set(), tmp_path)
    assert err.value.code == ErrorCode.NO_BACKEND and "install.py --gimp" in err.value.message
    assert image.layers == [src]


_FAKE_PLUGIN = """
import sys, time
sys.path[:0] = [{plugin_dir!r}, {root!r}]
from protocol.client import Client
from protocol import connection
from protocol.wire import Buffer
from layeredit_gimp.guard import CancelGuard
client = Client.connect()
img = Buffer(bytes(16 * 16 * 4), 16, 16, 4, "u8", "RGBA")
sel = Buffer(b"\\xff" * 256, 16, 16, 1, "u8", "gray", role="selection")
guard = CancelGuard.start(connection.default_path())
job = client.submit("erase", {{"steps": 400}}, image=img, selection=sel)
guard.watch(job)
print(job, flush=True)
time.sleep(600)
"""


def _state(server, job: str) -> str | None:
    """The job's state on the server; None while its submit is still on the way (the client picks the id
    and returns at once, so the id can reach the test before the backend has read the submit)."""
    try:
        return server.jobs.get(job).state
    except ProtocolError as exc:
        assert exc.code == ErrorCode.UNKNOWN_JOB
        return None


def test_cancel_guard_cancels_the_job_when_gimp_kills_the_plugin(server, tmp_path, no_hang):
    """GIMP's cancel button kills the plug-in (SIGKILL): the guard must cancel the backend job."""
    from backend.jobs import CANCELLED, RUNNING

    code = _FAKE_PLUGIN.format(plugin_dir=str(PLUGIN_DIR), root=str(ROOT))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert select.select([child.stdout], [], [], 60)[0], "the stand-in plug-in hangs before submitting"
        job = child.stdout.readline().strip()
        assert job, "the stand-in plug-in did not submit"
        deadline = time.monotonic() + 30
        while _state(server, job) != RUNNING:
            assert time.monotonic() < deadline, _state(server, job)
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        while _state(server, job) != CANCELLED:
            assert time.monotonic() < deadline, server.jobs.get(job).describe()
            time.sleep(0.05)
        assert server.jobs.get(job).progress[1] < 400  # stopped early, not run to the end
    finally:
        child.kill()
        child.wait()


def test_guard_cancel_that_overtakes_the_submit_still_cancels(server, no_hang):
    """The guard's cancel can reach the backend before the dead plug-in's submit (two connections): it
    cancels again until the backend knows the job, instead of losing the cancel to ``unknown_job``."""
    import threading

    from layeredit_gimp.guard import send_cancel

    from backend.jobs import CANCELLED
    from protocol import connection, wire
    from protocol.client import Client
    from protocol.wire import Buffer, Message

    job = wire.new_id()
    guard = threading.Thread(target=send_cancel, args=(connection.default_path(), job))
    guard.start()
    time.sleep(0.3)  # the cancel goes first: the backend answers unknown_job and the guard tries again
    with Client.connect() as client:
        img = Buffer(bytes(16 * 16 * 4), 16, 16, 4, "u8", "RGBA", role="image")
        sel = Buffer(b"\xff" * 256, 16, 16, 1, "u8", "gray", role="selection")
        client.send(Message(wire.SUBMIT, job=job, op="erase", params={"steps": 400}, buffers=[img, sel]))
        guard.join(10)
        assert not guard.is_alive()
        deadline = time.monotonic() + 30
        while _state(server, job) != CANCELLED:
            assert time.monotonic() < deadline, _state(server, job)
            time.sleep(0.05)
    assert server.jobs.get(job).progress is None or server.jobs.get(job).progress[1] < 400


def test_guard_cancel_of_a_job_that_never_comes_gives_up(server):
    from layeredit_gimp.guard import send_cancel

    from protocol import connection

    # returns (the guard process exits) even when the submit died with the plug-in: it never comes
    send_cancel(connection.default_path(), "job-never-submitted", patience=0.5)
    assert server.jobs.list() == []


def test_guard_done_sends_nothing(server, tmp_path):
    from layeredit_gimp.guard import CancelGuard

    guard = CancelGuard.start(tmp_path / "no-such-connection-file.json")
    guard.watch("job-x")
    guard.done()  # exits quietly; reading the (missing) connection file would have failed loudly
    assert guard._process.returncode == 0


def test_guard_protocol():
    import io

    from layeredit_gimp.guard import orphaned_job

    assert orphaned_job(io.BytesIO(b"job abc\n")) == "abc"  # died while the job ran
    assert orphaned_job(io.BytesIO(b"job abc\ndone\n")) is None  # finished
    assert orphaned_job(io.BytesIO(b"")) is None  # died before submitting: nothing to cancel
    assert orphaned_job(io.BytesIO(b"job abc\ndo")) == "abc"  # killed mid-write of "done"


# -- the installer --------------------------------------------------------------------------------------
from gimp_plugin import installer  # noqa: E402


def test_installer_round_trip(tmp_path):
    target = tmp_path / "plug-ins"
    (target / "other-plugin").mkdir(parents=True)
    (target / "other-plugin" / "keep.py").write_text("x")
    files = installer.install(ROOT, "/nonexistent/python", target)
    dest = target / "layeredit"
    entry = dest / "layeredit.py"
    assert entry in files and entry.stat().st_mode & stat.S_IXUSR
    for rel in (p.relative_to(ROOT) for p in (ROOT / "protocol").rglob("*.py")):  # hostkit/ included
        assert (dest / rel).read_bytes() == (ROOT / rel).read_bytes()
    assert (dest / "protocol" / "hostkit" / "__init__.py").is_file()
    assert (dest / "layeredit_gimp" / "plugin.py").is_file()
    config = json.loads((dest / "layeredit.json").read_text())
    assert config == {"project_root": str(ROOT), "venv_python": "/nonexistent/python"}
    assert not (dest / "schemas.json").exists()  # the venv could not be asked: the plug-in falls back
    assert not any("__pycache__" in str(f) for f in files)
    # re-install replaces; uninstall removes exactly what was installed, even after Python wrote caches
    os.utime(entry, (1_000_000, 1_000_000))
    files2 = installer.install(ROOT, "/nonexistent/python", target)
    assert sorted(files2) == sorted(files)
    assert entry.stat().st_mtime > 1_000_000  # a re-install makes GIMP query the plug-in again
    (dest / "layeredit_gimp" / "__pycache__").mkdir()
    (dest / "layeredit_gimp" / "__pycache__" / "plugin.cpython-313.pyc").write_bytes(b"x")
    removed = installer.install(ROOT, "/nonexistent/python", target, uninstall=True)
    assert len(removed) == len(files)
    assert not dest.exists() and (target / "other-plugin" / "keep.py").is_file()


def test_installer_keeps_user_files_and_refuses_foreign_folder(tmp_path):
    target = tmp_path / "plug-ins"
    (target / "layeredit").mkdir(parents=True)
    (target / "layeredit" / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError):
        installer.install(ROOT, "/nonexistent/python", target)
    assert (target / "layeredit" / "mine.txt").read_text() == "user data"


def test_installer_writes_schema_snapshot_from_the_venv(tmp_path):
    fake_python = tmp_path / "python"
    fake_python.write_text('#!/bin/sh\necho \'[{"name": "erase", "params": []}]\'\n')
    fake_python.chmod(0o755)
    installer.install(ROOT, fake_python, tmp_path / "p")
    snapshot = json.loads((tmp_path / "p" / "layeredit" / "schemas.json").read_text())
    assert snapshot == [{"name": "erase", "params": []}]
    assert plugin.load_schemas(tmp_path / "p" / "layeredit") == {"erase": snapshot[0]}


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {"HOME": "/h"}, "/h/.config/GIMP/3.0/plug-ins"),
        ("linux", {"HOME": "/h", "XDG_CONFIG_HOME": "/x"}, "/x/GIMP/3.0/plug-ins"),
        ("darwin", {"HOME": "/h"}, "/h/Library/Application Support/GIMP/3.0/plug-ins"),
        ("win32", {"HOME": "/h", "APPDATA": "/a"}, "/a/GIMP/3.0/plug-ins"),
    ],
)
def test_default_plugins_dir(platform, env, expected):
    assert installer.default_plugins_dir(platform, env) == Path(expected)


@pytest.mark.parametrize(
    ("sysconfig_platform", "tag"),
    [
        ("win-amd64", "win_amd64"),
        ("macosx-11.0-arm64", "macosx_11_0_arm64"),
        ("linux-x86_64", "manylinux_2_28_x86_64"),
    ],
)
def test_pip_platform_tag(sysconfig_platform, tag):
    assert installer.pip_platform_tag(sysconfig_platform) == tag


@pytest.mark.slow
def test_installer_vendors_pyzmq_for_gimps_bundled_python(tmp_path):
    """GIMP on Windows bundles a Python without pyzmq: the installer unpacks the matching wheel into vendor/
    (pip download from the package index)."""
    gimp_python = tmp_path / "gimp-python"  # answers like GIMP's Windows Python: no zmq, 3.12 on win-amd64
    gimp_python.write_text('#!/bin/sh\ncase "$2" in *"import zmq"*) exit 1;; esac\necho "3.12 win-amd64"\n')
    gimp_python.chmod(0o755)
    files = installer.install(ROOT, sys.executable, tmp_path / "p", gimp_python=gimp_python)
    vendor = tmp_path / "p" / "layeredit" / "vendor"
    assert (vendor / "zmq" / "__init__.py").is_file()
    assert any(f.suffix == ".pyd" for f in files)  # Windows extension modules, not this machine's .so
    (wheel_info,) = vendor.glob("pyzmq-27.3.0.dist-info/WHEEL")
    assert "win_amd64" in wheel_info.read_text()
    installer.install(ROOT, sys.executable, tmp_path / "p", uninstall=True)
    assert not (tmp_path / "p" / "layeredit").exists()


# -- starting the backend from the installer's config ---------------------------------------------------
from layeredit_gimp import backend as gimp_backend  # noqa: E402


@pytest.mark.slow
def test_starts_the_backend_from_config_when_none_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "layeredit.json").write_text(
        json.dumps({"project_root": str(ROOT), "venv_python": sys.executable})
    )
    texts: list[str] = []
    client = gimp_backend.connect_or_start(tmp_path, on_status=texts.append)
    try:
        assert "erase" in {op["name"] for op in client.hello()["ops"]}
        assert texts == ["Starting the backend…"]
        pid = client.info.pid
    finally:
        client.shutdown()
        client.close()
    deadline = time.monotonic() + 30
    while (tmp_path / "run" / "backend.json").exists():  # the backend removes its file on shutdown
        assert time.monotonic() < deadline, f"backend {pid} did not shut down"
        time.sleep(0.1)


def test_failed_start_says_why_with_the_log(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'ImportError: no module named torch' >&2\nexit 3\n")
    broken.chmod(0o755)
    (tmp_path / "layeredit.json").write_text(
        json.dumps({"project_root": str(tmp_path), "venv_python": str(broken)})
    )
    with pytest.raises(ProtocolError) as err:
        gimp_backend.connect_or_start(tmp_path, timeout=20)
    assert err.value.code == ErrorCode.NO_BACKEND
    assert "did not start" in err.value.message and "no module named torch" in err.value.message


def test_load_schemas_asks_the_venv_when_there_is_no_snapshot(tmp_path):
    fake_python = tmp_path / "python"
    fake_python.write_text('#!/bin/sh\necho \'[{"name": "imagic", "params": []}]\'\n')
    fake_python.chmod(0o755)
    (tmp_path / "layeredit.json").write_text(
        json.dumps({"project_root": str(tmp_path), "venv_python": str(fake_python)})
    )
    assert plugin.load_schemas(tmp_path) == {"imagic": {"name": "imagic", "params": []}}
    assert plugin.load_schemas(tmp_path / "nothing-here") == {}  # no snapshot, no config: defaults apply


# -- what the dialog and the errors tell the user to install --------------------------------------------------


def _config(plugin_dir: Path, project: Path, python: Path) -> None:
    (plugin_dir / "layeredit.json").write_text(
        json.dumps({"project_root": str(project), "venv_python": str(python)})
    )


def test_errors_name_install_py_by_its_absolute_path(tmp_path, monkeypatch):
    from protocol.hostkit import BackendChoice, save_choice

    monkeypatch.setenv("LAYEREDIT_CONFIG_DIR", str(tmp_path / "config"))
    _config(tmp_path, Path("/opt/layer edit"), Path("/opt/layer edit/.venv/bin/python"))
    msg = "The inpaint model is not installed. Install it with: python3 install.py --models sd15-inpaint"
    assert plugin.user_text(msg, tmp_path).endswith(
        "python3 '/opt/layer edit/install.py' --models sd15-inpaint"
    )
    assert plugin.user_text(msg, tmp_path / "no-config") == msg  # the relative form when the path is unknown
    remote = tmp_path / "remote.json"
    remote.write_text("{}")
    save_choice(BackendChoice(str(remote), "gpu-box"))
    assert plugin.user_text(msg, tmp_path) == msg  # a remote backend's message is about the other machine


ERASE_SCHEMA = INVERT_SPEC.to_json() | {
    "params": [
        {
            "name": "fill",
            "type": "enum",
            "default": "auto",
            "help": "fill",
            "choices": ["auto", "telea", "diffusion"],
            "needs": {"diffusion": "sd15-inpaint"},
        }
    ]
}


def test_preset_probe_asks_the_venv_without_holding_the_dialog(tmp_path, monkeypatch, no_hang):
    monkeypatch.setenv("LAYEREDIT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))  # no backend runs
    gate = tmp_path / "gate"
    slow_python = tmp_path / "python"  # answers only once the test opens the gate
    slow_python.write_text(
        f"#!/bin/sh\nwhile [ ! -f '{gate}' ]; do sleep 0.05; done\n"
        'echo \'{"sd15-inpaint": false, "erase": true}\'\n'
    )
    slow_python.chmod(0o755)
    project = tmp_path / "le"
    project.mkdir()
    _config(tmp_path, project, slow_python)
    probe = plugin.PresetProbe.start(tmp_path, ERASE_SCHEMA)  # returns while the venv is still thinking
    assert probe.proc is not None and not probe.poll()
    assert probe.fields == ["fill"] and probe.hints() == {}  # the dialog shows now, the hint comes later
    gate.write_text("")
    probe.wait(60)
    assert probe.presets == {"sd15-inpaint": False, "erase": True}
    assert probe.hints() == {
        "fill": "Better fill quality needs a model (diffusion); none is installed. "
        f"Install one with: python3 {project}/install.py --models sd15-inpaint"
    }
    quiet = plugin.PresetProbe.start(tmp_path, INVERT_SPEC.to_json())  # no field needs a model: no probe
    assert quiet.poll() and quiet.proc is None and quiet.hints() == {}


def test_preset_probe_prefers_a_running_backend_and_the_real_venv_answers(tmp_path, monkeypatch, no_hang):
    from backend.server import Server, ServerConfig

    monkeypatch.setenv("LAYEREDIT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("LAYEREDIT_MODELS", str(tmp_path / "models"))
    import huggingface_hub.constants  # an empty HF cache: models cached on this machine change nothing here

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    (tmp_path / "models" / "sd15-inpaint").mkdir(parents=True)
    _config(tmp_path, ROOT, ROOT / ".venv" / "bin" / "python")
    srv = Server(ServerConfig(report_models=True), registry=Registry({"erase": InvertOp})).start()
    try:
        from protocol.client import Client

        first = Client.connect()
        first.hello(timeout=120)  # the backend's model report is ready (it is built once, after start)
        first.close()
        probe = plugin.PresetProbe.start(tmp_path, ERASE_SCHEMA, ask_venv=False)
        assert probe.poll() and probe.proc is None  # answered by the backend's hello
        assert probe.presets["sd15-inpaint"] is True and probe.hints() == {}
    finally:
        srv.stop()
    probe = plugin.PresetProbe.start(tmp_path, ERASE_SCHEMA)  # no backend now: the project's venv answers
    probe.wait(120)
    assert probe.presets is not None and probe.presets["sd15-inpaint"] is True
    assert probe.hints() == {}

"""The job logic both hosts share (protocol/hostkit): the buffers a job sends, the result's buffers checked
against what was sent, the result layers' names, the unknown-op error and the schema's ``needs_selection``;
first on their own, then through the Krita controller and the GIMP plug-in (fake hosts) against one real
in-process server whose stand-in ops misbehave on purpose."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import fake_krita

fake_krita.install()

from backend.ops import Op, OpResult, OpSpec, ParamSpec, Registry  # noqa: E402
from backend.server import Server, ServerConfig  # noqa: E402
from krita_plugin.layeredit import kritaio  # noqa: E402
from krita_plugin.layeredit.controller import Controller  # noqa: E402
from protocol.client import Client  # noqa: E402
from protocol.errors import ErrorCode, ProtocolError  # noqa: E402
from protocol.hostkit import (  # noqa: E402
    Form,
    JobState,
    Rect,
    job_buffers,
    mode_by_label,
    op_form,
    packed,
    plan_region,
    result_image,
    result_mask,
    result_names,
    selection_to_send,
)
from protocol.wire import Buffer  # noqa: E402
from tests.hosts.gimp import fake_gimp  # noqa: E402
from tests.test_krita_plugin import layer_doc, select, wait_for  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gimp_plugin" / "layeredit"))
from layeredit_gimp import gimpio, pdbargs, plugin  # noqa: E402

ERASE, REPLACE, IMAGIC, SNAP = (mode_by_label(n) for n in ("Erase", "Replace", "Imagic", "Select object"))
REGION = Rect(5, 7, 4, 3)


# -- on their own --------------------------------------------------------------------------------------


def test_job_buffers_place_image_and_selection_at_the_region_in_the_hosts_format():
    image, sel = job_buffers(REGION, bytes(4 * 3 * 4), "u8", "BGRA", bytes(4 * 3))
    assert (image.width, image.height, image.channels, image.dtype, image.order) == (4, 3, 4, "u8", "BGRA")
    assert (image.x, image.y, image.role, sel.x, sel.y, sel.role) == (5, 7, "image", 5, 7, "selection")
    assert (sel.channels, sel.dtype, sel.order) == (1, "u8", "gray")
    image, sel = job_buffers(REGION, bytes(4 * 3 * 16), "f32", "RGBA", bytes(4 * 3 * 4), mask_sample="f32")
    assert (image.stride, sel.dtype, sel.stride) == (64, "f32", 16)  # GIMP's float selection
    assert job_buffers(REGION, bytes(4 * 3 * 4), "u8", "RGBA")[1] is None
    with pytest.raises(ProtocolError) as err:  # a host that read the wrong number of bytes
        job_buffers(REGION, bytes(5), "u8", "RGBA")
    assert err.value.code == ErrorCode.BAD_BUFFER


def test_packed_drops_stride_padding():
    rows = [bytes([y] * 8) + b"pad!" for y in range(3)]
    buf = Buffer(b"".join(rows), 2, 3, 4, "u8", "RGBA", stride=12)
    assert packed(buf) == b"".join(bytes([y] * 8) for y in range(3))
    tight = Buffer(bytes(range(24)), 2, 3, 4, "u8", "RGBA")
    assert packed(tight) == bytes(range(24))


def test_result_image_must_cover_the_region_in_the_format_sent():
    good = Buffer(bytes(range(48)), 4, 3, 4, "u8", "BGRA")
    assert result_image(good, REGION, "u8", "BGRA") == bytes(range(48))
    wrong = [
        None,
        Buffer(bytes(36), 3, 3, 4, "u8", "BGRA"),  # cropped
        Buffer(bytes(48), 4, 3, 4, "u8", "RGBA"),  # another channel order
        Buffer(bytes(96), 4, 3, 4, "u16", "BGRA"),  # another sample type
    ]
    for buf in wrong:
        with pytest.raises(ProtocolError) as err:
            result_image(buf, REGION, "u8", "BGRA")
        assert err.value.code == ErrorCode.BAD_BUFFER
        assert "nothing changed" in err.value.message and "install.py" in err.value.message


def test_result_mask_must_be_8_bit_gray_over_the_region():
    assert result_mask(Buffer(bytes(12), 4, 3, 1, "u8", "gray"), REGION) == bytes(12)
    for buf in (None, Buffer(bytes(9), 3, 3, 1, "u8", "gray"), Buffer(bytes(48), 4, 3, 1, "f32", "gray")):
        with pytest.raises(ProtocolError) as err:
            result_mask(buf, REGION)
        assert err.value.code == ErrorCode.BAD_BUFFER and "selection is unchanged" in err.value.message


def test_result_names_follow_the_etas_the_backend_rendered():
    params = {"prompt": "a dog", "eta": [0.9, 0.6]}
    # the backend's meta says which eta each image has (here it rendered them in another order)
    assert result_names(IMAGIC, params, {"etas": [0.6, 0.9]}, 2, []) == [
        "Imagic η0.6: a dog",
        "Imagic η0.9: a dog",
    ]
    # no meta: the requested etas, when there is one per image
    assert result_names(IMAGIC, params, {}, 2, []) == ["Imagic η0.9: a dog", "Imagic η0.6: a dog"]
    # neither fits the images: every image still gets a layer, numbered
    assert result_names(IMAGIC, params, {"etas": [0.5]}, 3, ["Imagic η0.9: a dog"]) == [
        "Imagic η0.9: a dog (2)",
        "Imagic η0.9: a dog (3)",
        "Imagic η0.9: a dog (4)",
    ]
    assert result_names(ERASE, {}, {}, 1, ["Erase", "Erase (2)"]) == ["Erase (3)"]


def test_op_form_or_unknown_op_saying_what_the_backend_offers():
    forms = {"snap": Form("snap", "", []), "erase": Form("erase", "", [])}
    assert op_form(forms, "erase") is forms["erase"]
    with pytest.raises(ProtocolError) as err:
        op_form(forms, "replace")
    assert err.value.code == ErrorCode.UNKNOWN_OP
    assert err.value.message == (
        "This backend has no 'replace' op (it offers: erase, snap); update it with: python3 install.py"
    )


def test_the_schemas_needs_selection_decides_over_the_built_in_flag():
    layer, canvas = Rect(0, 0, 40, 30), Rect(0, 0, 40, 30)
    says = Form.from_op_json({"name": "imagic", "needs_selection": True, "params": []}).needs_selection
    with pytest.raises(ProtocolError) as err:
        plan_region(IMAGIC.with_schema(says), layer, canvas, None)
    assert err.value.code == ErrorCode.NO_SELECTION
    says = Form.from_op_json({"name": "replace", "needs_selection": False, "params": []}).needs_selection
    assert plan_region(REPLACE.with_schema(says), layer, canvas, None).region == layer
    silent = Form.from_op_json({"name": "replace", "params": []}).needs_selection  # an older backend
    assert silent is None and REPLACE.with_schema(silent) is REPLACE


# -- through both hosts ----------------------------------------------------------------------------------


class Cropped(Op):
    """An erase whose image comes back one column short (a broken backend)."""

    spec = OpSpec("erase", "stand-in: wrong-sized image", (), needs_selection=True)

    def run(self, inputs, params, ctx):
        return OpResult(inputs.image[:, 1:].copy(), mask=(inputs.selection > 0.5).astype(np.uint8) * 255)


class ShortMask(Op):
    """A snap whose mask comes back one row short."""

    spec = OpSpec("snap", "stand-in: wrong-sized mask", (), needs_selection=True)

    def run(self, inputs, params, ctx):
        return OpResult(None, mask=(inputs.selection[1:] > 0.5).astype(np.uint8) * 255)


class SortedEtas(Op):
    """Imagic: one image per eta, rendered in ascending eta order, which ``meta["etas"]`` says."""

    spec = OpSpec(
        "imagic",
        "stand-in",
        (ParamSpec("prompt", "str", "", "p"), ParamSpec("eta", "float_list", [0.7], "e", min=0.0, max=1.5)),
    )

    def run(self, inputs, params, ctx):
        etas = sorted(params["eta"])
        outs = [inputs.image.copy() for _ in etas]
        return OpResult(outs[0], extra_images=outs[1:], meta={"etas": etas})


class WholeLayerReplace(Op):
    """A replace whose schema does not need a selection (the built-in Replace mode does)."""

    spec = OpSpec("replace", "stand-in", (ParamSpec("prompt", "str", "", "p"),), needs_selection=False)

    def run(self, inputs, params, ctx):
        return OpResult(inputs.image.copy())


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    ops = {"erase": Cropped, "snap": ShortMask, "imagic": SortedEtas, "replace": WholeLayerReplace}
    srv = Server(
        ServerConfig(connection_file=tmp_path / "backend.json", report_models=False), Registry(ops), None
    ).start()
    yield srv
    srv.stop()


def krita_run(app, server, mode: str, params: dict, *, selection: bool = True, **kw):
    c = Controller(app, lambda: Client.connect(server.connection_file, check=False), project_root=None)
    assert c.connect()
    wait_for(lambda: c.connected, c)
    doc, node = layer_doc(app)
    if selection:
        select(doc, 10, 8, 6, 4)
    before = (node.pixelData(0, 0, 40, 30), doc.selection())
    ok = c.run(doc, node, mode, params, **kw)
    if ok:
        wait_for(lambda: not c.job.busy, c)
    return c, doc, node, before


def gimp_run(server, plugin_dir: Path, mode, config: dict, *, selection: bool = True):
    gimp, gegl = fake_gimp.make_modules()
    image = fake_gimp.Image(40, 30)
    src = fake_gimp.Layer(image, "src", 40, 30, image.pixel_babl)
    src.buffer.data[:] = bytes((i * 7 + 3) % 251 for i in range(len(src.buffer.data)))
    image.layers.append(src)
    if selection:
        image.select_rectangle("REPLACE", 10, 8, 6, 4)
    registered = set(config) | {pdbargs.EXTRA}
    cfg = fake_gimp.Config(**config, **{pdbargs.EXTRA: ""})

    def connect_here(_plugin_dir, on_status):  # the test server, not a started backend
        return Client.connect(server.connection_file)

    try:
        out = plugin.run_job(gimp, gegl, image, src, mode, cfg, registered, plugin_dir, connect=connect_here)
        return out, image, None
    except ProtocolError as exc:
        return None, image, exc


@pytest.fixture
def app():
    fake_krita.Krita._instance = None
    return fake_krita.Krita.instance()


def test_a_wrong_sized_image_changes_nothing_in_either_host_with_the_same_words(app, server, tmp_path):
    c, doc, node, before = krita_run(app, server, "Erase", {})
    assert c.job.state == JobState.FAILED and c.job.error_code == ErrorCode.BAD_BUFFER.value
    assert [n.name() for n in doc.topLevelNodes()] == ["source"] and node.writes == 0
    _out, image, err = gimp_run(server, tmp_path, ERASE, {})
    assert err is not None and err.code == ErrorCode.BAD_BUFFER
    assert [layer.name for layer in image.layers] == ["src"] and image.undo_groups == 0
    assert c.job.message.replace("BGRA", "RGBA") == err.message  # Krita sends its own BGRA
    assert "nothing changed" in err.message


def test_a_wrong_sized_mask_leaves_the_selection_in_either_host_with_the_same_words(app, server, tmp_path):
    c, doc, _node, (_pixels, selection) = krita_run(app, server, "Select object", {})
    assert c.job.state == JobState.FAILED and c.job.error_code == ErrorCode.BAD_BUFFER.value
    assert doc.selection() is selection
    _out, image, err = gimp_run(server, tmp_path, SNAP, {})
    assert err is not None and err.code == ErrorCode.BAD_BUFFER
    assert image.selection_bounds == (10, 8, 16, 12) and image.undo_groups == 0
    assert c.job.message == err.message and "selection is unchanged" in err.message


def test_both_hosts_name_imagic_layers_after_the_etas_the_backend_rendered(app, server, tmp_path):
    params = {"prompt": "a dog", "eta": [0.9, 0.6]}
    c, doc, _node, _before = krita_run(app, server, "Imagic", params, selection=False)
    assert c.job.state == JobState.DONE, c.job.status_text
    krita_names = [n.name() for n in doc.topLevelNodes()][:0:-1]  # top first, down to the source
    out, image, err = gimp_run(
        server, tmp_path, IMAGIC, {"prompt": "a dog", "eta": "0.9, 0.6"}, selection=False
    )
    assert err is None, err
    gimp_names = [layer.name for layer in out.layers]
    assert krita_names == gimp_names == ["Imagic η0.6: a dog", "Imagic η0.9: a dog"]


def test_both_hosts_take_needs_selection_from_the_schema(app, server, tmp_path):
    """The backend's replace needs no selection: Krita knows it from hello; GIMP, reading the layer before it
    connects, from the installer's schema snapshot (without one it falls back to the built-in flag)."""
    c, doc, _node, _before = krita_run(app, server, "Replace", {"prompt": "x"}, selection=False)
    assert c.job.state == JobState.DONE, c.job.status_text
    assert c.last.sent["region"] == (0, 0, 40, 30)
    _out, image, err = gimp_run(server, tmp_path, REPLACE, {"prompt": "x"}, selection=False)
    assert err is not None and err.code == ErrorCode.NO_SELECTION and image.layers[0].name == "src"
    snapshot = [WholeLayerReplace.spec.to_json()]
    (tmp_path / plugin.SCHEMAS_NAME).write_text(json.dumps(snapshot), "utf-8")
    out, image, err = gimp_run(server, tmp_path, REPLACE, {"prompt": "x"}, selection=False)
    assert err is None, err
    assert out.layer.name == "Replace: x" and (out.layer.width, out.layer.height) == (40, 30)


def test_selection_to_send_drops_or_refuses_an_all_zero_selection():
    assert selection_to_send(ERASE, bytes([0, 3, 0])) == bytes([0, 3, 0])
    assert selection_to_send(ERASE, None) is None and selection_to_send(IMAGIC, None) is None
    with pytest.raises(ProtocolError) as err:
        selection_to_send(ERASE, bytes(16))  # e.g. a float selection's zeros
    assert err.value.code == ErrorCode.NO_SELECTION and "empty on this layer" in err.value.message
    # Imagic can run without a selection, but not on a region cropped to a selection that selects nothing
    with pytest.raises(ProtocolError) as err:
        selection_to_send(IMAGIC, bytes(8))
    assert (
        err.value.code == ErrorCode.NO_SELECTION and "deselect to edit the whole layer" in err.value.message
    )


def test_both_hosts_refuse_a_selection_whose_pixels_miss_the_layer_before_sending(app):
    """Two blobs left and right of a narrow layer: the selection's bounds cross the layer, its pixels do not.
    Erase and Imagic both say so at once (nothing is sent): Imagic would otherwise edit an unmasked patch."""
    doc, node = layer_doc(app, layer_rect=(10, 0, 20, 30))
    select(doc, 0, 5, 4, 4)
    doc.selection().select(36, 5, 4, 4, 255)
    with pytest.raises(ProtocolError) as krita_err:
        kritaio.read_source(doc, node, ERASE)
    with pytest.raises(ProtocolError) as krita_imagic:
        kritaio.read_source(doc, node, IMAGIC)
    gimp, gegl = fake_gimp.make_modules()
    image = fake_gimp.Image(40, 30)
    src = fake_gimp.Layer(image, "src", 20, 30, image.pixel_babl)
    src.set_offsets(10, 0)
    image.layers.append(src)
    image.select_rectangle("REPLACE", 0, 5, 40, 4)
    image.selection.buffer.data[:] = bytes(len(image.selection.buffer.data))
    for x in (0, 36):
        image.selection.buffer.set(gegl.Rectangle.new(x, 5, 4, 4), image.mask_babl, b"\xff" * 16)
    with pytest.raises(ProtocolError) as gimp_err:
        gimpio.read_source(gimp, gegl, image, src, ERASE)
    with pytest.raises(ProtocolError) as gimp_imagic:
        gimpio.read_source(gimp, gegl, image, src, IMAGIC)
    assert krita_imagic.value.code == gimp_imagic.value.code == ErrorCode.NO_SELECTION
    assert krita_err.value.code == gimp_err.value.code == ErrorCode.NO_SELECTION
    assert krita_err.value.message == gimp_err.value.message

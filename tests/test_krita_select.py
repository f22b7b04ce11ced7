"""The Krita controller's Select object, install hints and install commands, against a fake ``krita`` module
and a real in-process backend server running stand-in ops (no models)."""

from __future__ import annotations

import numpy as np
import pytest

from tests import fake_krita

fake_krita.install()

from backend.ops import Op, OpError, OpResult, OpSpec, ParamSpec, Registry  # noqa: E402
from backend.ops.snap import SnapOp  # noqa: E402
from backend.server import Server, ServerConfig  # noqa: E402
from krita_plugin.layeredit.controller import Controller  # noqa: E402
from protocol.client import Client  # noqa: E402
from protocol.errors import ErrorCode  # noqa: E402
from protocol.hostkit import BackendChoice, JobState, mode_by_label, save_choice  # noqa: E402
from tests.test_krita_plugin import layer_doc, pixels, select, wait_for  # noqa: E402


class SnapStandIn(Op):
    """The real snap schema; the "object" is the selection without its odd rows, so the test can tell the
    snapped mask from the rough selection."""

    spec = SnapOp.spec

    def run(self, inputs, params, ctx):
        ctx.progress("snap", 1, 1)
        mask = (inputs.selection > 0.5).astype(np.uint8) * 255
        mask[1::2] = 0
        return OpResult(None, mask=mask, meta={"method": params["method"]})


class NeedsAModel(Op):
    """An erase whose fill choice needs a preset, and which fails like a missing model does."""

    spec = OpSpec(
        "erase",
        "stand-in",
        (
            ParamSpec(
                "fill",
                "enum",
                "auto",
                "fill",
                choices=("auto", "telea", "diffusion"),
                needs=(("diffusion", "sd15-inpaint"),),
            ),
        ),
        needs_selection=True,
    )

    def run(self, inputs, params, ctx):
        raise OpError(
            ErrorCode.MODEL_MISSING,
            "The inpaint model is not installed. Install it with: python3 install.py --models sd15-inpaint",
        )


def _no_hf_cache(tmp_path, monkeypatch) -> None:
    """An empty Hugging Face cache: models cached on this machine must not change what "installed" means."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def _server(tmp_path, monkeypatch, report_models: bool = False):
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("LAYEREDIT_MODELS", str(tmp_path / "no-models"))
    _no_hf_cache(tmp_path, monkeypatch)
    conn = tmp_path / "backend.json"
    registry = Registry({"snap": SnapStandIn, "erase": NeedsAModel})
    srv = Server(ServerConfig(connection_file=conn, report_models=report_models), registry, None).start()
    first = Client.connect(conn)
    first.hello(timeout=120)  # the server answers hellos once its model report is built (torch imports first)
    first.close()
    return srv


@pytest.fixture
def app():
    fake_krita.Krita._instance = None
    return fake_krita.Krita.instance()


def _controller(app, srv, tmp_path, **kw) -> Controller:
    c = Controller(
        app, lambda: Client.connect(srv.connection_file, check=False), config_dir=tmp_path / "config", **kw
    )
    assert c.connect()
    wait_for(lambda: c.connected, c, 60)
    return c


def test_select_object_replaces_the_selection_and_adds_no_layer(app, tmp_path, monkeypatch):
    srv = _server(tmp_path, monkeypatch)
    try:
        c = _controller(app, srv, tmp_path)
        doc, node = layer_doc(app)
        before = pixels(node, doc, "U8").copy()
        select(doc, 10, 8, 6, 4)
        mode = mode_by_label("Select object")
        defaults = c.form_defaults(mode)  # what the Tools > Scripts action sends
        assert defaults == {"method": "auto", "margin": 24}
        assert c.form_defaults(mode_by_label("Replace")) == {}  # an op this backend does not offer
        assert c.run(doc, node, mode.label, c.forms["snap"].params(method="none"))
        wait_for(lambda: not c.job.busy, c)
    finally:
        srv.stop()
    assert c.job.state == JobState.DONE and "selected" in c.job.message, c.job.status_text
    assert c.last.layer is None and c.last.meta == {"method": "none"}
    assert [n.name() for n in doc.topLevelNodes()] == ["source"]  # no new layer
    assert node.writes == 0 and np.array_equal(pixels(node, doc, "U8"), before)  # no pixel changed
    sel = np.frombuffer(doc.selection().pixelData(0, 0, 40, 30), np.uint8).reshape(30, 40)
    region_y = c.last.sent["region"][1]
    expected = np.zeros((30, 40), bool)
    expected[8:12, 10:16] = True
    expected[(np.arange(30) - region_y) % 2 == 1] = False  # the stand-in's "object": even region rows
    assert np.array_equal(sel > 0, expected)


def test_select_object_without_a_selection_says_what_to_do(app, tmp_path, monkeypatch):
    srv = _server(tmp_path, monkeypatch)
    try:
        c = _controller(app, srv, tmp_path)
        doc, node = layer_doc(app)
        assert not c.run(doc, node, "Select object", {})
    finally:
        srv.stop()
    assert c.job.error_code == ErrorCode.NO_SELECTION.value and "object you want to select" in c.job.message
    assert [n.name() for n in doc.topLevelNodes()] == ["source"] and doc.selection() is None


def test_errors_name_the_projects_install_py_and_hints_say_what_to_install(app, tmp_path, monkeypatch):
    srv = _server(tmp_path, monkeypatch, report_models=True)
    root = tmp_path / "le"
    try:
        c = _controller(app, srv, tmp_path, project_root=root)
        erase = mode_by_label("Erase")
        assert c.hints(erase) == {
            "fill": "Better fill quality needs a model (diffusion); none is installed. "
            f"Install one with: python3 {root}/install.py --models sd15-inpaint"
        }
        assert c.hints(mode_by_label("Select object")) == {}
        doc, node = layer_doc(app)
        select(doc, 10, 8, 6, 4)
        assert c.run(doc, node, "Erase", {"fill": "diffusion"})
        wait_for(lambda: not c.job.busy, c)
        assert c.job.error_code == ErrorCode.MODEL_MISSING.value
        assert c.job.message.endswith(f"Install it with: python3 {root}/install.py --models sd15-inpaint")
        # a remote backend's install commands are about the other machine: left as they are
        remote = tmp_path / "remote.json"
        remote.write_text("{}")
        save_choice(BackendChoice(str(remote), "gpu-box"), tmp_path / "config")
        c.choice = BackendChoice(str(remote), "gpu-box")
        assert c.user_text("python3 install.py --models sam") == "python3 install.py --models sam"
        assert c.hints(erase)["fill"].endswith("Install one with: python3 install.py --models sd15-inpaint")
    finally:
        srv.stop()
    assert [n.name() for n in doc.topLevelNodes()] == ["source"]

"""The Krita docker's eta-slider preview (issue 15): a draft while dragging, never a layer; full render on release.

Against a fake ``krita`` module and a real in-process backend whose ``imagic`` test op has the ``preview``
parameter and marks what it was asked in the result's meta.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests import fake_krita

fake_krita.install()

from backend.ops import OpResult, OpSpec, ParamSpec, Registry  # noqa: E402
from backend.ops.base import Op  # noqa: E402
from backend.server import Server, ServerConfig  # noqa: E402
from protocol.hostkit import JobState  # noqa: E402
from tests.test_krita_plugin import layer_doc, make_controller, wait_for  # noqa: E402


class Imagic(Op):
    """Returns the image at once; the meta says whether it was a preview."""

    spec = OpSpec(
        "imagic",
        "test imagic with preview",
        (
            ParamSpec("prompt", "str", "", "text"),
            ParamSpec("eta", "float_list", [0.7], "eta", min=0.0, max=1.5),
            ParamSpec("preview", "bool", False, "draft"),
        ),
    )

    def run(self, inputs, params, ctx):
        img = inputs.image.copy()
        img[..., 0] = int(params["preview"]) * 255
        return OpResult(img, meta={"preview": params["preview"], "eta": params["eta"]})


@pytest.fixture
def app():
    fake_krita.Krita._instance = None
    return fake_krita.Krita.instance()


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    srv = Server(
        ServerConfig(connection_file=tmp_path / "backend.json", report_models=False),
        Registry({"imagic": Imagic}),
        models_factory=None,
    ).start()
    yield srv
    srv.stop()


def test_dragging_eta_previews_without_a_layer_and_release_renders(app, server):
    shown = []
    c = make_controller(app, server)
    c.on_preview = shown.append
    doc, node = layer_doc(app)
    form = c.forms["imagic"]
    assert not c.preview_eta(form.params(prompt="a dog", eta=0.8))  # nothing tuned yet: no draft
    first = form.params(prompt="a dog", eta=0.7)
    assert c.run(doc, node, "Imagic", first)
    wait_for(lambda: not c.job.busy, c)
    layers = [n.name() for n in doc.topLevelNodes()]
    assert c.preview_eta(form.params(prompt="a dog", eta=0.8))
    wait_for(lambda: not c.job.busy, c)
    assert c.job.state == JobState.DONE and c.last.meta["preview"] is True
    assert [n.name() for n in doc.topLevelNodes()] == layers  # a draft never becomes a layer
    assert len(shown) == 1 and shown[0].width == 40
    assert np.asarray(shown[0].data).size > 0
    release = form.params(prompt="a dog", eta=0.8)
    assert c.eta_only_change(release)  # the draft did not count as the render at 0.8
    assert c.rerun_eta(release)
    wait_for(lambda: not c.job.busy, c)
    assert c.last.meta["preview"] is False and c.last.meta["eta"] == [0.8]
    assert len(doc.topLevelNodes()) == len(layers) + 1
    assert not c.eta_only_change(release)  # rendered: the same eta again is not a change


def test_no_preview_against_a_backend_without_it(app, tmp_path, monkeypatch):
    from tests.hosts.krita.testops import GATE, registry

    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    GATE.set()
    srv = Server(
        ServerConfig(connection_file=tmp_path / "b.json", report_models=False),
        registry(),
        models_factory=None,
    ).start()
    try:
        c = make_controller(app, srv)
        doc, node = layer_doc(app)
        assert c.run(doc, node, "Imagic", c.forms["imagic"].params(prompt="a dog", eta=0.7))
        wait_for(lambda: not c.job.busy, c)
        assert not c.preview_eta(c.forms["imagic"].params(prompt="a dog", eta=0.9))
    finally:
        srv.stop()

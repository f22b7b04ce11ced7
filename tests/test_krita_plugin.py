"""The Krita plugin's I/O and controller against a fake ``krita`` module and a real in-process backend server.

The server runs test ops (not models): ``erase`` paints the selected pixels pure red in RGBA and returns the
selection as the mask, so the tests see the channel order survive the round trip (Krita's U8 is BGRA), the
result land as a new layer above the source, the source stay untouched, and the errors users meet.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests import fake_krita

fake_krita.install()

from backend.server import Server, ServerConfig  # noqa: E402
from krita_plugin.layeredit import kritaio  # noqa: E402
from krita_plugin.layeredit.controller import Controller  # noqa: E402
from protocol import shm  # noqa: E402
from protocol.client import Client  # noqa: E402
from protocol.errors import ErrorCode, ProtocolError  # noqa: E402
from protocol.hostkit import JobState, Rect, mode_by_label, plan_region, result_names  # noqa: E402
from tests.hosts.krita import testops  # noqa: E402
from tests.hosts.krita.testops import GATE, registry  # noqa: E402


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    GATE.clear()
    srv = Server(
        ServerConfig(connection_file=tmp_path / "backend.json", report_models=False),
        registry(),
        models_factory=None,
    ).start()
    yield srv
    GATE.set()
    srv.stop()


@pytest.fixture
def app():
    fake_krita.Krita._instance = None
    return fake_krita.Krita.instance()


def make_controller(app, server) -> Controller:
    c = Controller(app, lambda: Client.connect(server.connection_file, check=False))
    assert c.connect()
    wait_for(lambda: c.connected, c)
    return c


def wait_for(cond, c: Controller, limit: float = 15.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < end, f"gave up waiting; job: {c.job.status_text}; conn: {c.connection_text}"
        c.poll()
        time.sleep(0.01)


def layer_doc(app, depth="U8", w=40, h=30, layer_rect=(0, 0, 40, 30)):
    doc = app.createDocument(w, h, "t", "RGBA", depth)
    node = doc.createNode("source", "paintlayer")
    doc.rootNode().addChildNode(node, None)
    bpp = fake_krita.BPP[("RGBA", depth)]
    x, y, lw, lh = layer_rect
    rng = np.random.default_rng(0)
    if depth in ("U8", "U16"):
        dt = np.uint8 if depth == "U8" else np.dtype("<u2")
        px = rng.integers(1, 200, (lh, lw, 4)).astype(dt)
    else:
        px = rng.uniform(0.1, 0.9, (lh, lw, 4)).astype("<f2" if depth == "F16" else "<f4")
    assert px.nbytes == lw * lh * bpp
    node.setPixelData(px.tobytes(), x, y, lw, lh)
    node.writes = 0
    doc.setActiveNode(node)
    app.setActiveDocument(doc)
    return doc, node


def select(doc, x, y, w, h):
    sel = fake_krita.Selection()
    sel.select(x, y, w, h, 255)
    doc.setSelection(sel)


def pixels(node, doc, depth):
    dt = {"U8": np.uint8, "U16": "<u2", "F16": "<f2", "F32": "<f4"}[depth]
    return np.frombuffer(node.pixelData(0, 0, doc.w, doc.h), dt).reshape(doc.h, doc.w, 4)


# -- document I/O ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "depth", "sample", "order", "bpp"),
    [
        ("RGBA", "U8", "u8", "BGRA", 4),
        ("RGBA", "U16", "u16", "BGRA", 8),
        ("RGBA", "F16", "f16", "RGBA", 8),
        ("RGBA", "F32", "f32", "RGBA", 16),
    ],
)
def test_krita_layouts_match_krita_bytes_per_pixel(model, depth, sample, order, bpp):
    layout = kritaio.krita_layout(model, depth)
    assert (layout.sample, layout.order, layout.bytes_per_pixel) == (sample, order, bpp)
    assert layout.nbytes(3, 2) == 6 * bpp


@pytest.mark.parametrize(
    ("model", "depth"), [("CMYKA", "U8"), ("LABA", "U16"), ("GRAYA", "U8"), ("RGBA", "F64")]
)
def test_unsupported_colour_spaces_say_how_to_convert(model, depth):
    with pytest.raises(ProtocolError) as err:
        kritaio.krita_layout(model, depth)
    assert err.value.code == ErrorCode.UNSUPPORTED_FORMAT
    assert "Convert" in err.value.message


def test_read_source_sends_krita_layout_region_and_aligned_selection(app):
    doc, node = layer_doc(app)
    select(doc, 10, 8, 6, 4)
    src = kritaio.read_source(doc, node, mode_by_label("Erase"))
    assert src.plan.region == Rect(0, 0, 40, 30)  # context clipped to the layer
    buf, sel_buf = src.buffers()
    assert (buf.dtype, buf.order, buf.channels, buf.x, buf.y) == ("u8", "BGRA", 4, 0, 0)
    assert (sel_buf.dtype, sel_buf.order, sel_buf.role, bytes(sel_buf.data)) == (
        "u8",
        "gray",
        "selection",
        src.selection,
    )
    sel = np.frombuffer(src.selection, np.uint8).reshape(30, 40)
    assert sel[8:12, 10:16].all() and sel.sum() == 24 * 255


def test_read_source_float_depth_is_rgba_and_offset_layer_is_clipped_to_canvas(app):
    doc, node = layer_doc(app, "F32", layer_rect=(-5, 3, 30, 20))
    src = kritaio.read_source(doc, node, mode_by_label("Imagic"))
    assert src.plan.region == Rect(0, 3, 25, 20) and src.selection is None
    buf, sel_buf = src.buffers()
    assert (buf.dtype, buf.order, buf.x, buf.y, buf.stride) == ("f32", "RGBA", 0, 3, 25 * 16)
    assert sel_buf is None


def test_read_source_errors_say_what_to_do(app):
    doc, node = layer_doc(app)
    with pytest.raises(ProtocolError) as err:
        kritaio.read_source(doc, node, mode_by_label("Erase"))
    assert err.value.code == ErrorCode.NO_SELECTION and "select" in err.value.message
    group = doc.createNode("g", "grouplayer")
    with pytest.raises(ProtocolError) as err:
        kritaio.read_source(doc, group, mode_by_label("Imagic"))
    assert err.value.code == ErrorCode.MISSING_INPUT and "Visible image" in err.value.message
    with pytest.raises(ProtocolError) as err:
        kritaio.read_source(None, None, mode_by_label("Imagic"))
    assert err.value.code == ErrorCode.MISSING_INPUT


def test_visible_image_reads_the_projection(app):
    doc, node = layer_doc(app, layer_rect=(5, 5, 10, 10))
    src = kritaio.read_source(doc, node, mode_by_label("Imagic"), kritaio.SOURCE_VISIBLE)
    assert src.plan.region == Rect(0, 0, 40, 30)
    img = np.frombuffer(src.image, np.uint8).reshape(30, 40, 4)
    assert not img[:5].any() and img[5:15, 5:15].all()


def test_result_layer_goes_above_source_with_unique_name(app):
    doc, node = layer_doc(app)
    top = doc.createNode("top", "paintlayer")
    doc.rootNode().addChildNode(top, node)
    data = bytes([9, 9, 9, 255]) * 4
    a = kritaio.add_result_layer(doc, node, "Erase", data, Rect(1, 1, 2, 2))
    (name,) = result_names(mode_by_label("Erase"), {}, {}, 1, kritaio.layer_names(doc))
    b = kritaio.add_result_layer(doc, node, name, data, Rect(1, 1, 2, 2))
    assert [n.name() for n in doc.topLevelNodes()] == ["source", "Erase (2)", "Erase", "top"]
    assert a.pixelData(1, 1, 1, 1) == bytes([9, 9, 9, 255]) and b.bounds() == fake_krita.QRect(1, 1, 2, 2)
    assert node.writes == 0


# -- controller against a real server ----------------------------------------------------------------


@pytest.mark.parametrize("depth", ["U8", "U16", "F16", "F32"])
def test_erase_job_makes_new_layer_changed_inside_identical_outside(app, server, depth):
    c = make_controller(app, server)
    assert set(c.forms) == {"erase", "imagic", "snap"}
    assert [f.name for f in c.forms["erase"].basic] == ["grow"]
    assert [f.name for f in c.forms["erase"].advanced] == ["seed"]
    doc, node = layer_doc(app, depth)
    before = pixels(node, doc, depth).copy()
    select(doc, 10, 8, 6, 4)
    previews = []
    c.on_preview = previews.append
    assert c.run(doc, node, "Erase", c.forms["erase"].params(), set_selection=True)
    wait_for(lambda: not c.job.busy, c)
    assert c.job.state == JobState.DONE, c.job.status_text
    layer = c.last.layer
    assert [n.name() for n in doc.topLevelNodes()] == ["source", "Erase"]
    out = pixels(layer, doc, depth)
    inside = np.zeros((30, 40), bool)
    inside[8:12, 10:16] = True
    red = {"U8": [0, 0, 255, 255], "U16": [0, 0, 65535, 65535]}.get(depth, [1.0, 0.0, 0.0, 1.0])
    assert (out[inside] == np.array(red, out.dtype)).all()  # BGRA for integer depths, RGBA for floats
    assert np.array_equal(out[~inside], before[~inside])
    assert np.array_equal(pixels(node, doc, depth), before) and node.writes == 0
    # "select the snapped object": the object mask (the test op's even rows of the region), not the region
    sel = np.frombuffer(doc.selection().pixelData(0, 0, 40, 30), np.uint8).reshape(30, 40)
    region_y = c.last.sent["region"][1]
    obj = inside & ((np.arange(30)[:, None] - region_y) % 2 == 0)
    assert np.array_equal(sel > 0, obj) and obj.any() and not np.array_equal(obj, inside)
    assert set(c.last.masks) == {"region", "object"}
    assert previews and previews[0].width == 8


@pytest.mark.skipif(not shm.available(), reason="no usable /dev/shm here")
def test_a_controller_connected_through_poll_sends_big_layers_through_shared_memory(app, server, monkeypatch):
    """Krita's controller never blocks on hello: it reads ``capabilities`` as an event. It must still take the
    shared-memory path the backend offers (SPEC.md 8), as a blocking ``hello()`` does, or every layer and
    result travels inline, every byte signed (review 8: ~0.7 s more for a 4096^2 erase)."""
    c = make_controller(app, server)
    assert c.client.shm_active
    sent: list[list] = []
    send = c.client.send

    def spy(msg):
        sent.append([(b.role, b.location is not None) for b in msg.buffers])
        return send(msg)

    monkeypatch.setattr(c.client, "send", spy)
    w, h = 400, 300  # 480 000 bytes of U8 RGBA: above the inline threshold
    assert w * h * 4 >= shm.MIN_BYTES
    doc, node = layer_doc(app, "U8", w, h, (0, 0, w, h))
    before = pixels(node, doc, "U8").copy()
    select(doc, 100, 80, 60, 40)
    assert c.run(doc, node, "Erase", c.forms["erase"].params())
    wait_for(lambda: not c.job.busy, c)
    assert c.job.state == JobState.DONE, c.job.status_text
    assert ("image", True) in [b for m in sent for b in m]  # the layer went by shared memory, not as a frame
    out = pixels(c.last.layer, doc, "U8")
    inside = np.zeros((h, w), bool)
    inside[80:120, 100:160] = True
    assert (out[inside] == np.array([0, 0, 255, 255], np.uint8)).all()
    assert np.array_equal(out[~inside], before[~inside])
    assert np.array_equal(pixels(node, doc, "U8"), before)
    c.disconnect()  # our pooled segments go with the client, as when Krita closes
    assert [n for n in shm.leftovers({os.getpid()}) if n.startswith(shm.CLIENT_PREFIX)] == []


def test_eta_only_rerun_and_cancel(app, server):
    c = make_controller(app, server)
    doc, node = layer_doc(app)
    params = c.forms["imagic"].params(prompt="a dog", eta=0.7)
    assert params["eta"] == [0.7]  # a slider's single value fills the float_list
    assert c.run(doc, node, "Imagic", params)
    wait_for(lambda: c.job.stage == "tune", c)
    c.cancel()
    wait_for(lambda: not c.job.busy, c)
    assert c.job.state == JobState.CANCELLED
    assert [n.name() for n in doc.topLevelNodes()] == ["source"]
    assert c.eta_only_change({**params, "eta": [0.9]})
    assert not c.eta_only_change({**params, "prompt": "a cat", "eta": [0.9]})
    GATE.set()
    assert c.rerun_eta({**params, "eta": [0.8]})
    wait_for(lambda: not c.job.busy, c)
    assert c.last.sent["source"] == "source" and doc.activeNode() == node  # the source stays active
    assert c.run(doc, node, "Imagic", c.forms["imagic"].params(prompt="a dog", eta="0.6, 0.9"))
    wait_for(lambda: not c.job.busy, c)
    assert c.job.state == JobState.DONE
    names = [n.name() for n in doc.topLevelNodes()]
    assert names == ["source", "Imagic η0.9: a dog", "Imagic η0.6: a dog", "Imagic η0.8: a dog"]
    assert c.last.layer.name() == "Imagic η0.6: a dog"


class Timers:
    """Stands in for QTimer.singleShot: what the controller asks to run later runs when the test says."""

    def __init__(self) -> None:
        self.queued: list = []

    def later(self, ms: int, fn) -> None:
        assert ms > 0  # a wait for Krita's event, never a busy loop
        self.queued.append(fn)

    def tick(self) -> None:
        due, self.queued = self.queued, []
        for fn in due:
            fn()


def krita_activating_late(app, server):
    """A controller with a timer, and a document where Krita activates each added layer only when its posted
    event is delivered (``doc.deliver()``), as the real Krita does, after ``addChildNode`` has returned."""
    c = make_controller(app, server)
    timers = Timers()
    c.later = timers.later
    doc, node = layer_doc(app)
    doc.posted = []
    select(doc, 10, 8, 6, 4)
    return c, timers, doc, node


def finish(c: Controller) -> None:
    wait_for(lambda: not c.job.busy, c)
    assert c.job.state == JobState.DONE, c.job.status_text


def test_the_source_is_made_active_again_only_once_krita_has_activated_the_new_layer(app, server):
    c, timers, doc, node = krita_activating_late(app, server)
    assert c.run(doc, node, "Erase", c.forms["erase"].params())
    finish(c)
    result = c.last.layer
    for _ in range(3):  # Krita's activation has not arrived: restoring now would be undone by it
        timers.tick()
        assert doc.activeNode() == node and c.restoring is not None and timers.queued
    doc.deliver()  # Krita activates the new layer...
    assert doc.activeNode() == result
    timers.tick()  # ...and the next look puts the source back, then stops looking
    assert doc.activeNode() == node and c.restoring is None and not timers.queued
    assert c.run(doc, doc.activeNode(), "Erase", c.forms["erase"].params())
    finish(c)
    assert c.last.sent["source"] == "source"


def test_a_run_pressed_before_the_source_is_restored_reads_the_source(app, server):
    """The harness (and a fast click) can press Run between Krita's activation and the controller's next look:
    the layer Krita activated on its own is not the user's choice."""
    c, timers, doc, node = krita_activating_late(app, server)
    assert c.run(doc, node, "Erase", c.forms["erase"].params())
    finish(c)
    doc.deliver()
    assert doc.activeNode() == c.last.layer
    assert c.run(doc, doc.activeNode(), "Imagic", c.forms["imagic"].params(prompt="a dog"))
    assert doc.activeNode() == node and c.restoring is None
    GATE.set()  # only now: a job that ended within run()'s own poll would have set up its own restore already
    finish(c)
    assert c.last.sent["source"] == "source"


def test_a_layer_the_user_clicks_after_a_result_is_the_next_source(app, server):
    c, timers, doc, node = krita_activating_late(app, server)
    assert c.run(doc, node, "Erase", c.forms["erase"].params())
    finish(c)
    result = c.last.layer
    doc.deliver()
    timers.tick()
    assert doc.activeNode() == node and c.restoring is None
    doc.setActiveNode(result)  # the user clicks the result layer in the Layers docker
    GATE.set()
    assert c.run(doc, doc.activeNode(), "Imagic", c.forms["imagic"].params(prompt="a dog"))
    finish(c)
    assert c.last.sent["source"] == "Erase"  # their layer, not the source of the job before
    other = c.last.layer
    doc.setActiveNode(node)
    assert c.run(doc, node, "Erase", c.forms["erase"].params())
    finish(c)
    doc.setActiveNode(other)  # picked before Krita's activation arrived: not one of this job's layers...
    timers.tick()
    assert doc.activeNode() == other  # ...so it is left active while Krita's activation is awaited


def test_several_result_layers_restore_the_source_after_the_last_activation(app, server):
    c, timers, doc, node = krita_activating_late(app, server)
    GATE.set()
    assert c.run(doc, node, "Imagic", c.forms["imagic"].params(prompt="a dog", eta="0.6, 0.9"))
    finish(c)
    assert len(doc.posted) == 2
    doc.deliver(1)  # the first layer's activation: the second one's is still to come
    timers.tick()
    assert doc.activeNode() != node and c.restoring is not None
    doc.deliver()
    timers.tick()
    assert doc.activeNode() == node and c.restoring is None


def test_restoring_the_source_never_raises_into_qt(app, server, monkeypatch):
    c, timers, doc, node = krita_activating_late(app, server)
    assert c.run(doc, node, "Erase", c.forms["erase"].params())
    finish(c)

    def broken():
        raise ValueError("something Krita's API did not expect")

    monkeypatch.setattr(doc, "activeNode", broken)
    timers.tick()  # from a Qt timer: must not raise
    assert c.restoring is None and not timers.queued


def test_restoring_the_source_gives_up_at_its_deadline(app, server):
    """No activation ever comes (a document without a view): the controller stops looking and leaves the
    active layer as it is."""
    c, timers, doc, node = krita_activating_late(app, server)
    c.restore_wait_s = 0.0
    assert c.run(doc, node, "Erase", c.forms["erase"].params())
    finish(c)
    assert c.restoring is None and not timers.queued and doc.activeNode() == node


def test_closed_document_drops_the_result_without_crashing(app, server):
    c = make_controller(app, server)
    doc, node = layer_doc(app)
    assert c.run(doc, node, "Imagic", {"prompt": "x", "eta": [0.7]})
    doc.close()
    GATE.set()
    wait_for(lambda: not c.job.busy, c)
    assert c.job.state == JobState.FAILED and "closed" in c.job.message
    assert c.last.code == "document_closed"


def test_backend_killed_mid_job_fails_clearly_and_leaves_the_document(app, tmp_path):
    conn = tmp_path / "killed.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.hosts.krita.testops", str(conn)],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "LAYEREDIT_RUNTIME_DIR": str(tmp_path / "run")},
    )
    try:
        end = time.monotonic() + 60
        while not conn.exists():
            assert proc.poll() is None and time.monotonic() < end, "the test server did not start"
            time.sleep(0.05)
        c = Controller(app, lambda: Client.connect(conn, check=False))
        assert c.connect()
        wait_for(lambda: c.connected, c, 30)
        doc, node = layer_doc(app)
        assert c.run(doc, node, "Imagic", {"prompt": "x", "eta": [0.7]})
        wait_for(lambda: c.job.stage == "tune", c)
        os.kill(proc.pid, signal.SIGKILL)
        wait_for(lambda: not c.job.busy, c)
    finally:
        proc.kill()
        proc.wait()
    assert c.job.state == JobState.FAILED
    assert c.job.error_code == ErrorCode.BACKEND_GONE.value
    assert "backend" in c.job.status_text.lower()
    assert [n.name() for n in doc.topLevelNodes()] == ["source"] and node.writes == 0
    assert not c.connected


def test_no_backend_and_missing_selection_are_reported_not_raised(app, tmp_path, server):
    c = Controller(app, lambda: Client.connect(tmp_path / "nothing.json", check=False))
    assert not c.connect()
    assert c.connection_text == "Backend: not running. Press Connect to start it on this computer."
    assert "No backend is running" in c.connection_tip  # the technical reason, in the tooltip
    doc, node = layer_doc(app)
    assert not c.run(doc, node, "Erase", {})
    assert c.job.error_code == ErrorCode.NO_BACKEND.value
    c2 = make_controller(app, server)
    assert not c2.run(doc, node, "Erase", {})
    assert c2.job.error_code == ErrorCode.NO_SELECTION.value
    assert not c2.run(doc, node, "Replace", {})
    assert c2.job.error_code == ErrorCode.UNKNOWN_OP.value and "replace" in c2.job.message


def test_a_hello_that_cannot_be_sent_is_reported_not_raised(app):
    """A remote server that refused this computer's key leaves no connection: Client.send raises NO_BACKEND.
    connect() (and so Connect and the Backend… chooser in Qt) must report it, never raise."""

    class Refused:
        closed = False

        def send(self, msg):
            raise ProtocolError(
                ErrorCode.NO_BACKEND, "Cannot reach the backend at tcp://gpu:5555 (no connection)."
            )

        def close(self, linger_ms=1000):
            self.closed = True

    refused = Refused()
    c = Controller(app, lambda: refused)
    assert not c.connect()
    assert "Cannot reach the backend" in c.connection_tip
    assert c.client is None and refused.closed and not c.connected


def test_reconnect_during_a_job_fetches_it_and_keeps_showing_its_progress(app, server, monkeypatch):
    """Reconnect (or a new socket after a hiccup) while a job runs: the job is re-attached on the new socket
    (same owner token), its progress keeps coming, and its result still lands as the new layer."""
    monkeypatch.setattr(testops, "HOLD_STEPS", 100_000)  # runs until GATE is set
    c = make_controller(app, server)
    doc, node = layer_doc(app)
    assert c.run(doc, node, "Imagic", {"prompt": "x", "eta": [0.7]})
    wait_for(lambda: c.job.stage == "tune", c)
    old, job_id, step = c.client, c.job.job_id, c.job.step
    assert c.connect()
    assert c.client is not old and c.job.busy and c.job.job_id == job_id
    assert c.job.stage == "tune" and c.job.step >= step  # the bar keeps what it showed
    wait_for(lambda: c.connected, c)
    assert "following the running job" in c.job.message
    step = c.job.step
    wait_for(lambda: c.job.step > step, c)  # progress now comes to the new socket
    GATE.set()
    wait_for(lambda: not c.job.busy, c)
    assert c.job.state == JobState.DONE, c.job.status_text
    assert [n.name() for n in doc.topLevelNodes()] == ["source", "Imagic η0.7: x"]
    assert node.writes == 0


def test_reconnect_to_nothing_during_a_job_fails_it_clearly(app, server, tmp_path):
    c = make_controller(app, server)
    doc, node = layer_doc(app)
    assert c.run(doc, node, "Imagic", {"prompt": "x", "eta": [0.7]})
    wait_for(lambda: c.job.stage == "tune", c)
    c.client_factory = lambda: Client.connect(tmp_path / "nothing.json", check=False)
    assert not c.connect()
    assert c.job.state == JobState.FAILED and c.job.error_code == ErrorCode.NO_BACKEND.value
    assert "No backend is running" in c.job.message and c.pending is None
    assert [n.name() for n in doc.topLevelNodes()] == ["source"]


def test_connection_line_is_plain_with_the_address_in_the_tooltip(app, server):
    c = make_controller(app, server)
    assert c.connection_text == "Backend: running on this computer (CPU)"
    assert c.client.info.endpoint in c.connection_tip and "tcp://" not in c.connection_text


def test_a_local_backend_whose_process_lives_gets_time_to_answer_hello(app, server):
    """A backend still importing torch on a loaded machine is starting, not gone: only a dead pid fails fast."""
    from types import SimpleNamespace

    from krita_plugin.layeredit import controller as ctl

    c = make_controller(app, server)
    assert c.hello_timeout_s == ctl.LOCAL_BUSY_HELLO_TIMEOUT_S  # the test server runs in this very process
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    c.client = SimpleNamespace(info=SimpleNamespace(pid=dead.pid))
    assert c.hello_timeout_s == ctl.LOCAL_HELLO_TIMEOUT_S


def test_a_live_local_backend_slow_to_answer_hello_is_waited_for_not_reported_gone(
    app, tmp_path, monkeypatch
):
    """The server answers hello only once its model report is built (torch imports slowly on a loaded
    machine). Held here until the test lets it go: the docker keeps waiting past a dead backend's 3 s (made 0
    here) because the backend's process lives, then connects."""
    import threading

    from krita_plugin.layeredit import controller as ctl

    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(ctl, "LOCAL_HELLO_TIMEOUT_S", 0.0)
    srv = Server(
        ServerConfig(connection_file=tmp_path / "backend.json", report_models=True), registry(), None
    )
    report_may_go = threading.Event()
    build_report = srv._build_report
    srv._build_report = lambda: (report_may_go.wait(120), build_report())
    srv.start()
    try:
        c = Controller(app, lambda: Client.connect(srv.connection_file, check=False))
        assert c.connect()
        for _ in range(20):
            c.poll()
        assert c.client is not None and c.hello is None  # still waiting for the answer, not "not running"
        report_may_go.set()
        wait_for(lambda: c.connected, c, limit=120)
        assert "erase" in c.forms
    finally:
        report_may_go.set()
        srv.stop()


def test_the_region_sent_reaches_as_far_as_the_chosen_grow(app, server):
    """Erase reads further past the selection with a larger grow: the docker's chosen value plans the region
    (hostkit.op_reach), not the default, so the layer in Krita is the CLI's edit for any grow."""
    c = make_controller(app, server)
    doc, node = layer_doc(app, w=1400, h=30, layer_rect=(0, 0, 1400, 30))
    select(doc, 700, 8, 6, 4)
    sent = {}
    for grow in (0, 10):
        params = c.forms["erase"].params(grow=grow)
        assert c.run(doc, node, "Erase", params)
        wait_for(lambda: not c.job.busy, c)
        assert c.job.state == JobState.DONE, c.job.status_text
        sent[grow] = Rect(*c.last.sent["region"])
        plan = plan_region(
            mode_by_label("Erase"),
            Rect(0, 0, 1400, 30),
            Rect(0, 0, 1400, 30),
            Rect(700, 8, 6, 4),
            params={"grow": grow},
        )
        assert sent[grow] == plan.region
        doc.setActiveNode(node)
    assert sent[10].w > sent[0].w and sent[10].w < 1400  # further, and still not the whole layer

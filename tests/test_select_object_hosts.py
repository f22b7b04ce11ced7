"""Select object in the real hosts: a rough selection in, the selection snapped to the object out, no new layer.

Krita 5.1 (tests/hosts/krita) drives the docker's own widgets through the scripted hook; GIMP 3.0 (the Debian
13 chroot of tests/hosts/gimp) runs the installed plug-in's procedure like a script would. Both against a real
``python -m backend serve`` with no models installed (the snap op's embedded GrabCut + u2netp path).
Skipped without the hosts unless LAYEREDIT_REQUIRE_HOSTS=1. Run under ``flock /work/hosts.lock``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.hosts.gimp.harness import GimpSandbox, chroot_ready
from tests.hosts.krita import harness as krita

pytestmark = [pytest.mark.host, pytest.mark.slow]


def _need(available: bool, what: str) -> None:
    if not available:
        if os.environ.get("LAYEREDIT_REQUIRE_HOSTS") == "1":
            pytest.fail(f"{what} is not installed")
        pytest.skip(f"{what} is not installed (see tests/hosts/)")


@pytest.mark.parametrize(
    ("mode", "trigger"),
    [("Select object", None), ("Erase", "select_object_action")],
    ids=["docker-mode", "action-while-docker-shows-erase"],
)
def test_select_object_in_real_krita_snaps_the_selection_and_adds_no_layer(
    xvfb_server, tmp_path, mode, trigger
):
    """Through the docker (mode Select object, Run) and through the Tools > Scripts action (whatever mode the
    docker shows: here Erase, which must not run)."""
    _need(krita.krita_available(), "Krita")
    w, h = 160, 120
    img, rough = krita.scene_bgra(w, h)
    (tmp_path / "layer.raw").write_bytes(img.tobytes())
    spec = {
        "width": w,
        "height": h,
        "layer_raw": str(tmp_path / "layer.raw"),
        "layer_rect": [0, 0, w, h],
        "selection": list(rough),
        "mode": mode,
        "trigger": trigger,
        "screenshot": True,
    }
    backend = krita.start_backend(tmp_path)
    try:
        report = krita.run_krita(tmp_path, spec, backend, display=xvfb_server)
    finally:
        backend.stop()
    assert "error" not in report, report.get("error")
    assert report["outcome"]["state"] == "done", report["outcome"]
    assert "selected" in report["outcome"]["message"]
    # no new layer (Krita lists the global selection as a "Selection Mask" node when it is displayed)
    assert [n for n in report["layers"] if n != "Selection Mask"] == ["Background", "source"]
    out = tmp_path / "out"
    assert np.array_equal(krita.read_raw(out / "source_after.raw", w, h), img)  # no pixel changed
    snapped = krita.read_raw(out / "selection_after.raw", w, h, 1)[:, :, 0] > 127
    x, y, sw, sh = rough
    disc = (img[:, :, :3] == [40, 30, 220]).all(axis=-1)  # BGRA of the red disc
    assert snapped[disc].mean() > 0.95  # the object is selected...
    assert snapped[~disc].mean() < 0.02  # ...and little else: the rough box is gone
    assert snapped.sum() < 0.8 * sw * sh


@pytest.fixture
def sandbox():
    _need(chroot_ready(), "the GIMP 3 chroot (tests/hosts/gimp/setup.sh, as root)")
    box = GimpSandbox.create()
    yield box
    box.cleanup()


def test_select_object_in_real_gimp_snaps_the_selection_and_adds_no_layer(sandbox, tmp_path):
    from tests.test_gimp_host import ELLIPSE, LAYER, VENV_PYTHON, W, _case, _start_backend, _stop

    proc = _start_backend(
        sandbox, tmp_path, [str(VENV_PYTHON), "-m", "backend", "serve", "--no-model-report"]
    )
    try:
        report = sandbox.run_driver(_case("plug-in-layeredit-snap"))
    finally:
        _stop(proc)
    assert report.get("driver_error") is None, report["driver_error"]
    assert report["status"] == "success", f"{report.get('error')}\n{report['log'][-3000:]}"
    assert [entry["name"] for entry in report["layers"]] == ["src"]  # no new layer
    assert report["selected_layers"] == ["src"]
    assert sandbox.read_out("src_after.raw") == sandbox.read_out("src_before.raw")  # no pixel changed
    before = np.frombuffer(sandbox.read_out("selection_before.raw"), np.uint8).reshape(-1, W) > 127
    after = np.frombuffer(sandbox.read_out("selection_after.raw"), np.uint8).reshape(-1, W) > 127
    ox, oy, ow, oh = LAYER["object"]
    obj = np.zeros_like(after)
    obj[LAYER["y"] + oy : LAYER["y"] + oy + oh, LAYER["x"] + ox : LAYER["x"] + ox + ow] = True
    assert after[obj].mean() > 0.95  # the object is selected...
    assert after[~obj].mean() < 0.01  # ...and nothing else
    assert before.sum() > 1.5 * obj.sum() and not np.array_equal(before, after)  # it was a rough ellipse
    assert ELLIPSE["shape"] == "ellipse"

"""Select object in the real hosts: a rough selection in, the selection snapped to the object out, no new layer.

Krita 5.1 (tests/hosts/krita) drives the docker's own widgets through the scripted hook; GIMP 3.0 (the Debian
13 chroot of tests/hosts/gimp) runs the installed plug-in's procedure like a script would. Both against a real
``python -m backend serve`` with no models installed (the snap op's embedded GrabCut + u2netp path).
Skipped without the hosts unless LAYEREDIT_REQUIRE_HOSTS=1. Run under ``flock /work/hosts.lock``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

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


def test_soft_selection_values_arrive_unchanged_in_real_krita(xvfb_server, tmp_path):
    """Select object against a stand-in snap that returns every 8-bit value in turn (a ramp): Krita's selection
    holds exactly those values (a soft edge of 127 stays 127; GIMP once turned 54 into 127)."""
    _need(krita.krita_available(), "Krita")
    from tests.hosts.krita.testops import soft_ramp

    w, h = 64, 48
    img, _ = krita.scene_bgra(w, h)
    (tmp_path / "layer.raw").write_bytes(img.tobytes())
    rough = (8, 6, 40, 30)  # 1200 pixels: the ramp goes through 0..255 more than four times
    spec = {
        "width": w,
        "height": h,
        "layer_raw": str(tmp_path / "layer.raw"),
        "layer_rect": [0, 0, w, h],
        "selection": list(rough),
        "mode": "Select object",
    }
    runtime = tmp_path / "run"
    backend = krita.start_backend(tmp_path, ["tests.hosts.krita.testops", str(runtime / "backend.json")])
    try:
        report = krita.run_krita(tmp_path, spec, backend, display=xvfb_server)
    finally:
        backend.stop()
    assert "error" not in report, report.get("error")
    assert report["outcome"]["state"] == "done", report["outcome"]
    x, y, rw, rh = report["sent"]["region"]
    expected = np.zeros((h, w), np.uint8)
    expected[y : y + rh, x : x + rw] = soft_ramp(rh, rw)
    selected = krita.read_raw(tmp_path / "out" / "selection_after.raw", w, h, 1)[:, :, 0]
    assert np.array_equal(selected, expected)
    assert set(np.unique(selected)) == set(range(256))


@pytest.mark.parametrize(
    "precision", ["U8_NON_LINEAR", "U16_NON_LINEAR", "FLOAT_LINEAR"], ids=["u8", "u16", "float"]
)
def test_soft_selection_values_arrive_unchanged_in_real_gimp(sandbox, tmp_path, precision):
    """Select object against a stand-in snap that returns every 8-bit value in turn (a ramp): GIMP's
    selection holds those values in every precision. Until 2026-11-28 the plug-in wrote its temporary channel
    (``Y' u8`` in 8-bit non-linear images) as ``Y u8`` and the selection came out brightened: 54 -> 127."""
    from tests.hosts.krita.testops import soft_ramp
    from tests.test_gimp_host import VENV_PYTHON, W, _case, _start_backend, _stop

    slow = Path(__file__).parent / "hosts" / "gimp" / "slow_backend.py"
    proc = _start_backend(sandbox, tmp_path, [str(VENV_PYTHON), str(slow), "--soft"])
    try:
        report = sandbox.run_driver(_case("plug-in-layeredit-snap", precision=precision))
    finally:
        _stop(proc)
    assert report.get("driver_error") is None, report["driver_error"]
    assert report["status"] == "success", f"{report.get('error')}\n{report['log'][-3000:]}"
    info = json.loads(sandbox.read_out("result/result.json"))  # the plug-in's test hook: what it was sent
    x, y, rw, rh = info["region"]
    sent = np.frombuffer(sandbox.read_out("result/mask_mask.raw"), np.uint8).reshape(rh, rw)
    assert np.array_equal(sent, soft_ramp(rh, rw))
    selected = np.frombuffer(sandbox.read_out("selection_after.raw"), np.uint8).reshape(-1, W)
    expected = np.zeros_like(selected)
    expected[y : y + rh, x : x + rw] = sent
    diff = np.abs(selected.astype(int) - expected)
    assert diff.max() <= 1, (diff.max(), int((diff > 1).sum()))
    inside = selected[y : y + rh, x : x + rw]
    for value in (54, 127, 200):
        assert np.abs(inside[sent == value].astype(int) - value).max() <= 1, value

"""Real Krita (Debian 12's 5.1.5, headless on the session's Xvfb, fresh HOME, plugin installed by its installer).

The plugin's own scripted hook (krita_plugin/layeredit/scripted.py) builds the document, selects, sets the
docker's widgets and presses its Run button; the backend is a real process. Skipped when Krita is not
installed, unless LAYEREDIT_REQUIRE_HOSTS=1 (CI), where that is a failure. Setup: tests/hosts/krita/setup.sh.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from tests.hosts.krita import harness

pytestmark = [pytest.mark.host, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _need_krita():
    if not harness.krita_available():
        if os.environ.get("LAYEREDIT_REQUIRE_HOSTS") == "1":
            pytest.fail("Krita / Xvfb are not installed; run tests/hosts/krita/setup.sh")
        pytest.skip("Krita is not installed (tests/hosts/krita/setup.sh installs it)")


@pytest.fixture
def backend(tmp_path):
    b = harness.start_backend(tmp_path)
    yield b
    b.stop()


@pytest.fixture
def test_backend(tmp_path):
    """A backend process serving the deterministic test ops (tests/hosts/krita/testops.py)."""
    runtime = tmp_path / "run"
    b = harness.start_backend(tmp_path, ["tests.hosts.krita.testops", str(runtime / "backend.json")])
    yield b
    b.stop()


def _spec(tmp_path, layer: np.ndarray, **fields) -> dict:
    """The scripted run's spec: ``layer`` saved as the source layer's raw pixels, covering the canvas
    (width/height/layer_rect default to the layer's size at 0,0), plus ``fields``."""
    (tmp_path / "layer.raw").write_bytes(layer.tobytes())
    h, w = layer.shape[:2]
    base = {"width": w, "height": h, "layer_raw": str(tmp_path / "layer.raw"), "layer_rect": [0, 0, w, h]}
    return {**base, **fields}


def test_real_erase_in_krita_makes_a_new_layer_and_leaves_the_source(xvfb_server, tmp_path, backend):
    w, h = 160, 120
    img, sel = harness.scene_bgra(w, h)
    spec = _spec(
        tmp_path,
        img,
        selection=list(sel),
        mode="Erase",
        set_selection=True,  # "select the snapped object afterwards": the test reads the selection back
    )
    report = harness.run_krita(tmp_path, spec, backend, display=xvfb_server)
    assert "error" not in report, report.get("error")
    assert report["outcome"]["state"] == "done", report["outcome"]
    assert report["layers"][:3] == ["Background", "source", "Erase"] and report["result_above_source"]
    assert report["ui_ticks_while_running"] > 0  # Qt's loop kept running while the backend worked
    assert report["shm"]  # a backend on this computer gets the layer through shared memory, not signed frames
    out = tmp_path / "out"
    source_after = harness.read_raw(out / "source_after.raw", w, h)
    assert np.array_equal(source_after, img)  # the source layer is untouched
    result = harness.read_raw(out / "result.raw", w, h)
    assert report["masks"] == ["object", "region"]  # erase returns both; the hook wrote them over the canvas
    region = harness.read_raw(out / "mask_region.raw", w, h, 1)[:, :, 0] > 0  # what erase repainted
    obj = harness.read_raw(out / "mask_object.raw", w, h, 1)[:, :, 0]  # the snapped object
    selected = harness.read_raw(out / "selection_after.raw", w, h, 1)[:, :, 0]
    assert np.array_equal(selected, obj)  # the selection is the object, soft edge values included...
    assert region[obj > 0].all() and region.sum() > (obj > 0).sum()  # ...not the wider region repainted
    covered = result[:, :, 3] > 0  # the new layer holds the region sent (selection + context)
    x, y, sw, sh = sel
    assert covered[y : y + sh, x : x + sw].all()
    assert np.array_equal(result[covered & ~region], img[covered & ~region])  # identical outside the edit
    disc = (img[:, :, :3] == [40, 30, 220]).all(axis=-1)  # BGRA of the red disc
    assert (obj > 127)[disc].mean() > 0.95  # snapped onto the object
    assert (obj > 127)[~disc].mean() < 0.02
    still_red = (result[:, :, :3] == [40, 30, 220]).all(axis=-1) & disc
    assert still_red.sum() < 0.02 * disc.sum()  # the object is gone from the new layer
    assert region.sum() < 4 * disc.sum()  # ...and the edit stayed near the object


def test_u16_offset_layer_and_partial_selection_round_trip_exactly(xvfb_server, tmp_path, test_backend):
    w, h = 120, 80
    lx, ly, lw, lh = -10, 5, 100, 60  # the layer hangs off the canvas's left edge
    rng = np.random.default_rng(1)
    layer = rng.integers(1, 60000, (lh, lw, 4)).astype("<u2")
    sel = (50, 20, 80, 40)  # reaches past the layer and past the canvas
    spec = _spec(
        tmp_path,
        layer,
        width=w,
        height=h,
        depth="U16",
        layer_rect=[lx, ly, lw, lh],
        selection=list(sel),
        mode="Erase",
        params={"grow": 3},
    )
    report = harness.run_krita(tmp_path, spec, test_backend, display=xvfb_server)
    assert report["outcome"]["state"] == "done", report
    assert report["preview_shown"]  # the op's 8x8 RGB progress preview reached the docker's preview label
    canvas = np.zeros((h, w, 4), "<u2")
    canvas[ly : ly + lh, 0 : lx + lw] = layer[:, -lx:]
    out = tmp_path / "out"
    source_after = np.frombuffer((out / "source_after.raw").read_bytes(), "<u2").reshape(h, w, 4)
    assert np.array_equal(source_after, canvas)
    result = np.frombuffer((out / "result.raw").read_bytes(), "<u2").reshape(h, w, 4)
    selected = np.zeros((h, w), bool)
    selected[20:60, 50:90] = True  # selection ∩ layer ∩ canvas
    assert (result[selected] == [0, 0, 65535, 65535]).all()  # red in Krita's BGRA u16
    covered = result[:, :, 3] > 0
    assert np.array_equal(result[covered & ~selected], canvas[covered & ~selected])
    assert not covered[:, 90:].any() and not covered[:5].any()  # nothing beyond the layer


def test_a_hello_the_backends_guard_cut_unread_is_resent_and_the_job_runs(xvfb_server, tmp_path):
    """The backend's guard cuts the docker's first connection with its signed hello unread (as past 64 hosts at
    once, or during a flood). The docker resends it on a fresh connection within a second or two and the erase
    runs; before, it waited its 60 s hello timeout and said "start it" of a running backend."""
    runtime = tmp_path / "run"
    b = harness.start_backend(
        tmp_path, ["tests.hosts.krita.testops", str(runtime / "backend.json"), "--drop-first", "1"]
    )
    try:
        img, _ = harness.scene_bgra(64, 48)
        spec = _spec(tmp_path, img, selection=[20, 10, 16, 12], mode="Erase", connect_timeout_s=30)
        report = harness.run_krita(tmp_path, spec, b, display=xvfb_server)
    finally:
        b.stop()
    assert "DropFirst: cut a connection with its first message unread" in b.log.read_text(errors="replace")
    assert "error" not in report, report  # main: "not connected: Backend: connecting…" after 30 s
    assert report["outcome"]["state"] == "done", report
    assert report["layers"][:3] == ["Background", "source", "Erase"] and report["result_above_source"]


def test_backend_killed_mid_job_in_krita_reports_and_keeps_the_document(xvfb_server, tmp_path, test_backend):
    w, h = 64, 48
    img, _ = harness.scene_bgra(w, h)
    spec = _spec(
        tmp_path,
        img,
        mode="Imagic",
        prompt="a dog",
        kill_backend={"pid": test_backend.proc.pid, "stage": "tune"},
    )
    report = harness.run_krita(tmp_path, spec, test_backend, display=xvfb_server)
    assert report["outcome"]["state"] == "failed"
    assert report["outcome"]["code"] == "backend_gone"
    assert report["layers"] == ["Background", "source"]
    source_after = harness.read_raw(tmp_path / "out" / "source_after.raw", w, h)
    assert np.array_equal(source_after, img)


def test_closing_the_document_while_a_job_runs_drops_the_result(xvfb_server, tmp_path, test_backend):
    w, h = 64, 48
    img, _ = harness.scene_bgra(w, h)
    spec = _spec(
        tmp_path,
        img,
        mode="Imagic",
        prompt="a dog",
        close_document_after_run=True,
    )
    report = harness.run_krita(tmp_path, spec, test_backend, display=xvfb_server)
    assert "closed_document" in [s[1] for s in report["steps"]]
    assert report["outcome"]["state"] == "failed"
    assert "closed" in report["outcome"]["message"]


def test_plugin_starts_the_backend_itself_from_the_installers_config(xvfb_server, tmp_path):
    """No backend running: the docker's start path spawns ``<venv python> -m backend serve`` (from config.json
    the installer wrote) and the job runs against it."""
    w, h = 64, 48
    img, sel = harness.scene_bgra(w, h)
    spec = _spec(
        tmp_path,
        img,
        selection=list(sel),
        mode="Erase",
        start_backend=True,
        connect_timeout_s=120,
    )
    try:
        report = harness.run_krita(tmp_path, spec, None, display=xvfb_server)
    finally:
        harness.stop_backend_of(tmp_path / "run")
    assert report["outcome"]["state"] == "done", report
    assert report["layers"][:3] == ["Background", "source", "Erase"]


def test_replace_then_imagic_then_eta_slider_rerender_with_tiny_models(
    xvfb_server, tmp_path, tiny_inpaint_dir, tiny_sd_dir
):
    """Four jobs in one Krita session through the docker's widgets: Replace (prompt + schema-built advanced
    fields), Imagic, moving the eta slider re-renders Imagic from the backend's cached tuning, then Erase on
    the visible image (the projection). The
    models are the tiny random-weight pipelines: this proves the plumbing, not the picture."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "sd15-inpaint").symlink_to(tiny_inpaint_dir, target_is_directory=True)
    (models / "sd15").symlink_to(tiny_sd_dir, target_is_directory=True)
    b = harness.start_backend(tmp_path, env={"LAYEREDIT_MODELS": str(models)})
    w, h = 96, 64
    img, sel = harness.scene_bgra(w, h)
    tiny_imagic = {"steps": 2, "embedding_steps": 2, "finetune_steps": 2, "resolution": 64}
    spec = _spec(
        tmp_path,
        img,
        selection=list(sel),
        screenshot=True,  # out/docker_N.png: the docker after each job
        jobs=[
            {
                "mode": "Replace",
                "prompt": "a blue vase",
                "params": {"steps": 2, "seed": 3, "resolution": 64},
                "set_selection": True,
                "busy_loop_when_done_s": 1.0,  # Krita's activation of the new layer then comes last
            },
            {"mode": "Imagic", "prompt": "a photo", "params": tiny_imagic, "eta": 0.7, "show_advanced": True},
            {
                "mode": "Imagic",
                "prompt": "a photo",
                "params": tiny_imagic,
                "eta": 0.9,
                "trigger": "eta_release",
            },
            {"mode": "Erase", "source": "visible"},  # the projection; the result goes on top of the stack
        ],
    )
    try:
        report = harness.run_krita(tmp_path, spec, b, display=xvfb_server)
    finally:
        b.stop()
    jobs = report["jobs"]
    assert [j["outcome"]["state"] for j in jobs] == ["done"] * 4, [j["outcome"] for j in jobs]
    out = tmp_path / "out"
    replace = harness.read_raw(out / "result.raw", w, h)
    mask = harness.read_raw(out / "selection_after.raw", w, h, 1)[:, :, 0]  # the snapped object
    grow = 8  # replace's default: the edit reaches this far past the object
    edit = cv2.dilate(mask, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) > 0
    covered = replace[:, :, 3] > 0
    assert mask.any() and not edit.all()
    assert np.array_equal(replace[covered & ~edit], img[covered & ~edit])  # identical outside the edit
    assert (replace[mask > 0] != img[mask > 0]).any()  # the object was repainted
    assert jobs[0]["result_layer"] == "Replace: a blue vase"
    assert jobs[1]["result_layer"] == "Imagic η0.7: a photo" and jobs[1]["meta"]["cache_hit"] is False
    assert jobs[2]["result_layer"] == "Imagic η0.9: a photo" and jobs[2]["meta"]["cache_hit"] is True
    assert [j["sent"]["source"] for j in jobs[:3]] == ["source"] * 3  # the source stays the active layer
    assert jobs[2]["layers"][:5] == [
        "Background",
        "source",
        "Imagic η0.9: a photo",
        "Imagic η0.7: a photo",
        "Replace: a blue vase",
    ]  # each result goes right above its source layer
    assert jobs[3]["sent"]["source"] is None and jobs[3]["layers"][-2:] == ["Selection Mask", "Erase"]
    for n in range(4):
        suffix = f"_{n}" if n else ""
        assert np.array_equal(harness.read_raw(out / f"source_after{suffix}.raw", w, h), img)


def test_a_rough_lasso_around_the_coffee_spoon_snaps_to_the_whole_spoon_in_krita(
    xvfb_server, tmp_path, backend
):
    """examples/coffee.png with the shipped rough lasso as Krita's selection, Erase with the default snap
    (embedded: no models installed) and default grow and feather; "select the snapped object afterwards"
    selects the whole spoon (not the wider region erase repainted)."""
    from bench.realphoto import coffee_spoon, spoon_checks

    image, lasso, _, _, _ = coffee_spoon()
    h, w = lasso.shape
    bgra = np.dstack([image[:, :, ::-1], np.full((h, w), 255, np.uint8)])
    (tmp_path / "selection.raw").write_bytes(np.ascontiguousarray(lasso).tobytes())
    spec = _spec(
        tmp_path,
        bgra,
        selection_raw=str(tmp_path / "selection.raw"),
        mode="Erase",
        set_selection=True,
        show_advanced=True,
    )
    report = harness.run_krita(tmp_path, spec, backend, display=xvfb_server)
    assert "error" not in report, report.get("error")
    assert report["outcome"]["state"] == "done", report["outcome"]
    out = tmp_path / "out"
    assert np.array_equal(harness.read_raw(out / "source_after.raw", w, h), bgra)  # the source is untouched
    selected = harness.read_raw(out / "selection_after.raw", w, h, 1)[:, :, 0]
    assert np.array_equal(selected, harness.read_raw(out / "mask_object.raw", w, h, 1)[:, :, 0])
    snapped = selected > 127
    got = spoon_checks(snapped)
    assert got["iou"] > 0.9 and got["tip"] > 0.9 and got["neck"] > 0.8 and got["spill"] < 0.02, got
    # the handle's middle too, where it runs along the cup the colour of the saucer: tip and bowl in one piece
    assert got["middle"] > 0.8 and got["whole"] == 1.0, got


def test_docker_in_a_small_window_keeps_run_and_status_visible_and_shows_the_snapped_selection(
    xvfb_server, tmp_path
):
    """An artist's small Krita window (900x560), Advanced open: Erase with 'select the snapped object' (the
    selection is set AND shown: marching ants on the canvas), then a Replace that fails with model_missing
    (no inpainting model here), then Imagic. Run, Cancel, the bar and the status line stay on screen, the status
    sits right under the bar, the words are plain. Screenshots land in out/ (docs/images/ has copies)."""
    w, h = 160, 120
    img, sel = harness.scene_bgra(w, h)
    spec = _spec(
        tmp_path,
        img,
        selection=list(sel),
        window=[900, 560],
        screenshot=True,
        jobs=[
            {"mode": "Erase", "set_selection": True, "show_advanced": True, "check_selection_shown": True},
            {"mode": "Replace", "prompt": "a blue vase", "show_advanced": True},
            {"mode": "Imagic", "prompt": "a photo", "show_advanced": True},
        ],
    )
    backend = harness.start_backend(tmp_path, ["backend", "serve"])  # as users run it: devices resolved
    try:
        report = harness.run_krita(tmp_path, spec, backend, display=xvfb_server)
    finally:
        backend.stop()
    assert "error" not in report, report.get("error")
    erase, replace, imagic = report["jobs"]
    assert erase["outcome"]["state"] == "done", erase["outcome"]
    assert erase["selection_after"] is not None and erase["ants_px"] > 50  # set, and drawn on the canvas
    mask = harness.read_raw(tmp_path / "out" / "selection_after.raw", w, h, 1)[:, :, 0] > 0
    disc = (img[:, :, :3] == [40, 30, 220]).all(axis=-1)
    assert mask[disc].mean() > 0.95 and mask.sum() < 4 * disc.sum()  # the snapped object, not the rough box
    for job in (erase, replace, imagic):
        ui = job["ui"]
        assert ui["advanced_open"] and all(ui["visible"].values()), ui
        assert 0 <= ui["status_below_progress_px"] <= 12, ui  # the status line sits right under the bar
        assert ui["title"] == "LayerEdit" and not ui["preview_visible"]
        assert ui["connection_line"] == "Backend: running on this computer (CPU)", ui
        assert "tcp://127.0.0.1:" in ui["connection_tip"]
    assert erase["ui"]["progress_format"] == "Done" and erase["ui"]["select_after_visible"]
    assert {"margin", "grow", "feather"} <= set(erase["ui"]["units"])  # "px" after the number
    assert set(erase["ui"]["units"].values()) == {" px"}
    assert replace["outcome"]["state"] == "failed" and replace["outcome"]["code"] == "model_missing"
    assert "model_missing" in replace["ui"]["status_text"] and replace["ui"]["progress_format"] == "Failed"
    assert imagic["ui"]["eta_title"] == "Edit strength (eta)" and "0.6-0.8" in imagic["ui"]["eta_tip"]
    assert not imagic["ui"]["select_after_visible"]  # Imagic does not snap


def test_reconnect_during_a_job_fetches_it_and_keeps_its_progress(xvfb_server, tmp_path):
    """Reconnect pressed while a job runs: the docker fetches the job on its new socket, progress keeps
    coming there, and the result still lands as a layer."""
    runtime = tmp_path / "run"
    b = harness.start_backend(
        tmp_path,
        ["tests.hosts.krita.testops", str(runtime / "backend.json")],
        env={"LAYEREDIT_TEST_HOLD_STEPS": "600"},  # ~12 s of progress, time for the reconnect
    )
    w, h = 64, 48
    img, _ = harness.scene_bgra(w, h)
    spec = _spec(tmp_path, img, mode="Imagic", prompt="a dog", reconnect_at_stage="tune", window=[900, 560])
    try:
        report = harness.run_krita(tmp_path, spec, b, display=xvfb_server)
    finally:
        b.stop()
    assert "error" not in report, report.get("error")
    assert report["outcome"]["state"] == "done", report["outcome"]
    assert report["reconnected"]["steps_after"] > 0  # progress through the new socket
    assert report["layers"] == ["Background", "source", "Imagic η0.7: a dog"]
    assert report["ui"]["progress_format"] == "Done"

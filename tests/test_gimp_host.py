"""The INSTALLED GIMP 3 plug-in in a real GIMP 3.0 (Debian 13 chroot) against a real backend.

GIMP runs headless (``gimp-console-3.0 -i -n --batch-interpreter=python-fu-eval``) inside the chroot that
``tests/hosts/gimp/setup.sh`` builds; the driver (tests/hosts/gimp/driver.py) builds an image, calls the
plug-in's PDB procedure like a script would, and dumps the layers. The backend runs outside the chroot from
the project's venv (``python -m backend serve``) with its connection file in the sandbox's runtime dir.
Skipped without the chroot (or without root) unless LAYEREDIT_REQUIRE_HOSTS=1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.hosts.gimp.harness import PROJECT, GimpSandbox, chroot_ready

pytestmark = pytest.mark.host
VENV_PYTHON = PROJECT / ".venv" / "bin" / "python"

W, H = 96, 80
LAYER = {
    "width": 80,
    "height": 64,
    "x": 8,
    "y": 6,
    "object": [30, 20, 16, 14],
}  # smaller than the image, offset
ELLIPSE = {"shape": "ellipse", "rect": [34, 22, 28, 22]}  # loosely around the object (image coordinates)


@pytest.fixture(scope="module")
def chroot():
    if not chroot_ready():
        if os.environ.get("LAYEREDIT_REQUIRE_HOSTS") == "1":
            pytest.fail("GIMP 3 chroot missing: run tests/hosts/gimp/setup.sh (as root)")
        pytest.skip("GIMP 3 chroot missing (tests/hosts/gimp/setup.sh builds it; needs root)")


@pytest.fixture
def sandbox(chroot):
    box = GimpSandbox.create()
    yield box
    box.cleanup()


@pytest.fixture
def backend(sandbox, tmp_path):
    """``python -m backend serve`` from the venv, outside the chroot, writing into the sandbox's runtime dir."""
    proc = _start_backend(
        sandbox, tmp_path, [str(VENV_PYTHON), "-m", "backend", "serve", "--no-model-report"]
    )
    yield proc
    _stop(proc)


def _start_backend(sandbox, tmp_path, argv: list[str], extra_env: dict | None = None) -> subprocess.Popen:
    env = dict(
        os.environ, LAYEREDIT_RUNTIME_DIR=str(sandbox.runtime_dir), OMP_NUM_THREADS="1", **(extra_env or {})
    )
    env["LAYEREDIT_MODELS"] = str(tmp_path / "no-models")  # nothing installed: model-less ops must still work
    log_path = tmp_path / "backend.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT)
    conn = sandbox.runtime_dir / "backend.json"
    deadline = time.monotonic() + 120
    while not conn.exists():
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, "backend did not start"
        time.sleep(0.2)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _case(procedure: str, selection: dict | None = ELLIPSE, args: dict | None = None, **image) -> dict:
    return {
        "image": {"width": W, "height": H, **image},
        "layer": LAYER,
        "selection": selection,
        "procedure": procedure,
        "args": args or {},
    }


def _pixel(data: bytes, width: int, x: int, y: int, bpp: int = 4) -> bytes:
    i = (y * width + x) * bpp
    return data[i : i + bpp]


PRECISIONS = [  # GIMP precision, the format the plug-in reads/writes it in (so the dumps compare exactly), bpp
    ("U8_NON_LINEAR", "R'G'B'A u8", 4),
    ("U16_NON_LINEAR", "R'G'B'A u16", 8),
    ("FLOAT_LINEAR", "RGBA float", 16),
]


@pytest.mark.parametrize(("precision", "fmt", "bpp"), PRECISIONS, ids=[p[0].lower() for p in PRECISIONS])
def test_erase_in_real_gimp(sandbox, backend, precision, fmt, bpp):
    case = _case("plug-in-layeredit-erase", args={"select-mask": True}, precision=precision)
    case["dump_format"] = fmt
    report = sandbox.run_driver(case)
    assert report.get("driver_error") is None, report["driver_error"]
    assert report["status"] == "success", f"{report.get('error')}\n{report['log'][-3000:]}"
    layers = report["layers"]
    assert [entry["name"] for entry in layers] == ["Erase", "src"]  # a new layer right above the source
    # the source stays the selected layer (as in Krita): a second Run reads the source, not the result
    assert report["selected_layers"] == ["src"]
    new = layers[0]
    src_before, src_after = sandbox.read_out("src_before.raw"), sandbox.read_out("src_after.raw")
    assert src_after == src_before  # the source layer is never touched
    region, obj = _returned_masks(sandbox)  # what erase repainted, the snapped object (image coordinates)
    # select-mask selects the object, soft edge values as returned, not the wider region erase repainted
    selected = np.frombuffer(sandbox.read_out("selection_after.raw"), np.uint8).reshape(H, W)
    assert np.abs(selected.astype(int) - obj).max() <= 1 and (obj > 0).any()
    assert region[obj > 0].all() and region.sum() > (obj > 0).sum()
    new_px = sandbox.read_out("new.raw")
    assert len(new_px) == new["width"] * new["height"] * bpp
    ox, oy, ow, oh = LAYER["object"]
    changed_inside = object_pixels = unchanged_outside = 0
    for y in range(new["height"]):
        for x in range(new["width"]):
            ix, iy = x + new["x"], y + new["y"]  # image coordinates
            lx, ly = ix - LAYER["x"], iy - LAYER["y"]  # source layer coordinates
            before = _pixel(src_before, LAYER["width"], lx, ly, bpp)
            after = _pixel(new_px, new["width"], x, y, bpp)
            if not region[iy, ix]:
                assert after == before, f"pixel {(ix, iy)} outside the edit changed: {before} -> {after}"
                unchanged_outside += 1
            elif ox <= lx < ox + ow and oy <= ly < oy + oh:
                object_pixels += 1
                changed_inside += after != before
    assert object_pixels == ow * oh and unchanged_outside > 1000
    assert changed_inside / object_pixels > 0.95, (changed_inside, object_pixels)


def _returned_masks(sandbox: GimpSandbox, width: int = W, height: int = H) -> tuple[np.ndarray, np.ndarray]:
    """Erase's two masks as the plug-in got them (its LAYEREDIT_RESULT_DUMP hook), on the whole image: the
    region it repainted (bool) and the snapped object (u8)."""
    info = json.loads(sandbox.read_out("result/result.json"))
    assert info["masks"] == ["object", "region"], info
    x, y, w, h = info["region"]
    region, obj = np.zeros((height, width), bool), np.zeros((height, width), np.uint8)
    region[y : y + h, x : x + w] = (
        np.frombuffer(sandbox.read_out("result/mask_region.raw"), np.uint8).reshape(h, w) > 0
    )
    obj[y : y + h, x : x + w] = np.frombuffer(sandbox.read_out("result/mask_object.raw"), np.uint8).reshape(
        h, w
    )
    return region, obj


def test_imagic_in_real_gimp_one_layer_per_eta(sandbox, tmp_path, tiny_sd_dir):
    """Imagic without a selection (whole layer) on the tiny random-weight SD: two etas, two new layers."""
    env = {"LAYEREDIT_CACHE": str(tmp_path / "imagic-cache")}
    proc = _start_backend(
        sandbox, tmp_path, [str(VENV_PYTHON), "-m", "backend", "serve", "--no-model-report"], extra_env=env
    )
    try:
        args = {"prompt": "a photo of a dog", "eta": "0.6, 0.8", "model": str(tiny_sd_dir)}
        args |= {"embedding-steps": 2, "finetune-steps": 2, "steps": 2}
        report = sandbox.run_driver(_case("plug-in-layeredit-imagic", selection=None, args=args))
    finally:
        _stop(proc)
    assert report["status"] == "success", f"{report.get('error')}\n{report['log'][-3000:]}"
    names = [entry["name"] for entry in report["layers"]]
    assert names == ["Imagic η0.6: a photo of a dog", "Imagic η0.8: a photo of a dog", "src"]
    for entry in report["layers"][:2]:  # the whole layer, where it is
        assert (entry["x"], entry["y"], entry["width"], entry["height"]) == (8, 6, 80, 64)
    assert sandbox.read_out("src_after.raw") == sandbox.read_out("src_before.raw")
    assert sandbox.read_out("new.raw") != sandbox.read_out("src_before.raw")


def test_replace_in_real_gimp_with_prompt(sandbox, backend, tiny_inpaint_dir):
    """Replace from a prompt on the tiny random-weight inpainting model: prompt, negative prompt, strength and
    seed travel as PDB arguments; only the snapped region changes (the tiny model paints noise there). With the
    default grow (8 px) the edit reaches past the mask the op returns (the snapped object), so grow is 0 here."""
    args = {"prompt": "a red ball", "negative-prompt": "blurry", "strength": 0.9, "seed": 3, "steps": 2}
    args |= {"model": str(tiny_inpaint_dir), "select-mask": True, "grow": 0}  # edit region = snapped mask
    report = sandbox.run_driver(_case("plug-in-layeredit-replace", args=args))
    assert report["status"] == "success", f"{report.get('error')}\n{report['log'][-3000:]}"
    assert [entry["name"] for entry in report["layers"]] == ["Replace: a red ball", "src"]
    new = report["layers"][0]
    src_before, new_px = sandbox.read_out("src_before.raw"), sandbox.read_out("new.raw")
    sel, edited = sandbox.read_out("selection_before.raw"), sandbox.read_out("selection_after.raw")
    assert sandbox.read_out("src_after.raw") == src_before
    changed = 0
    for y in range(new["height"]):
        for x in range(new["width"]):
            ix, iy = x + new["x"], y + new["y"]
            before = _pixel(src_before, LAYER["width"], ix - LAYER["x"], iy - LAYER["y"])
            after = _pixel(new_px, new["width"], x, y)
            changed += after != before
            if not (sel[iy * W + ix] or edited[iy * W + ix]):  # outside the selection and the op's mask
                assert after == before, f"pixel {(ix, iy)} outside the edit changed: {before} -> {after}"
    assert changed > 100


def test_model_missing_is_a_clear_error_and_image_unchanged(sandbox, backend):
    report = sandbox.run_driver(_case("plug-in-layeredit-replace", args={"prompt": "a red ball"}))
    assert report.get("driver_error") is None, report["driver_error"]
    assert report["status"] == "execution-error"
    assert "model_missing" in report["error"] and "install.py" in report["error"], report["error"]
    assert [entry["name"] for entry in report["layers"]] == ["src"]
    assert sandbox.read_out("src_after.raw") == sandbox.read_out("src_before.raw")


def test_no_selection_and_no_backend_messages(sandbox):
    report = sandbox.run_driver(_case("plug-in-layeredit-erase", selection=None))
    assert report["status"] == "execution-error"
    assert "no_selection" in report["error"] and "select roughly around the object" in report["error"]
    assert [entry["name"] for entry in report["layers"]] == ["src"]
    report = sandbox.run_driver(_case("plug-in-layeredit-erase"))  # no backend runs, and none can be started
    assert report["status"] == "execution-error" and "no_backend" in report["error"], report["error"]
    assert [entry["name"] for entry in report["layers"]] == ["src"]


def test_procedures_registered_from_schemas(sandbox):
    report = sandbox.run_driver(_case("plug-in-layeredit-replace", selection=None))
    args = report["arguments"]
    assert args[:3] == ["run-mode", "image", "drawables"]
    assert {"select-mask", "extra-params"} <= set(args)
    snapshot = sandbox.plugins_dir / "layeredit" / "schemas.json"
    if snapshot.exists():  # the installer asked the venv: every replace param is a PDB argument
        ops = {o["name"]: o for o in json.loads(snapshot.read_text())}
        wanted = {p["name"].replace("_", "-") for p in ops["replace"]["params"]}
        assert wanted <= set(args)


def test_interactive_dialog_from_schemas_then_job(sandbox, backend, xvfb_server):
    """The full GIMP on the session's Xvfb, run-mode INTERACTIVE: the GimpUi dialog is built from the op's
    schema (basic fields up front, advanced ones folded), OK runs the job, the result is a new layer."""
    report = sandbox.run_driver(
        {**_case("plug-in-layeredit-erase"), "interactive": True}, gui=True, display=xvfb_server
    )
    assert report["status"] == "success", f"{report.get('error')}\n{report['log'][-3000:]}"
    assert [entry["name"] for entry in report["layers"]] == ["Erase", "src"]
    dialog = json.loads((sandbox.out_dir / "dialog.json").read_text())
    assert dialog["title"] == "AI Edit: Erase"
    labels = dialog["labels"]
    assert "OK" in labels and "Select the snapped object" in labels
    assert not any("JSON" in label or "Extra params" in label for label in labels)  # scripts only
    ops = {o["name"]: o for o in json.loads((sandbox.plugins_dir / "layeredit" / "schemas.json").read_text())}
    params = ops["erase"]["params"]
    basic = [
        p for p in params if not p.get("advanced") and p["type"] != "float"
    ]  # spin scales draw their own label
    for p in basic:
        assert p["name"].replace("_", " ").capitalize() in labels, (p["name"], labels)
    if any(p.get("advanced") for p in params):
        assert "expander:Advanced" in labels
        folded = labels[labels.index("expander:Advanced") :]
        assert all(
            p["name"].replace("_", " ").capitalize() in folded
            for p in params
            if p.get("advanced") and p["type"] != "float"
        )


def _plugin_pids(sandbox: GimpSandbox) -> list[int]:
    """This sandbox's layeredit plug-in processes (the chroot shares our PID namespace; the sandbox's own
    LE_OUT in the environment tells them from any other GIMP running at the same time)."""
    marker = f"LE_OUT={sandbox.inner}/out".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(arg.endswith(b"layeredit/layeredit.py") for arg in cmdline) and marker in environ:
                pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def _plugin_running_a_slow_job(sandbox, tmp_path):
    """The slow backend (tests/hosts/gimp/slow_backend.py), the plug-in running Erase on it in real GIMP (in a
    thread), and a client with the plug-in's token; yields once the job runs: (backend, client, GIMP's report
    as it will be filled in, the runner thread)."""
    from protocol import connection
    from protocol.client import Client

    proc = _start_backend(
        sandbox,
        tmp_path,
        [str(VENV_PYTHON), str(Path(__file__).parent / "hosts" / "gimp" / "slow_backend.py")],
    )
    result: dict = {}
    runner = threading.Thread(
        target=lambda: result.update(sandbox.run_driver(_case("plug-in-layeredit-erase")))
    )
    runner.start()
    try:
        client = Client(  # the plug-in's token: the backend lists only a client's own jobs
            connection.read(sandbox.runtime_dir / "backend.json"), token=sandbox.client_token
        )
        deadline = time.monotonic() + 120
        while not [j for j in client.jobs() if j["state"] == "running"]:
            assert time.monotonic() < deadline and runner.is_alive(), result
            time.sleep(0.2)
        try:
            yield proc, client, result, runner
        finally:
            client.close()
    finally:
        runner.join(180)
        _stop(proc)


def test_a_ping_the_backends_guard_cut_unread_is_resent_and_no_second_backend_starts(sandbox, tmp_path):
    """The backend's guard cuts the plug-in's first connection with its signed ping unread (as past 64 hosts at
    once, or during a flood): the plug-in resends it on a fresh connection and erases on the running backend.
    Before, its connect said "Nothing answers" after 5 s and it started a second backend beside this one."""
    from protocol import connection

    slow = str(Path(__file__).parent / "hosts" / "gimp" / "slow_backend.py")
    proc = _start_backend(sandbox, tmp_path, [str(VENV_PYTHON), slow, "--echo", "--drop-first", "1"])
    try:
        report = sandbox.run_driver(_case("plug-in-layeredit-erase"))
        named = connection.read(sandbox.runtime_dir / "backend.json").pid
    finally:
        _stop(proc)
    if named != proc.pid:  # a backend the plug-in started (main): do not leave it running
        os.kill(named, signal.SIGTERM)
    assert "DropFirst: cut a connection" in (tmp_path / "backend.log").read_text(errors="replace")
    assert named == proc.pid  # no second backend
    assert report["status"] == "success", f"{report.get('error')}\n{report['log'][-3000:]}"
    assert [entry["name"] for entry in report["layers"]] == ["Erase", "src"]


def test_killing_the_plugin_cancels_the_backend_job(sandbox, tmp_path):
    """GIMP's progress-bar cancel kills the plug-in process; its cancel guard must cancel the job."""
    with _plugin_running_a_slow_job(sandbox, tmp_path) as (_proc, client, result, runner):
        pids = _plugin_pids(sandbox)
        assert pids, "the plug-in process was not found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)  # what GIMP does on cancel
        deadline = time.monotonic() + 120
        (job,) = client.jobs()
        while job["state"] not in ("cancelled", "done", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
            (job,) = client.jobs()
        assert job["state"] == "cancelled", job
        assert job["progress"]["step"] < 1200
        runner.join(120)
        assert result["status"] == "calling-error"  # GIMP reports the killed plug-in
        assert [entry["name"] for entry in result["layers"]] == ["src"]  # and the image is as it was


def test_backend_dying_mid_job_is_a_clear_error(sandbox, tmp_path):
    """The backend killed while the job runs: GIMP gets backend_gone with what to do, the image is as it was."""
    with _plugin_running_a_slow_job(sandbox, tmp_path) as (proc, _client, result, runner):
        proc.kill()
        runner.join(120)
        assert result["status"] == "execution-error", f"{result.get('error')}\n{result['log'][-3000:]}"
        assert "backend_gone" in result["error"] and "python -m backend serve" in result["error"], result[
            "error"
        ]
        assert [entry["name"] for entry in result["layers"]] == ["src"]
        assert sandbox.read_out("src_after.raw") == sandbox.read_out("src_before.raw")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))


def test_a_rough_lasso_around_the_coffee_spoon_snaps_to_the_whole_spoon_in_gimp(sandbox, backend):
    """examples/coffee.png with the shipped rough lasso as GIMP's selection, Erase with the default snap
    (embedded: no models installed) and default grow and feather; select-mask selects the whole spoon, handle
    included (the snapped object, not the wider region erase repainted)."""
    from bench.realphoto import coffee_spoon, spoon_checks

    image, lasso, _, _, _ = coffee_spoon()
    h, w = lasso.shape
    rgba = np.dstack([image, np.full((h, w), 255, np.uint8)])
    (sandbox.out_dir / "layer.raw").write_bytes(np.ascontiguousarray(rgba).tobytes())
    (sandbox.out_dir / "selection.raw").write_bytes(np.ascontiguousarray(lasso).tobytes())
    case = {
        "image": {"width": w, "height": h},
        "layer": {"width": w, "height": h, "x": 0, "y": 0, "pixels_file": "layer.raw"},
        "selection": {"shape": "mask", "file": "selection.raw"},
        "procedure": "plug-in-layeredit-erase",
        "args": {"select-mask": True},
    }
    report = sandbox.run_driver(case)
    assert report.get("driver_error") is None, report["driver_error"]
    assert report["status"] == "success", f"{report.get('error')}\n{report['log'][-3000:]}"
    assert sandbox.read_out("src_after.raw") == sandbox.read_out("src_before.raw")  # the source is untouched
    sel_before = np.frombuffer(sandbox.read_out("selection_before.raw"), np.uint8).reshape(h, w)
    assert (sel_before > 127).sum() == (lasso > 127).sum()  # the lasso arrived as drawn
    selected = np.frombuffer(sandbox.read_out("selection_after.raw"), np.uint8).reshape(h, w)
    _region, obj = _returned_masks(sandbox, w, h)
    assert np.array_equal(selected, obj)  # the object the backend returned, soft edge values included
    snapped = selected > 127
    got = spoon_checks(snapped)
    # IoU > 0.9 as in-process and in Krita. (Until 12:10 on 2026-11-28 GIMP's selection was the mask brightened
    # like a linear -> sRGB conversion, the mask > 54 of 255: the plug-in wrote its temporary channel, which is
    # "Y' u8" in 8-bit non-linear images, as "Y u8", and select_item copies the stored values. Fixed in gimpio.)
    assert got["iou"] > 0.9 and got["tip"] > 0.9 and got["neck"] > 0.8 and got["spill"] < 0.02, got
    # the handle's middle too, where it runs along the cup the colour of the saucer: tip and bowl in one piece
    assert got["middle"] > 0.8 and got["whole"] == 1.0, got
    # the layer is the README quick start's result, byte for byte (until 2026-11-28 ~5,000 pixels differed: the
    # region sent was narrower than erase's fill crop; tests/test_hostkit_region.py has the in-process twin)
    (layer,) = [entry for entry in report["layers"] if entry["name"] == "Erase"]
    x, y, lw, lh = layer["x"], layer["y"], layer["width"], layer["height"]
    after = rgba.copy()  # the new layer over the source, as the user sees it
    after[y : y + lh, x : x + lw] = np.frombuffer(sandbox.read_out("new.raw"), np.uint8).reshape(lh, lw, 4)
    differ = int((after[:, :, :3] != _cli_erase_coffee(sandbox.out_dir)).any(axis=2).sum())
    assert differ == 0 and (after[:, :, 3] == 255).all(), f"{differ} pixels differ from the CLI's; {layer}"


def _cli_erase_coffee(tmp: Path) -> np.ndarray:
    """``python -m backend erase examples/coffee.png --selection examples/coffee-spoon-selection.png`` as RGB."""
    import cv2

    from backend.cli import main as cli_main

    root = Path(__file__).resolve().parents[1] / "examples"
    out = tmp / "cli-coffee.png"
    args = ["erase", str(root / "coffee.png"), "--selection", str(root / "coffee-spoon-selection.png")]
    assert cli_main([*args, "--out", str(out), "--quiet"]) == 0
    return cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)

"""Screenshots of the GIMP plug-in for docs/images, from a real GIMP 3 on an Xvfb display (not a test).

    flock /work/hosts.lock .venv/bin/python -m tests.hosts.gimp.shots docs/images

Needs the chroot of tests/hosts/gimp/setup.sh (root), Xvfb and xdotool (apt) on this machine. GIMP (in the
chroot) reaches the Xvfb of tests/hosts/xvfb.py through its abstract socket. The backend
runs outside the chroot with an empty models folder, so the Erase dialog shows the install hint under Fill.
It opens examples/coffee.png, selects the rough lasso around the spoon, then: opens Filters > AI Edit (shot),
runs Select object and then Erase (with "Select the snapped object" ticked) interactively (the plug-in's test
hook saves each dialog as a PNG and presses OK) and shoots the window after each: the snapped selection's
marching ants, then the erased layer with the spoon selected.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageGrab

from tests.hosts import xvfb
from tests.hosts.gimp.harness import GIMP_GUI, PROJECT, GimpSandbox

SIZE = (1280, 860)

BATCH = """
import os, time
from gi.repository import Gegl, Gimp, Gio
OUT = {out!r}
def wait(name, limit=180):
    t = time.time()
    while not os.path.exists(os.path.join(OUT, name)) and time.time() - t < limit:
        time.sleep(0.2)
def mark(name):
    open(os.path.join(OUT, name), "w").close()
def rough():
    ch = Gimp.Channel.new(img, "lasso", 600, 400, 100.0, Gegl.Color.new("black"))
    img.insert_channel(ch, None, 0)
    buf = ch.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, 600, 400), "Y u8", open(os.path.join(OUT, "lasso.raw"), "rb").read())
    buf.flush()
    img.select_item(Gimp.ChannelOps.REPLACE, ch)
    img.remove_channel(ch)
def run(name, select_mask=False):
    proc = Gimp.get_pdb().lookup_procedure(name)
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
    cfg.set_property("image", img)
    cfg.set_core_object_array("drawables", [src])
    if select_mask:  # "Select the snapped object" ticked in the dialog
        cfg.set_property("select-mask", True)
    return proc.run(cfg).index(0)
def save_selection(name):
    sel = img.get_selection().get_buffer().get(Gegl.Rectangle.new(0, 0, 600, 400), 1.0, "Y u8", Gegl.AbyssPolicy.NONE)
    open(os.path.join(OUT, name), "wb").write(bytes(sel))
img = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(os.path.join(OUT, "coffee.png")))
src = img.get_layers()[0]
src.set_name("coffee")
src.add_alpha()
rough()
Gimp.Display.new(img)
Gimp.displays_flush()
mark("ready")
wait("menu-done")
print("select:", run("plug-in-layeredit-snap"))
save_selection("selection_after.raw")
Gimp.displays_flush()
mark("selected")
wait("shot-done")
rough()
print("erase:", run("plug-in-layeredit-erase", select_mask=True))
save_selection("selection_after_erase.raw")
Gimp.displays_flush()
mark("erased")
wait("erase-shot-done")
"""


def start_backend(box: GimpSandbox, models: Path) -> subprocess.Popen:
    env = dict(os.environ, LAYEREDIT_RUNTIME_DIR=str(box.runtime_dir), LAYEREDIT_MODELS=str(models))
    proc = subprocess.Popen(
        [str(PROJECT / ".venv" / "bin" / "python"), "-m", "backend", "serve"],
        cwd=PROJECT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (box.runtime_dir / "backend.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the backend did not start")
        time.sleep(0.2)
    return proc


def main(argv: list[str]) -> int:
    dest = Path(argv[0] if argv else "docs/images")
    dest.mkdir(parents=True, exist_ok=True)
    server = xvfb.start(f"{SIZE[0]}x{SIZE[1]}x24")
    display = server.number
    box = GimpSandbox.create()
    backend = None
    gimp = None
    try:
        shutil.copy(PROJECT / "examples" / "coffee.png", box.out_dir / "coffee.png")
        lasso = np.array(Image.open(PROJECT / "examples" / "coffee-spoon-selection.png").convert("L"))
        (box.out_dir / "lasso.raw").write_bytes(lasso.tobytes())
        backend = start_backend(box, box.host_path / "no-models")
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": f"{box.inner}/home",
            "XDG_CONFIG_HOME": f"{box.inner}/home/.config",
            "LAYEREDIT_RUNTIME_DIR": f"{box.inner}/run",
            "LAYEREDIT_DIALOG_REPORT": f"{box.inner}/out/dialog-{{op}}.json",
            "LANG": "C.UTF-8",
            "DISPLAY": f":{display}",
        }
        cmd = ["chroot", str(box.root), "env", "-i", *(f"{k}={v}" for k, v in env.items())]
        cmd += [
            "timeout",
            "400",
            GIMP_GUI,
            "-n",
            "--no-splash",
            "--batch-interpreter=python-fu-eval",
            "-b",
            "-",
        ]
        cmd += ["--quit"]
        log = open(box.out_dir / "gimp-shots.log", "wb")
        gimp = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
        gimp.stdin.write(BATCH.format(out=f"{box.inner}/out").encode())
        gimp.stdin.close()
        xenv = dict(os.environ, DISPLAY=f":{display}")

        def wait(name: str) -> None:
            deadline = time.monotonic() + 300
            while not (box.out_dir / name).exists():
                if gimp.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((box.out_dir / "gimp-shots.log").read_text(errors="replace")[-4000:])
                time.sleep(0.3)
            time.sleep(2.0)  # let GIMP finish drawing (a screenshot, not a synchronisation)

        def shot(name: str) -> None:
            image = ImageGrab.grab(xdisplay=f":{display}")
            ys, xs = np.nonzero(np.asarray(image.convert("L")) > 0)  # GIMP's window: the rest is black
            window = image.crop((0, 0, int(xs.max()) + 1, int(ys.max()) + 1))
            window.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(dest / name)
            print("wrote", dest / name)

        wait("ready")
        subprocess.run(["xdotool", "mousemove", str(SIZE[0] - 5), str(SIZE[1] - 5)], env=xenv, check=True)
        subprocess.run(["xdotool", "key", "alt+r"], env=xenv, check=True)
        time.sleep(1.0)
        subprocess.run(["xdotool", "key", "Up"], env=xenv, check=True)
        subprocess.run(["xdotool", "key", "Right"], env=xenv, check=True)
        time.sleep(1.0)
        shot("gimp-menu-ai-edit.png")
        subprocess.run(["xdotool", "key", "Escape", "Escape", "Escape"], env=xenv, check=True)
        time.sleep(0.5)
        subprocess.run(
            ["xdotool", "key", "alt+s"], env=xenv, check=True
        )  # Select: Select object under Modify
        time.sleep(1.0)
        shot("gimp-menu-select.png")
        subprocess.run(["xdotool", "key", "Escape", "Escape"], env=xenv, check=True)
        (box.out_dir / "menu-done").write_text("")
        wait("selected")
        # the pointer off the canvas: the paintbrush's outline (a dashed circle) would pass for a selection
        subprocess.run(["xdotool", "mousemove", str(SIZE[0] - 5), str(SIZE[1] - 5)], env=xenv, check=True)
        time.sleep(2.0)
        shot("gimp-select-object-result.png")
        snapped = np.frombuffer((box.out_dir / "selection_after.raw").read_bytes(), np.uint8).reshape(
            400, 600
        )
        print(f"GIMP's selection after Select object: {int((snapped > 127).sum())} px selected")
        (box.out_dir / "shot-done").write_text("")
        wait("erased")  # Erase with "Select the snapped object": a new layer, the spoon selected
        subprocess.run(["xdotool", "mousemove", str(SIZE[0] - 5), str(SIZE[1] - 5)], env=xenv, check=True)
        time.sleep(2.0)
        shot("gimp-erase-snapped-selection.png")
        erased = np.frombuffer((box.out_dir / "selection_after_erase.raw").read_bytes(), np.uint8)
        print(f"GIMP's selection after Erase: {int((erased > 127).sum())} px selected")
        (box.out_dir / "erase-shot-done").write_text("")
        gimp.wait(300)
        for op in ("erase", "snap"):
            png = box.out_dir / f"dialog-{op}.png"
            if png.exists():
                name = f"gimp-dialog-{'select-object' if op == 'snap' else op}.png"
                shutil.copy(png, dest / name)
                print("wrote", dest / name)
            else:
                print("no dialog screenshot for", op, file=sys.stderr)
    finally:
        if gimp is not None and gimp.poll() is None:
            gimp.kill()
        if backend is not None:
            backend.terminate()
            backend.wait(30)
        server.stop()
        box.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

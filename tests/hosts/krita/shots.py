"""Screenshots of the Krita docker for docs/images, from a real Krita 5.1 under Xvfb (not a test).

    flock /work/hosts.lock .venv/bin/python -m tests.hosts.krita.shots docs/images

Select object, then Erase with "Select the snapped object afterwards", on examples/coffee.png with a rough box
around the spoon, through the docker's own widgets (the scripted hook of krita_plugin/layeredit/scripted.py): the
docker and Krita's window with the snapped selection, and the window after Erase (new layer, the spoon selected).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from tests.hosts.krita import harness

ROUGH_BOX = (300, 45, 150, 310)  # x, y, w, h: loosely around the spoon in examples/coffee.png


def _shoot(work: Path, bgra: np.ndarray, **fields: object) -> dict:
    """One scripted Krita run on examples/coffee.png with the rough box as the selection; its report."""
    h, w = bgra.shape[:2]
    work.mkdir(parents=True, exist_ok=True)
    (work / "layer.raw").write_bytes(np.ascontiguousarray(bgra).tobytes())
    spec = {
        "width": w,
        "height": h,
        "layer_raw": str(work / "layer.raw"),
        "layer_rect": [0, 0, w, h],
        "selection": list(ROUGH_BOX),
        "screenshot": True,
        **fields,
    }
    backend = harness.start_backend(work)
    try:
        report = harness.run_krita(work, spec, backend)
    finally:
        backend.stop()
    print(report["outcome"])
    return report


def main(argv: list[str]) -> int:
    dest = Path(argv[0] if argv else "docs/images")
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="krita-shots-"))
    rgb = np.array(Image.open(harness.ROOT / "examples" / "coffee.png").convert("RGB"))
    h, w = rgb.shape[:2]
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((h, w, 1), 255, np.uint8)], axis=-1)
    runs = [
        ("select", {"mode": "Select object"}, "docker.png", "krita-docker-select-object.png"),
        ("select", {}, "window.png", "krita-select-object.png"),
        # Erase with "Select the snapped object afterwards": the new layer, and the ants round the spoon
        (
            "erase",
            {"mode": "Erase", "set_selection": True},
            "window.png",
            "krita-erase-snapped-selection.png",
        ),
    ]
    done: dict[str, Path] = {}
    for key, fields, name, target in runs:
        if key not in done:
            _shoot(work / key, bgra, **fields)
            done[key] = work / key / "out"
            sel = done[key] / "selection_after.raw"
            if sel.exists():
                selected = np.frombuffer(sel.read_bytes(), np.uint8).reshape(h, w)
                print(f"{key}: Krita's selection after: {int((selected > 127).sum())} px selected")
        if (done[key] / name).exists():  # 256 colours, as the GIMP shots: a third of the bytes
            shot = Image.open(done[key] / name).convert("RGB")
            shot.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(dest / target)
            print("wrote", dest / target)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

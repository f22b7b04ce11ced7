"""Screenshots of the Krita docker for docs/images, from a real Krita 5.1 under Xvfb (not a test).

    flock /work/hosts.lock .venv/bin/python -m tests.hosts.krita.shots docs/images

Select object on examples/coffee.png with a rough box around the spoon, through the docker's own widgets (the
scripted hook of krita_plugin/layeredit/scripted.py): the docker and Krita's window with the snapped selection.
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


def main(argv: list[str]) -> int:
    dest = Path(argv[0] if argv else "docs/images")
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="krita-shots-"))
    rgb = np.array(Image.open(harness.ROOT / "examples" / "coffee.png").convert("RGB"))
    h, w = rgb.shape[:2]
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((h, w, 1), 255, np.uint8)], axis=-1)
    (work / "layer.raw").write_bytes(np.ascontiguousarray(bgra).tobytes())
    spec = {
        "width": w,
        "height": h,
        "layer_raw": str(work / "layer.raw"),
        "layer_rect": [0, 0, w, h],
        "selection": list(ROUGH_BOX),
        "mode": "Select object",
        "screenshot": True,
    }
    backend = harness.start_backend(work)
    try:
        report = harness.run_krita(work, spec, backend)
    finally:
        backend.stop()
    print(report["outcome"])
    for name, target in (
        ("docker.png", "krita-docker-select-object.png"),
        ("window.png", "krita-select-object.png"),
    ):
        if (work / "out" / name).exists():
            shutil.copy(work / "out" / name, dest / target)
            print("wrote", dest / target)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

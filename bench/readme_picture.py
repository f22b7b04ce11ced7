"""The README's picture, from a real run of its quick-start command (the embedded default, no downloads).

Runs ``python -m backend erase examples/coffee.png --selection examples/coffee-spoon-selection.png ...`` as a
user would, then lays out three panels: the rough selection over the photo, the snapped object mask over the
photo, and the erased result. Writes docs/images/coffee-erase.jpg (and the full-size result next to it as PNG
under /tmp for looking closely).

    .venv/bin/python -m bench.readme_picture
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _overlay(photo: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """The photo with ``mask`` tinted and outlined (BGR)."""
    m = mask > 127
    out = photo.copy()
    out[m] = (0.55 * out[m] + 0.45 * np.array(colour)).astype(np.uint8)
    edge = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[edge] = colour
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out, mask = Path(tmp) / "coffee-erased.png", Path(tmp) / "spoon-mask.png"
        cmd = [
            sys.executable,
            "-m",
            "backend",
            "erase",
            "examples/coffee.png",
            "--selection",
            "examples/coffee-spoon-selection.png",
            "--out",
            str(out),
            "--mask-out",
            str(mask),
            "--quiet",
        ]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
        report = json.loads(done.stdout.strip().splitlines()[-1])
        photo = cv2.imread(str(ROOT / "examples" / "coffee.png"), cv2.IMREAD_COLOR)
        selection = cv2.imread(str(ROOT / "examples" / "coffee-spoon-selection.png"), cv2.IMREAD_GRAYSCALE)
        snapped = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
        result = cv2.imread(str(out), cv2.IMREAD_COLOR)
        cv2.imwrite("/tmp/coffee-erased-readme.png", result)
    panels = [_overlay(photo, selection, (255, 160, 0)), _overlay(photo, snapped, (60, 60, 255)), result]
    labels = [
        "rough selection",
        f"snapped ({report['meta']['snap']['method']})",
        f"erased ({report['meta']['fill']})",
    ]
    for panel, label in zip(panels, labels, strict=True):
        cv2.putText(panel, label, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(panel, label, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
    gap = np.full((photo.shape[0], 8, 3), 255, np.uint8)
    sheet = np.hstack([panels[0], gap, panels[1], gap, panels[2]])
    target = ROOT / "docs" / "images" / "coffee-erase.jpg"
    cv2.imwrite(str(target), sheet, [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(json.dumps({"written": str(target.relative_to(ROOT)), "meta": report["meta"]}))


if __name__ == "__main__":
    main()

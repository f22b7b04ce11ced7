"""What raising erase's ``grow`` does to the edge-aware region, and what it costs (review 7 finding 2, day 8).

The help says to raise grow "to swallow its edge and shadow fringe". Four figures per grow, all from
``pipeline_erase._region_weights``, the function erase calls:

- a shadow fringe is taken: a bar with an 8 px cast shadow, and a line (or a patch) of the shadow's colour
  nearby that does not touch it (review 7's scene): shadow pixels taken, of 960;
- a thin neighbour is not bitten: white cup pixels (R+G+B > 600) the region takes outside the snapped spoon on
  the README's coffee (the snap is the shipped embedded one);
- the coffee spoon's own soft shadow (day 9, shadow9's finding): how many levels darker than the lit saucer the
  photo is 1-3 px outside the region right of the bowl (``bowl_shadow_ring``): the ring an erase leaves
  tracing the bowl, whatever the fill does inside (0 would be none);
- the cost: CPU s of the rule on review 7's 1200x1000 px ellipse on a textured 1600^2 layer, best of
  ``--repeats`` after a warm call, next to the plain disk growth at the same grow (the ratio is the figure: the
  machine is shared and absolute times are noisy).

    OMP_NUM_THREADS=1 flock /work/heavy.lock .venv/bin/python -m bench.region_grow
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GROWS = (6, 12, 20, 30)


def shadow_scene(beside: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Review 7's scene: a dark bar (40:160, 100:110) with an 8 px cast shadow on its right, on a light surface,
    and a line 10 px past the bar's end (``"line"``) or a patch beyond its top (``"patch"``) of the shadow's
    colour. Returns image, bar, shadow."""
    rng = np.random.default_rng(0)
    h, w = 200, 220
    img = np.full((h, w, 3), (200, 190, 170), np.float32) + rng.normal(0, 2, (h, w, 3))
    obj = np.zeros((h, w), bool)
    obj[40:160, 100:110] = True
    shadow = np.zeros((h, w), bool)
    shadow[44:164, 110:118] = True
    dark = (110, 104, 94)
    img[shadow] = dark
    if beside == "line":
        img[170:176, 60:200] = dark
    elif beside == "patch":
        img[20:34, 118:140] = dark
    img[obj] = (80, 80, 85)
    return np.clip(img, 0, 255).astype(np.uint8), obj, shadow


def textured_ellipse() -> tuple[np.ndarray, np.ndarray]:
    """Review 7's cost scene: a 1200x1000 px ellipse on a 1600^2 layer of stripes and noise (sigma 12)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:1600, :1600]
    img = np.dstack([120 + 40 * np.sin(xx / 7.0), 90 + 30 * np.cos(yy / 5.0), 60 + 0 * xx])
    img = np.clip(img + rng.normal(0, 12, (1600, 1600, 3)), 0, 255).astype(np.uint8)
    obj = ((yy - 800) / 600.0) ** 2 + ((xx - 800) / 500.0) ** 2 <= 1
    img[obj] = (200, 200, 210)
    return img, obj


def coffee_spoon() -> tuple[np.ndarray, np.ndarray]:
    """The README's coffee and its spoon snapped as erase snaps it (embedded snap, default parameters)."""
    from PIL import Image

    from backend.params.erase import EraseParams
    from backend.snapping import SnapPipeline

    img = np.asarray(Image.open(ROOT / "examples/coffee.png").convert("RGB"))
    sel = np.asarray(Image.open(ROOT / "examples/coffee-spoon-selection.png").convert("L"), np.float32) / 255
    snapped = SnapPipeline.default()(img, sel, EraseParams().snap).mask
    return img, np.asarray(snapped, np.float32)


BOWL_RIGHT = (385, 240, 445, 330)  # photo x0, y0, x1, y1: the saucer right of the spoon's bowl


def bowl_shadow_ring(img: np.ndarray, snapped: np.ndarray, region: np.ndarray) -> float:
    """Levels (mean of RGB, median) by which the photo 1-3 px outside ``region`` is darker than the lit saucer
    22-32 px from the spoon, both within ``BOWL_RIGHT`` and away from the cup: the spoon's own soft shadow,
    ~20 px wide, that a region ending inside it leaves as a ring tracing the bowl."""
    import cv2

    x0, y0, x1, y1 = BOWL_RIGHT
    level = img[y0:y1, x0:x1].astype(np.float64).mean(axis=2)
    spoon = cv2.distanceTransform((snapped[y0:y1, x0:x1] <= 0).astype(np.uint8), cv2.DIST_L2, 5)
    out = cv2.distanceTransform((~region[y0:y1, x0:x1]).astype(np.uint8), cv2.DIST_L2, 5)
    lit = np.median(level[(spoon > 22) & (spoon <= 32)])
    ring = (out > 0) & (out <= 3) & (spoon <= 40)
    return float(lit - np.median(level[ring]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-coffee", action="store_true", help="skip the coffee (it needs the snap model)")
    args = parser.parse_args(argv)
    from backend.erase.pipeline_erase import _region_weights

    print("| grow | " + " | ".join(str(g) for g in GROWS) + " |")
    print("|---" * (len(GROWS) + 1) + "|")
    for beside in ("line", "patch"):
        img, obj, shadow = shadow_scene(beside)
        taken = [
            int(((_region_weights(obj.astype(np.float32), g, 2, img) > 0) & shadow).sum()) for g in GROWS
        ]
        print(
            f"| shadow px taken of {int(shadow.sum())}, {beside} beside | "
            + " | ".join(map(str, taken))
            + " |"
        )
    if not args.no_coffee:
        img, snapped = coffee_spoon()
        white = img.astype(int).sum(axis=2) > 600
        outside = snapped <= 0
        for name, layer in (("edge-aware", img), ("plain growth", None)):
            cells = [
                int(((_region_weights(snapped, g, 2, layer) > 0) & white & outside).sum()) for g in GROWS
            ]
            print(f"| coffee: white cup px taken, {name} | " + " | ".join(map(str, cells)) + " |")
        for name, layer in (("edge-aware", img), ("plain growth", None)):
            cells = [bowl_shadow_ring(img, snapped, _region_weights(snapped, g, 2, layer) > 0) for g in GROWS]
            print(
                f"| coffee: spoon's shadow left right of the bowl, levels, {name} | "
                + " | ".join(f"{v:.1f}" for v in cells)
                + " |"
            )
    img, obj = textured_ellipse()
    mask = obj.astype(np.float32)
    rows: dict[str, list[float]] = {"edge-aware": [], "plain growth": []}
    for g in GROWS:
        for name, layer in (("edge-aware", img), ("plain growth", None)):
            cpu = []
            for _ in range(args.repeats + 1):
                c = time.process_time()
                _region_weights(mask, g, 2, layer)
                cpu.append(time.process_time() - c)
            rows[name].append(min(cpu[1:]))
    for name, cells in rows.items():
        print(f"| 1200 px object, {name}, best CPU s | " + " | ".join(f"{v:.2f}" for v in cells) + " |")
    ratio = [a / b for a, b in zip(rows["edge-aware"], rows["plain growth"], strict=True)]
    print("| edge-aware / plain | " + " | ".join(f"{v:.1f}x" for v in ratio) + " |")


if __name__ == "__main__":
    main()

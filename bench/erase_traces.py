"""How much of the object an erase leaves behind on real photos, the whole path: rough selection -> snap ->
edge-aware region -> fill (day 8).

The fill bench (``bench.erase_fill``) scores fills on hard true/false masks, so it cannot see what the snap's
soft edge and the region rule do to the object's own outline. This bench runs the erase op with its defaults on
the hand-labelled real-photo cases of ``bench.realphoto`` (12 objects x lasso / rectangle / soft brush) and
counts, from the returned region's weights ``w`` (0..1):

- object px left: sum of ``1 - w`` over the labelled object (its uncertain band excluded): pixels of the object
  the erase did not replace;
- fringe px left: the same over the 2 px just outside the label (the object's anti-aliased edge and halo, where a
  ghost outline would show).

Lower is better for both; the region's size is printed for scale (a larger region costs the neighbours).
Two more rows, held apart from the 36's totals (the spoon is one of the issue's held-out objects): the README's
coffee spoon from the shipped lasso and from the Krita docs' rough box (day 9: that box lost the handle's tip).
Compare two trees side by side with ``--against PATH`` (a checkout of another commit, e.g. from ``git archive``).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.erase_traces [--against /tmp/old]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def measure() -> dict[str, dict[str, float]]:
    """Per case: object px left, fringe px left, region px, for the tree this module is imported from."""
    import cv2

    from backend.ops.base import JobContext, OpInputs
    from backend.ops.erase import EraseOp
    from bench.realphoto import load_cases

    rows = {}
    for case in load_cases() + coffee_cases():
        rgb = case.image[:, :, :3] if case.image.ndim == 3 else np.dstack([case.image] * 3)
        layer = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
        params = EraseOp.spec.validate({})
        out = EraseOp().run(OpInputs(np.ascontiguousarray(layer), case.selection), params, JobContext())
        kept = 1.0 - out.mask.astype(np.float64) / 255.0
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        fringe = (cv2.dilate(case.truth.astype(np.uint8), disc) > 0) & ~case.truth & ~case.ignore
        rows[case.name] = {
            "object": float(kept[case.truth & ~case.ignore].sum()),
            "fringe": float(kept[fringe].sum()),
            "region": int((out.mask > 0).sum()),
        }
    return rows


# the README's spoon, held apart from the 36's totals: its shipped lasso and the Krita docs' rough box
# (tests/hosts/krita/shots.py ROUGH_BOX: x 300-450, y 45-355)
COFFEE = ("coffee_spoon/shipped-lasso", "coffee_spoon/docs-box")


def coffee_cases() -> list:
    """The spoon of examples/coffee.png (the held-out label) from the shipped lasso and the docs' rough box."""
    from dataclasses import replace

    from bench.realphoto import coffee_spoon, load_cases

    base = load_cases({"coffee_spoon"})[0]
    _, lasso, _, _, _ = coffee_spoon()
    box = np.zeros(lasso.shape, np.float32)
    box[45:355, 300:450] = 1
    return [
        replace(base, name=COFFEE[0], selection=lasso.astype(np.float32) / 255, kind="lasso"),
        replace(base, name=COFFEE[1], selection=box, kind="rectangle"),
    ]


def _table(rows: dict[str, dict[str, float]], other: dict[str, dict[str, float]] | None) -> None:
    print("| case | object px left | fringe px left | region px |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        if other is None:
            print(f"| {name} | {r['object']:.0f} | {r['fringe']:.0f} | {r['region']} |")
        else:
            o = other[name]
            print(
                f"| {name} | {o['object']:.0f} -> {r['object']:.0f} | {o['fringe']:.0f} -> {r['fringe']:.0f} "
                f"| {o['region']} -> {r['region']} |"
            )
    for key in ("object", "fringe"):
        mine = sum(r[key] for name, r in rows.items() if name not in COFFEE)
        theirs = (
            ""
            if other is None
            else f"{sum(r[key] for name, r in other.items() if name not in COFFEE):.0f} -> "
        )
        print(f"total {key} px left: {theirs}{mine:.0f}  (the 36; the coffee rows apart)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", help="another checkout: its figures first, then this tree's")
    args = parser.parse_args(argv)
    other = None
    if args.against:
        # this file's code, run against the other tree's backend (which need not have this bench)
        code = (
            "import json, runpy, sys; sys.path.insert(0, sys.argv[1]); "
            "print(json.dumps(runpy.run_path(sys.argv[2], run_name='traces')['measure']()))"
        )
        res = subprocess.run(
            [sys.executable, "-c", code, str(Path(args.against).resolve()), __file__],
            capture_output=True,
            text=True,
            check=True,
            cwd=args.against,
        )
        other = json.loads(res.stdout.strip().splitlines()[-1])
    _table(measure(), other)


if __name__ == "__main__":
    main()

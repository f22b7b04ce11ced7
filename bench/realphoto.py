"""Snapping on real photographs: hand-labelled objects in photos that ship with scikit-image.

Unlike bench/erase_replace.py (objects pasted onto photos, a sharp seam), these are objects where they were
photographed: thin parts, dark on dark, soft edges, touching neighbours of similar colour. Labels are polygons
in bench/realphoto_labels.json (how they were made: its "about"). Each object gets a lasso, a rectangle and a
soft brush selection, made from the label with a fixed seed.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.realphoto                   # table + per-case figures
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.realphoto --sheet docs/images/realphoto-snap.jpg
    .venv/bin/python -m bench.realphoto --only moto_seat,camera_tripod --show /tmp/overlays
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.realphoto --loosen 0,4,8,12     # looser selections, side by side

Scores ignore each label's uncertain band and ignore polygons: IoU of the mask thresholded at 0.5, and the
boundary F-score within 2 px (precision: share of the mask's outline within 2 px of the true outline; recall:
the other way round).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

LABELS = Path(__file__).with_name("realphoto_labels.json")
KINDS = ("lasso", "rectangle", "brush")


@dataclass
class Case:
    name: str
    note: str
    image: np.ndarray  # HxWx3 uint8
    truth: np.ndarray  # HxW bool
    ignore: np.ndarray  # HxW bool: not scored by IoU (the uncertain band and the ignore polygons)
    skip: np.ndarray  # HxW bool: the ignore polygons only (boundary F scores the band with a wider tolerance)
    band: float
    selection: np.ndarray  # HxW float32 in [0, 1]
    kind: str


def photo(name: str) -> np.ndarray:
    import skimage.data

    img = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3].astype(np.uint8))


def rasterise(polygons: list, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside any of the polygons (pixel (i, j) has its centre at x=j+0.5, y=i+0.5)."""
    from skimage.draw import polygon

    out = np.zeros(shape, bool)
    for p in polygons:
        p = np.asarray(p, np.float64)
        rr, cc = polygon(p[:, 1] - 0.5, p[:, 0] - 0.5, shape)
        out[rr, cc] = True
    return out


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: int) -> np.ndarray:
    small = rng.standard_normal((max(2, shape[0] // scale), max(2, shape[1] // scale))).astype(np.float32)
    big = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return big / (np.abs(big).max() + 1e-6)


def make_selection(rng: np.random.Generator, obj: np.ndarray, kind: str) -> np.ndarray:
    """A rough user selection around ``obj``; how loose scales with the object's size (a 25 px indicator is
    not lassoed 30 px away). lasso: 0.3-1.7x ``reach`` off the object, wobbly; rectangle: the bounds plus a
    margin; brush: a soft-edged (feathered) sloppy brush that spills over and sometimes bites into the edge."""
    h, w = obj.shape
    ys, xs = np.nonzero(obj)
    size = float(np.sqrt(obj.sum()))
    reach = float(np.clip(size / 4, 6, 22))
    if kind == "rectangle":
        m = int(rng.integers(3, max(4, round(reach * 0.7))))
        sel = np.zeros((h, w), np.float32)
        sel[max(0, ys.min() - m) : ys.max() + m + 1, max(0, xs.min() - m) : xs.max() + m + 1] = 1
        return sel
    outside = cv2.distanceTransform((~obj).astype(np.uint8), cv2.DIST_L2, 5)
    if kind == "lasso":
        wobble = reach * (1 + 0.7 * _smooth_noise(rng, (h, w), 48))
        return (outside <= wobble).astype(np.float32)
    inside = cv2.distanceTransform(obj.astype(np.uint8), cv2.DIST_L2, 5)
    wobble = reach * (0.6 + 0.8 * _smooth_noise(rng, (h, w), 24))
    bite = np.clip(
        reach * 0.25 * _smooth_noise(rng, (h, w), 32), 0, None
    )  # up to a few px inside, here and there
    hard = np.where(obj, inside > bite, outside <= wobble).astype(np.float32)
    soft = cv2.GaussianBlur(hard, (0, 0), max(1.5, reach / 5))  # a soft brush: feathered edge
    return np.clip(soft * 1.6 - 0.3, 0, 1).astype(np.float32)  # solid inside, soft over a few px at the rim


def loosen(case: Case, px: int) -> Case:
    """``case`` with its selection ``px`` px looser, as a user who draws farther off the object: a lasso or a
    soft brush dilated by a disc (the brush keeps its feathered rim, moved out), a rectangle grown by ``px`` on
    every side (still a rectangle)."""
    if px <= 0:
        return case
    shape = cv2.MORPH_RECT if case.kind == "rectangle" else cv2.MORPH_ELLIPSE
    k = cv2.getStructuringElement(shape, (2 * px + 1, 2 * px + 1))
    return replace(case, selection=cv2.dilate(case.selection, k))


def load_cases(only: set[str] | None = None, extra: bool = False) -> list[Case]:
    """The labelled objects x KINDS; ``extra``: the objects marked extra (the issue's held-out spoon) instead."""
    doc = json.loads(LABELS.read_text())
    cases = []
    for i, c in enumerate(doc["cases"]):
        if (only and c["name"] not in only) or (not only and c.get("extra", False) != extra):
            continue
        image = photo(c["photo"])
        shape = image.shape[:2]
        truth = rasterise(c["polygons"], shape)
        edge = truth.astype(np.uint8)
        inside = cv2.distanceTransform(edge, cv2.DIST_L2, 5)
        outside = cv2.distanceTransform(1 - edge, cv2.DIST_L2, 5)
        skip = rasterise(c["ignore"], shape) if c["ignore"] else np.zeros(shape, bool)
        ignore = (np.where(truth, inside, outside) <= c["band"]) | skip
        whole = (
            truth.copy()
        )  # what a user selects around: the spoon's handle middle too (ignored by the scores)
        if "handle_middle" in c:
            strip = np.zeros(shape, np.uint8)
            cv2.polylines(strip, [np.array(c["handle_middle"], np.int32)], False, 1, thickness=5)
            whole |= strip > 0
        for k, kind in enumerate(KINDS):
            rng = np.random.default_rng(1000 + 10 * i + k)
            sel = make_selection(rng, whole, kind)
            cases.append(
                Case(f"{c['name']}/{kind}", c["note"], image, truth, ignore, skip, c["band"], sel, kind)
            )
    return cases


def coffee_spoon() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(examples/coffee.png as RGB u8, the shipped rough lasso examples/coffee-spoon-selection.png as u8, the
    labelled spoon, its handle's tip, the ignored areas) for the spoon tests in every host."""
    root = Path(__file__).resolve().parent.parent / "examples"
    image = cv2.cvtColor(cv2.imread(str(root / "coffee.png")), cv2.COLOR_BGR2RGB)
    lasso = cv2.imread(str(root / "coffee-spoon-selection.png"), cv2.IMREAD_GRAYSCALE)
    spoon = next(c for c in json.loads(LABELS.read_text())["cases"] if c["name"] == "coffee_spoon")
    shape = image.shape[:2]
    bowl, tip = spoon["polygons"]
    return (
        image,
        lasso,
        rasterise([bowl, tip], shape),
        rasterise([tip], shape),
        rasterise(spoon["ignore"], shape),
    )


def spoon_handle_middle() -> np.ndarray:
    """The centre line of the spoon handle's middle, where it runs along the cup as a 4-5 px strip the colour of
    the saucer (the label's 'handle_middle'; ignored by the IoU, too thin to outline to a pixel). bool HxW."""
    spoon = next(c for c in json.loads(LABELS.read_text())["cases"] if c["name"] == "coffee_spoon")
    line = np.zeros((400, 600), np.uint8)  # examples/coffee.png
    cv2.polylines(line, [np.array(spoon["handle_middle"], np.int32)], False, 1)
    return line > 0


def spoon_checks(snapped: np.ndarray) -> dict[str, float]:
    """What the spoon tests assert on a snapped mask (bool HxW): IoU with the spoon, the share of the handle's
    tip, of the neck and of the handle's middle (its centre line along the cup) kept, whether tip and bowl are
    one piece (``whole``: 1.0 or 0.0), and the spill more than 4 px off the spoon (as a share of its area)."""
    _, _, truth, tip, ignore = coffee_spoon()
    keep = ~ignore
    neck = truth.copy()
    neck[:200], neck[245:] = False, False  # where it leaves the cup: 6-10 px wide
    far = ~cv2.dilate(truth.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & keep
    _, pieces = cv2.connectedComponents(snapped.astype(np.uint8), connectivity=8)
    bowl = truth & ~tip & ~ignore
    tip_ids, bowl_ids = set(np.unique(pieces[tip & snapped])), set(np.unique(pieces[bowl & snapped]))
    return {
        "iou": float((snapped & truth & keep).sum() / ((snapped | truth) & keep).sum()),
        "tip": float(snapped[tip].mean()),
        "neck": float(snapped[neck].mean()),
        "middle": float(snapped[spoon_handle_middle()].mean()),
        "whole": float(bool((tip_ids & bowl_ids) - {0})),
        "spill": float((snapped & far).sum() / truth.sum()),
    }


# ---- scores ---------------------------------------------------------------------------------------------


def iou(mask: np.ndarray, case: Case) -> float:
    m, t, keep = mask > 0.5, case.truth, ~case.ignore
    return float((m & t & keep).sum() / max(1, ((m | t) & keep).sum()))


def _outline(b: np.ndarray) -> np.ndarray:
    b8 = b.astype(np.uint8)
    return (b8 - cv2.erode(b8, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)) > 0


def boundary_f(mask: np.ndarray, case: Case, tol: float = 2.0) -> float:
    """F-score of outline pixels matched within ``tol`` px, or within the label's uncertain band where that is
    wider (the clock's motion blur); the ignore polygons are left out."""
    tol = max(tol, case.band)
    pred, true = _outline(mask > 0.5) & ~case.skip, _outline(case.truth) & ~case.skip
    if not pred.any() or not true.any():
        return 0.0
    d_true = cv2.distanceTransform((~true).astype(np.uint8), cv2.DIST_L2, 5)
    d_pred = cv2.distanceTransform((~pred).astype(np.uint8), cv2.DIST_L2, 5)
    precision = float((d_true[pred] <= tol).mean())
    recall = float((d_pred[true] <= tol).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


# ---- methods --------------------------------------------------------------------------------------------


def plain_grabcut(image: np.ndarray, sel: np.ndarray, iterations: int = 5) -> np.ndarray:
    """OpenCV GrabCut at full resolution on the crop around the selection: inside probable foreground, outside
    background. The reference a user would get from any GrabCut tool."""
    seed = sel > 0
    ys, xs = np.nonzero(seed)
    pad = 24
    y0, y1 = max(0, ys.min() - pad), min(seed.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(seed.shape[1], xs.max() + pad + 1)
    gc = np.where(seed[y0:y1, x0:x1], cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    crop = np.ascontiguousarray(image[y0:y1, x0:x1])
    cv2.grabCut(crop, gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    out = np.zeros(seed.shape, np.float32)
    out[y0:y1, x0:x1] = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.float32)
    return out


def methods() -> dict[str, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, str]]]:
    from backend.snapping import SnapParams, SnapPipeline
    from backend.snapping.u2net import U2NetP, find_u2netp

    pipe = SnapPipeline(u2net=U2NetP(threads=1) if find_u2netp() else None)

    def embedded(image: np.ndarray, sel: np.ndarray) -> tuple[np.ndarray, str]:
        out = pipe(image, sel, SnapParams(method="auto"))
        return out.mask, out.method

    return {
        "selection": lambda image, sel: (sel, "selection"),
        "plain GrabCut": lambda image, sel: (plain_grabcut(image, sel), "grabcut"),
        "embedded": embedded,
    }


def run(cases: list[Case], only: Sequence[str] | None = None) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for name, fn in methods().items():
        if only is not None and name not in only:
            continue
        rows[name] = []
        for case in cases:
            t = time.perf_counter()
            mask, picked = fn(case.image, case.selection)
            rows[name].append(
                {
                    "case": case.name,
                    "kind": case.kind,
                    "iou": iou(mask, case),
                    "bf": boundary_f(mask, case),
                    "seconds": time.perf_counter() - t,
                    "picked": picked,
                    "mask": mask,
                }
            )
    return rows


def summary(rows: dict[str, list[dict]]) -> None:
    print(
        f"{'method':<16}{'mean IoU':>9}{'BF 2px':>8}{'min IoU':>9}"
        + "".join(f"{k:>10}" for k in KINDS)
        + f"{'s/snap':>8}"
    )
    for name, rs in rows.items():
        per_kind = [np.mean([r["iou"] for r in rs if r["kind"] == k]) for k in KINDS]
        print(
            f"{name:<16}{np.mean([r['iou'] for r in rs]):>9.3f}{np.mean([r['bf'] for r in rs]):>8.3f}"
            f"{np.min([r['iou'] for r in rs]):>9.3f}"
            + "".join(f"{v:>10.3f}" for v in per_kind)
            + f"{np.mean([r['seconds'] for r in rs]):>8.3f}"
        )
    names = list(rows)
    print("\nper case: IoU / BF" + "".join(f" | {n}" for n in names) + " | embedded picked")
    for i, r0 in enumerate(rows[names[0]]):
        cells = " | ".join(f"{rows[n][i]['iou']:.3f} / {rows[n][i]['bf']:.3f}" for n in names)
        print(f"{r0['case']:<28} {cells} | {rows['embedded'][i]['picked'] if 'embedded' in rows else ''}")


def loosened(cases: list[Case], steps: list[int]) -> None:
    """The embedded snap on every case made 0, 4, 8, ... px looser (``loosen``), side by side: a snap that holds
    only for the selections the bench happened to draw is not one users can rely on (review 5: the seat's
    lasso 8 px looser snapped to the red fender beside it)."""
    rows = {px: run([loosen(c, px) for c in cases], only=("selection", "embedded")) for px in steps}
    print(
        "\nlooser selections, embedded snap (IoU / BF); px = how much looser than the bench's own selection"
    )
    head = f"{'px':>4}{'mean IoU':>10}{'BF 2px':>8}{'min IoU':>9}" + "".join(f"{k:>16}" for k in KINDS)
    print(head + f"{'raw sel. IoU':>14}{'cases < 0.5':>13}")
    for px, r in rows.items():
        emb = r["embedded"]
        kinds = "".join(
            f"{np.mean([x['iou'] for x in emb if x['kind'] == k]):>9.3f} / "
            f"{np.mean([x['bf'] for x in emb if x['kind'] == k]):.3f}"
            for k in KINDS
        )
        print(
            f"{px:>4}{np.mean([x['iou'] for x in emb]):>10.3f}{np.mean([x['bf'] for x in emb]):>8.3f}"
            f"{np.min([x['iou'] for x in emb]):>9.3f}{kinds}"
            f"{np.mean([x['iou'] for x in r['selection']]):>14.3f}{sum(x['iou'] < 0.5 for x in emb):>13d}"
        )
    print("\nper case, embedded IoU / BF (picked) at " + ", ".join(f"+{px}" for px in steps) + " px")
    for i, case in enumerate(cases):
        cells = " | ".join(
            f"{rows[px]['embedded'][i]['iou']:.2f} / {rows[px]['embedded'][i]['bf']:.2f} "
            f"{rows[px]['embedded'][i]['picked']:<14}"
            for px in steps
        )
        print(f"{case.name:<28} {cells}")


def _tile(case: Case, mask: np.ndarray | None, box: tuple[int, int, int, int], size: int = 160) -> np.ndarray:
    x0, y0, x1, y1 = box
    img = case.image[y0:y1, x0:x1].astype(np.float32)
    if mask is not None:
        m = np.clip(mask[y0:y1, x0:x1], 0, 1)[..., None]
        img = img * (0.35 + 0.65 * m) + np.array([0, 60, 160], np.float32) * (1 - m) * 0.35
    img = np.clip(img, 0, 255).astype(np.uint8)
    s = size / max(img.shape[:2])
    img = cv2.resize(
        img,
        (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
        interpolation=cv2.INTER_NEAREST,
    )
    true = cv2.resize(
        _outline(case.truth[y0:y1, x0:x1]).astype(np.uint8),
        (img.shape[1], img.shape[0]),
        interpolation=cv2.INTER_NEAREST,
    )
    out = np.zeros((size, size, 3), np.uint8)
    out[: img.shape[0], : img.shape[1]] = img
    out[: img.shape[0], : img.shape[1]][true > 0] = (60, 255, 60)
    return out


def contact_sheet(cases: list[Case], rows: dict[str, list[dict]], path: str) -> None:
    """One row per object; columns: truth, then per selection kind: the selection, plain GrabCut, embedded."""
    by_obj: dict[str, list[int]] = {}
    for i, c in enumerate(cases):
        by_obj.setdefault(c.name.split("/")[0], []).append(i)
    lines = []
    for idxs in by_obj.values():
        c0 = cases[idxs[0]]
        sel_any = np.any([cases[i].selection > 0 for i in idxs], axis=0) | c0.truth
        ys, xs = np.nonzero(sel_any)
        pad = 6
        box = (max(0, xs.min() - pad), max(0, ys.min() - pad), xs.max() + pad, ys.max() + pad)
        tiles = [_tile(c0, None, box)]
        for i in idxs:
            for name in ("selection", "plain GrabCut", "embedded"):
                tiles.append(_tile(cases[i], rows[name][i]["mask"], box))
        line = np.hstack([np.pad(t, ((2, 2), (2, 2), (0, 0))) for t in tiles])
        label = f"{c0.name.split('/')[0]}   " + "   ".join(
            f"{cases[i].kind}: GrabCut {rows['plain GrabCut'][i]['iou']:.2f}, embedded {rows['embedded'][i]['iou']:.2f}"
            for i in idxs
        )
        bar = np.zeros((18, line.shape[1], 3), np.uint8)
        cv2.putText(bar, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
        lines.append(np.vstack([bar, line]))
    sheet = np.vstack(lines)
    head = np.zeros((20, sheet.shape[1], 3), np.uint8)
    cols = ["photo + true outline"] + [
        f"{k}: {n}" for k in KINDS for n in ("selection", "plain GrabCut", "embedded")
    ]
    for j, t in enumerate(cols):
        cv2.putText(
            head, t, (j * 164 + 4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA
        )
    cv2.imwrite(path, np.vstack([head, sheet])[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])


def measure_speed(repeats: int = 3) -> None:
    """The snap of a ~600 px object on a 4096x4096 RGBA layer (bench/erase_replace.py's big scene): the embedded
    snap against a single GrabCut at the same working resolution, interleaved, wall and CPU seconds (CPU time
    counts both threads of the embedded snap)."""
    from backend.snapping import SnapParams, SnapPipeline
    from backend.snapping.u2net import U2NetP, find_u2netp
    from bench.erase_replace import make_big_scene

    pipe = SnapPipeline(u2net=U2NetP(threads=1) if find_u2netp() else None)
    sc = make_big_scene(object_px=600)
    pipe(sc.image, sc.selection, SnapParams(method="combined"))  # warm up (onnxruntime session, caches)
    times: dict[str, list[tuple[float, float]]] = {"combined": [], "grabcut": []}
    for _ in range(repeats):
        for method in times:
            w, c = time.perf_counter(), time.process_time()
            pipe(sc.image, sc.selection, SnapParams(method=method))
            times[method].append((time.perf_counter() - w, time.process_time() - c))
    for method, ts in times.items():
        wall, cpu = np.median([t[0] for t in ts]), np.median([t[1] for t in ts])
        print(f"{method:<10} wall {wall:.3f} s  cpu {cpu:.3f} s  (median of {repeats})")
    ratio = np.median([a[1] / b[1] for a, b in zip(times["combined"], times["grabcut"], strict=True)])
    print(f"embedded / single GrabCut, CPU time: {ratio:.2f}x")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated object names")
    ap.add_argument("--sheet", help="write a contact sheet (JPEG) here")
    ap.add_argument("--speed", action="store_true", help="only the 4096x4096 layer timing")
    ap.add_argument(
        "--loosen",
        help="comma-separated px (e.g. 0,4,8,12): every selection that much looser, the embedded snap side by side",
    )
    ap.add_argument(
        "--extra", action="store_true", help="with --loosen: the extra objects (the spoon) instead"
    )
    ap.add_argument(
        "--labels",
        help="labels file to use instead (e.g. an older version, for comparison): the truth AND the selections made from it",
    )
    args = ap.parse_args(argv)
    if args.labels:
        global LABELS
        LABELS = Path(args.labels)
    if args.speed:
        measure_speed()
        return
    if args.loosen:
        only = set(args.only.split(",")) if args.only else None
        cases = load_cases(extra=True) if args.extra else load_cases(only)
        loosened(cases, [int(x) for x in args.loosen.split(",")])
        return
    cases = load_cases(set(args.only.split(",")) if args.only else None)
    print(f"{len(cases)} cases ({len(cases) // 3} objects x {', '.join(KINDS)})")
    rows = run(cases)
    summary(rows)
    if not args.only:
        print("\nextra objects (not in the figures above):")
        summary(run(load_cases(extra=True)))
    if args.sheet:
        contact_sheet(cases, rows, args.sheet)
        print(f"contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()

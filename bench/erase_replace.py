"""Erase & Replace benchmark: snapping IoU, fill quality, bit-exactness outside the edit, erase speed.

Scenes are built from real photographs that ship with scikit-image (a dev dependency): an object with a known
mask (a silhouette or a random shape cut out of one photo, sometimes out of the same photo for camouflage) is
pasted onto another photo, so the true object mask and the true background are both known. Each scene gets a
rough selection of one kind: a loose lasso, a rectangle or a sloppy brush.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.erase_replace            # everything
    .venv/bin/python -m bench.erase_replace --only snap,fill,outside,speed

One function per measurement (``measure_*``); a later section may add replace-speed the same way.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

SELECTION_KINDS = ("lasso", "rectangle", "brush")
_BACKGROUNDS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "camera",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "moon",
)
_TEXTURES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


@dataclass
class Scene:
    name: str
    image: np.ndarray  # HxWx3 uint8: the background with the object pasted on
    background: np.ndarray  # HxWx3 uint8: the true background
    object_mask: np.ndarray  # HxW bool: the true object
    selection: np.ndarray  # HxW float32 in [0, 1]: the rough user selection
    kind: str  # lasso | rectangle | brush
    camouflage: bool


def _photo(name: str, size: int = 512) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3].astype(np.uint8)
    h, w = img.shape[:2]
    s = size / min(h, w)
    img = cv2.resize(img, (max(size, round(w * s)), max(size, round(h * s))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img[:size, :size])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]."""
    small = rng.standard_normal((max(2, shape[0] // scale), max(2, shape[1] // scale))).astype(np.float32)
    big = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return big / (np.abs(big).max() + 1e-6)


def _object_shape(rng: np.random.Generator, size: int, variant: int) -> np.ndarray:
    """A bool mask of roughly ``size`` px: horse silhouette, blob, star, or a blob with a thin limb."""
    import skimage.data

    if variant == 0:
        horse = ~skimage.data.horse()
        ys, xs = np.nonzero(horse)
        horse = horse[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.uint8)
        s = size / max(horse.shape)
        return cv2.resize(horse, (round(horse.shape[1] * s), round(horse.shape[0] * s))) > 0
    canvas = np.zeros((size, size), np.uint8)
    c = size // 2
    if variant == 1:  # blob
        yy, xx = np.mgrid[0:size, 0:size]
        r = np.hypot(yy - c, xx - c) / (size / 2)
        return (r + 0.35 * _smooth_noise(rng, (size, size), 24)) < 0.8
    if variant == 2:  # star
        n = int(rng.integers(5, 8))
        ang = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False) + rng.random()
        rad = np.where(np.arange(2 * n) % 2 == 0, 0.48, 0.22) * size
        pts = np.stack([c + rad * np.cos(ang), c + rad * np.sin(ang)], axis=1).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 1)
        return canvas > 0
    # ellipse body with a thin limb (lamp, bird on a stick...)
    cv2.ellipse(
        canvas, (c, int(size * 0.35)), (int(size * 0.3), int(size * 0.22)), rng.random() * 180, 0, 360, 1, -1
    )
    cv2.line(canvas, (c, int(size * 0.5)), (c + int(rng.integers(-20, 20)), size - 4), 1, max(3, size // 40))
    return canvas > 0


def _selection(rng: np.random.Generator, obj: np.ndarray, kind: str) -> np.ndarray:
    h, w = obj.shape
    if kind == "rectangle":
        ys, xs = np.nonzero(obj)
        m = int(rng.integers(4, 16))
        sel = np.zeros((h, w), np.float32)
        sel[max(0, ys.min() - m) : ys.max() + m + 1, max(0, xs.min() - m) : xs.max() + m + 1] = 1
        return sel
    outside = cv2.distanceTransform((~obj).astype(np.uint8), cv2.DIST_L2, 5)
    if kind == "lasso":  # a loose outline, 4-30 px off the object, wobbly
        reach = 17 + 13 * _smooth_noise(rng, (h, w), 64)
        return (outside <= reach).astype(np.float32)
    # sloppy brush: thick strokes that sometimes bite into the object's edge and often spill over
    reach = 10 + 14 * _smooth_noise(rng, (h, w), 24)
    inside = cv2.distanceTransform(obj.astype(np.uint8), cv2.DIST_L2, 5)
    sel = np.where(obj, inside > -reach, outside <= reach)
    return sel.astype(np.float32)


def make_scenes(n: int = 36, seed: int = 0, size: int = 512) -> list[Scene]:
    """``n`` scenes cycling through backgrounds, object shapes, textures and selection kinds."""
    rng = np.random.default_rng(seed)
    photos = {name: _photo(name, size) for name in set(_BACKGROUNDS) | set(_TEXTURES)}
    scenes = []
    for i in range(n):
        bg_name = _BACKGROUNDS[i % len(_BACKGROUNDS)]
        background = photos[bg_name]
        camouflage = (i + i // 12) % 4 == 3
        tex_name = bg_name if camouflage else _TEXTURES[(i * 5 + 1) % len(_TEXTURES)]
        if tex_name == bg_name and not camouflage:
            tex_name = _TEXTURES[(i * 5 + 2) % len(_TEXTURES)]
        obj_size = int(rng.integers(110, 260))
        shape = _object_shape(rng, obj_size, (i + i // 12 + i // 24) % 4)
        oh, ow = shape.shape
        y0, x0 = int(rng.integers(20, size - oh - 20)), int(rng.integers(20, size - ow - 20))
        ty, tx = int(rng.integers(0, size - oh)), int(rng.integers(0, size - ow))
        texture = photos[tex_name][ty : ty + oh, tx : tx + ow]
        obj = np.zeros((size, size), bool)
        obj[y0 : y0 + oh, x0 : x0 + ow] = shape
        image = background.copy()
        image[y0 : y0 + oh, x0 : x0 + ow][shape] = texture[shape]
        kind = SELECTION_KINDS[(i + i // 12) % 3]
        scenes.append(
            Scene(
                name=f"{i:02d}-{bg_name}-{kind}{'-camo' if camouflage else ''}",
                image=image,
                background=background,
                object_mask=obj,
                selection=_selection(rng, obj, kind),
                kind=kind,
                camouflage=camouflage,
            )
        )
    return scenes


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """PSNR (dB, 8-bit scale) of ``a`` vs ``b`` over the pixels in ``where``."""
    diff = a[where].astype(np.float64) - b[where].astype(np.float64)
    mse = float(np.mean(diff**2)) if diff.size else 0.0
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def texture_ratio(filled: np.ndarray, truth: np.ndarray, where: np.ndarray) -> float:
    """Mean gradient magnitude of the fill over that of the true background, inside ``where``.

    1.0 means the fill is as detailed as the real background; blur scores near 0 (PSNR prefers blur, this
    does not); above 1 means invented detail (seams, copied edges).
    """

    def grad(img: np.ndarray) -> np.ndarray:
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))

    inner = cv2.erode(where.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # skip the seam itself
    if not inner.any():
        inner = where
    t = float(grad(truth)[inner].mean())
    return float(grad(filled)[inner].mean()) / t if t > 0 else 1.0


# ---- measurements: one function each, each returns rows and prints its own table ------------------------


def _snap_pipelines() -> dict[str, Callable]:
    from backend.snapping import SnapParams, SnapPipeline
    from backend.snapping.u2net import U2NetP

    pipe = SnapPipeline(u2net=U2NetP(threads=1))
    return {
        method: (lambda image, sel, m=method: pipe(image, sel, SnapParams(method=m)).mask)
        for method in ("none", "grabcut", "u2netp", "combined")
    }


def measure_snap(scenes: list[Scene]) -> dict[str, dict[str, float]]:
    """Snap IoU vs the true object mask, per method and per selection kind; also mean seconds per snap."""
    table: dict[str, dict[str, float]] = {}
    for method, snap in _snap_pipelines().items():
        scores, seconds = [], []
        for sc in scenes:
            t = time.perf_counter()
            mask = snap(sc.image, sc.selection)
            seconds.append(time.perf_counter() - t)
            scores.append(iou(mask, sc.object_mask))
        row = {"mean": float(np.mean(scores)), "min": float(np.min(scores))}
        for kind in SELECTION_KINDS:
            row[kind] = float(np.mean([s for s, sc in zip(scores, scenes, strict=True) if sc.kind == kind]))
        row["camouflaged"] = float(
            np.mean([s for s, sc in zip(scores, scenes, strict=True) if sc.camouflage])
        )
        row["not camouflaged"] = float(
            np.mean([s for s, sc in zip(scores, scenes, strict=True) if not sc.camouflage])
        )
        row["seconds"] = float(np.mean(seconds))
        table[method] = row
    cols = ["mean", "min", *SELECTION_KINDS, "camouflaged", "not camouflaged", "seconds"]
    _print_table("Snap IoU vs the true object mask (method 'none' = the raw selection)", table, cols)
    return table


def measure_snap_big(scenes: list[Scene], sizes: tuple[int, ...] = (600, 1200, 2400)) -> dict:
    """Snap IoU and boundary accuracy on the 4096x4096 layer, where GrabCut runs downscaled (edge refinement)."""
    from backend.snapping import SnapParams, SnapPipeline
    from backend.snapping.u2net import U2NetP

    pipe = SnapPipeline(u2net=U2NetP(threads=1))
    table: dict[str, dict[str, float]] = {}
    for px in sizes:
        sc = make_big_scene(object_px=px)
        t = time.perf_counter()
        mask = pipe(sc.image, sc.selection, SnapParams(method="combined")).mask
        seconds = time.perf_counter() - t
        obj = sc.object_mask.astype(np.uint8)
        kernel = np.ones((15, 15), np.uint8)
        band = (cv2.dilate(obj, kernel) - cv2.erode(obj, kernel)) > 0  # 7 px either side of the true edge
        table[f"{px} px object"] = {
            "IoU": iou(mask, sc.object_mask),
            "edge band accuracy": float(((mask > 0.5) == sc.object_mask)[band].mean()),
            "raw selection IoU": iou(sc.selection, sc.object_mask),
            "seconds": seconds,
        }
    cols = ["IoU", "edge band accuracy", "raw selection IoU", "seconds"]
    _print_table("Snap ('combined') on a 4096x4096 layer", table, cols)
    return table


def measure_fill(
    scenes: list[Scene], fills: tuple[str, ...] = ("auto", "telea", "ns", "clone", "flat")
) -> dict:
    """Erase each scene (snap 'combined' + each fill): PSNR and texture ratio inside the true object, where the
    true background is known, plus the max difference outside the edited region (must be 0) and seconds."""
    from backend.erase import EraseParams, ErasePipeline
    from backend.snapping import SnapPipeline
    from backend.snapping.u2net import U2NetP

    pipe = ErasePipeline(snapper=SnapPipeline(u2net=U2NetP(threads=1)))
    table: dict[str, dict[str, float]] = {}
    for fill in fills:
        p, tex, outside, seconds = [], [], 0, []
        for sc in scenes:
            t = time.perf_counter()
            out = pipe(sc.image, sc.selection, EraseParams(fill=fill))
            seconds.append(time.perf_counter() - t)
            p.append(psnr(out.image, sc.background, sc.object_mask))
            tex.append(texture_ratio(out.image, sc.background, sc.object_mask))
            untouched = out.mask == 0
            outside = max(outside, int(np.abs(out.image[untouched].astype(int) - sc.image[untouched]).max()))
        table[fill] = {
            "PSNR dB": float(np.mean(p)),
            "texture": float(np.mean(tex)),
            "outside max diff": outside,
            "seconds": float(np.mean(seconds)),
        }
    table["(unerased input)"] = {
        "PSNR dB": float(np.mean([psnr(sc.image, sc.background, sc.object_mask) for sc in scenes])),
        "texture": float(np.mean([texture_ratio(sc.image, sc.background, sc.object_mask) for sc in scenes])),
        "outside max diff": 0,
        "seconds": 0.0,
    }
    cols = ["PSNR dB", "texture", "outside max diff", "seconds"]
    _print_table(
        "Erase fill inside the true object vs the true background (texture 1.0 = as detailed)", table, cols
    )
    return table


def measure_snap_gain(scenes: list[Scene], fills: tuple[str, ...] = ("telea", "auto")) -> dict:
    """Fill PSNR inside the true object when erasing the snapped object vs the raw selection (--no-snap)."""
    from backend.erase import EraseParams, ErasePipeline
    from backend.snapping import SnapParams, SnapPipeline
    from backend.snapping.u2net import U2NetP

    pipe = ErasePipeline(snapper=SnapPipeline(u2net=U2NetP(threads=1)))
    table: dict[str, dict[str, float]] = {}
    for fill in fills:
        row = {}
        for label, enabled in (("snapped", True), ("raw selection", False)):
            params = EraseParams(fill=fill, snap=SnapParams(enabled=enabled))
            row[label] = float(
                np.mean(
                    [
                        psnr(pipe(sc.image, sc.selection, params).image, sc.background, sc.object_mask)
                        for sc in scenes
                    ]
                )
            )
        row["gain dB"] = row["snapped"] - row["raw selection"]
        table[fill] = row
    _print_table("Fill PSNR (dB) inside the object: snapped region vs the raw selection", table, list(row))
    return table


def _print_table(title: str, table: dict[str, dict[str, float]], cols: list[str]) -> None:
    print(f"\n{title}")
    print("| method | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(_fmt(row[c]) for c in cols) + " |")


def _fmt(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:.3f}"


def make_big_scene(size: int = 4096, object_px: int = 600, seed: int = 1) -> Scene:
    """A ``size``x``size`` RGBA layer (a photo scaled up) with a ~``object_px`` object and a loose lasso."""
    rng = np.random.default_rng(seed)
    background = cv2.resize(_photo("coffee", 512), (size, size), interpolation=cv2.INTER_CUBIC)
    shape = _object_shape(rng, object_px, 1)
    oh, ow = shape.shape
    y0, x0 = min(size // 3, size - oh - 32), min(size // 2, size - ow - 32)
    texture = cv2.resize(_photo("astronaut", 512), (ow, oh), interpolation=cv2.INTER_CUBIC)
    obj = np.zeros((size, size), bool)
    obj[y0 : y0 + oh, x0 : x0 + ow] = shape
    image = background.copy()
    image[obj] = texture[shape]
    alpha = np.full((size, size, 1), 255, np.uint8)
    return Scene(
        name=f"{size}x{size}-rgba-{object_px}px",
        image=np.concatenate([image, alpha], axis=2),
        background=np.concatenate([background, alpha], axis=2),
        object_mask=obj,
        selection=_selection(rng, obj, "lasso"),
        kind="lasso",
        camouflage=False,
    )


def measure_erase_speed(
    repeats: int = 3,
    cases: tuple[tuple[str, int], ...] = (
        ("auto", 600),
        ("telea", 600),
        ("clone", 600),
        ("auto", 60),
        ("auto", 2400),
    ),
) -> dict:
    """End-to-end erase through the op (EraseOp.run: snapping, fill, composite) on a 4096x4096 RGBA layer with
    an object of the given size (the target case: ~600 px). Reports the first call in the process (cold: the
    u2netp session may be created) and the best of ``repeats``, with a per-stage split of the best run taken
    from the op's progress events."""
    from backend.ops.base import JobContext, OpInputs
    from backend.ops.erase import EraseOp

    scenes: dict[int, Scene] = {}
    table: dict[str, dict[str, float]] = {}
    for fill, px in cases:
        scene = scenes.setdefault(px, make_big_scene(object_px=px))
        times, stages = [], {}
        for _ in range(repeats):
            marks: list[tuple[str, float]] = []
            ctx = JobContext(
                progress_fn=lambda stage, i, n, p, m=marks: m.append((stage, time.perf_counter()))
            )
            params = EraseOp.spec.validate({"fill": fill})
            t0 = time.perf_counter()
            res = EraseOp().run(OpInputs(scene.image, scene.selection), params, ctx)
            total = time.perf_counter() - t0
            if not times or total < min(times):
                stages = _stage_split(t0, marks)
            times.append(total)
        outside = res.mask == 0
        assert res.image[outside].tobytes() == scene.image[outside].tobytes()
        table[f"{fill}, {px} px object"] = {"cold s": times[0], "warm s": min(times), **stages}
    cols = ["cold s", "warm s", "snap s", "fill s", "composite s"]
    _print_table(
        "Erase end to end via the op on a 4096x4096 RGBA u8 layer (target <= 2 s at 600 px)", table, cols
    )
    return table


def _stage_split(t0: float, marks: list[tuple[str, float]]) -> dict[str, float]:
    """Seconds spent from each stage's first progress event to the next stage's first event."""
    firsts: dict[str, float] = {}
    for stage, t in marks:
        firsts.setdefault(stage, t)
    names = list(firsts)
    end = marks[-1][1] if marks else t0
    out = {}
    for i, name in enumerate(names):
        stop = firsts[names[i + 1]] if i + 1 < len(names) else end
        out[f"{name} s"] = stop - firsts[name]
    return out


MEASUREMENTS: dict[str, Callable[[list[Scene]], dict]] = {
    "snap": measure_snap,
    "snap_big": measure_snap_big,
    "fill": measure_fill,
    "gain": measure_snap_gain,
    "speed": lambda scenes: measure_erase_speed(),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", default=",".join(MEASUREMENTS), help="comma-separated: " + ",".join(MEASUREMENTS)
    )
    parser.add_argument("--scenes", type=int, default=36)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import os
    import platform

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    scenes = make_scenes(args.scenes, args.seed)
    print(
        f"{len(scenes)} scenes: "
        + ", ".join(f"{k} {sum(s.kind == k for s in scenes)}" for k in SELECTION_KINDS)
        + f"; camouflaged {sum(s.camouflage for s in scenes)}"
    )
    for name in args.only.split(","):
        MEASUREMENTS[name.strip()](scenes)


if __name__ == "__main__":
    main()

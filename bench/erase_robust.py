"""How stable the README's erase is under small, everyday changes of its input (issue 11, day 13).

The README's coffee (erase the spoon in examples/coffee.png with the shipped lasso) is the case every rule of
the embedded fill was looked at on, at one size and on one file's exact pixels. A user's photo is a JPEG at some
other size, and their lasso is a little looser or tighter. This bench runs the same erase (the CLI's own path,
defaults) on perturbed copies and compares each result, brought back to the photo's 600x400, with the
unperturbed result of the same tree:

- ``jpgNN``: the photo re-encoded as JPEG at quality NN;
- ``rtK``: the photo resampled by K and back (Lanczos);
- ``dilN`` / ``eroN``: the lasso grown / shrunk by N px;
- ``blurS``: the photo under a Gaussian blur of radius S;
- ``sK``: photo and lasso resized by K (the result is brought back to 1x to be compared).

Per variant it prints ``haze``: whitish result pixels (min channel > 150, chroma < 70) in the edited region
where the unperturbed result has none within 2 px (a pale bump off the cup's lip), and ``dev``: region pixels
whose 5x5-blurred colour lies more than 30 levels from the unperturbed result's (a hard edge, a smear, a spoon
part left; texture alone does not reach it). Both are 0 for the unperturbed case by construction, and lower is
better; they only say where to look. ``--sheet`` writes the 2x crops of every variant for looking.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.erase_robust [--variants jpg95,rt2,...] [--sheet PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "coffee.png"
LASSO = ROOT / "examples" / "coffee-spoon-selection.png"
VARIANTS = ("jpg95", "jpg85", "rt2", "dil2", "ero2", "s0.8", "s1.2", "s1.5", "s2")
BOX = (250, 100, 480, 300)  # the cup's right side and the saucer, where the spoon lay (1x)
WHITISH_MIN = 150
WHITISH_CHROMA = 70
DEV_LEVELS = 30


def perturb(name: str, photo, lasso):
    """The photo and lasso (PIL images) under the named change, and the scale they end up at."""
    from PIL import Image, ImageFilter

    w, h = photo.size
    if name == "orig":
        return photo, lasso, 1.0
    if name.startswith("jpg"):
        buf = io.BytesIO()
        photo.save(buf, "JPEG", quality=int(name[3:]))
        return Image.open(buf).convert("RGB"), lasso, 1.0
    if name.startswith("rt"):
        k = float(name[2:])
        big = photo.resize((round(w * k), round(h * k)), Image.LANCZOS)
        return big.resize((w, h), Image.LANCZOS), lasso, 1.0
    if name.startswith(("dil", "ero")):
        import cv2

        n = int(name[3:])
        op = cv2.dilate if name.startswith("dil") else cv2.erode
        kernel = np.ones((2 * n + 1, 2 * n + 1), np.uint8)
        return photo, Image.fromarray(op(np.asarray(lasso), kernel)), 1.0
    if name.startswith("blur"):
        return photo.filter(ImageFilter.GaussianBlur(float(name[4:]))), lasso, 1.0
    if name.startswith("s"):
        k = float(name[1:])
        size = (round(w * k), round(h * k))
        return photo.resize(size, Image.LANCZOS), lasso.resize(size, Image.LANCZOS), k
    raise ValueError(f"unknown variant {name!r}")


def erase(photo, lasso, work: Path, name: str):
    """The README's erase through the CLI's own path: the result (RGB) and the edited region (L)."""
    from PIL import Image

    from backend import cli

    src, sel = work / f"{name}-in.png", work / f"{name}-sel.png"
    out, region = work / f"{name}-out.png", work / f"{name}-region.png"
    photo.save(src)
    lasso.save(sel)
    args = [
        "erase",
        str(src),
        "--selection",
        str(sel),
        "--out",
        str(out),
        "--region-out",
        str(region),
        "--quiet",
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # the CLI's JSON line per run
        rc = cli.main(args)
    if rc not in (0, None):
        raise RuntimeError(f"{name}: the erase exited with {rc}")
    return Image.open(out).convert("RGB"), Image.open(region).convert("L")


def whitish(rgb: np.ndarray) -> np.ndarray:
    return (rgb.min(2) > WHITISH_MIN) & (rgb.max(2) - rgb.min(2) < WHITISH_CHROMA)


def compare(result, region, ref: np.ndarray, ref_region: np.ndarray, size: tuple[int, int]) -> dict[str, int]:
    """haze and dev (module docstring) of one result against the unperturbed one, at the photo's size."""
    import cv2
    from PIL import Image

    if result.size != size:
        result = result.resize(size, Image.LANCZOS)
        region = region.resize(size, Image.BILINEAR)
    rgb = np.asarray(result).astype(np.float32)
    both = (np.asarray(region) > 127) | ref_region
    near_white = cv2.dilate(whitish(ref).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    blur = cv2.GaussianBlur(rgb, (5, 5), 0)
    dev = np.abs(blur - cv2.GaussianBlur(ref, (5, 5), 0)).max(2) > DEV_LEVELS
    return {"haze": int((whitish(rgb) & both & ~near_white).sum()), "dev": int((dev & both).sum())}


def measure(variants: tuple[str, ...], sheet: Path | None = None) -> dict[str, dict[str, int]]:
    from PIL import Image, ImageDraw

    photo = Image.open(PHOTO).convert("RGB")
    lasso = Image.open(LASSO).convert("L")
    rows, tiles = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base, base_region = erase(photo, lasso, work, "orig")
        ref = np.asarray(base).astype(np.float32)
        ref_region = np.asarray(base_region) > 127
        for name in ("orig", *variants):
            p, s, k = perturb(name, photo, lasso)
            out, region = (base, base_region) if name == "orig" else erase(p, s, work, name)
            rows[name] = compare(out, region, ref, ref_region, photo.size)
            crop = out.crop(tuple(round(v * k) for v in BOX)).resize((460, 400), Image.LANCZOS)
            ImageDraw.Draw(crop).text((6, 4), name, fill=(255, 255, 0))
            tiles.append(crop)
    if sheet is not None:
        cols = 5
        grid = Image.new("RGB", (460 * cols, 400 * ((len(tiles) + cols - 1) // cols)))
        for i, tile in enumerate(tiles):
            grid.paste(tile, (460 * (i % cols), 400 * (i // cols)))
        sheet.parent.mkdir(parents=True, exist_ok=True)
        grid.save(sheet, quality=88)
    return rows


# the names ``perturb`` knows, each with a usable amount (a JPEG quality, a positive scale, a px count)
NAME = re.compile(r"orig|jpg(100|[1-9]\d?)|(rt|s|blur)(\d+\.?\d*|\.\d+)|(dil|ero)\d+")


def _known(name: str) -> bool:
    if not NAME.fullmatch(name):
        return False
    amount = re.sub(r"^[a-z]+", "", name)
    return name == "orig" or float(amount) > 0 or name.startswith(("dil", "ero", "blur"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated (module docstring)")
    parser.add_argument("--sheet", type=Path, help="write the 2x crops of every variant here")
    args = parser.parse_args(argv)
    variants = tuple(v for v in args.variants.split(",") if v)
    bad = [v for v in variants if not _known(v)]
    if bad:
        parser.error(
            f"unknown or unusable variant(s) {', '.join(bad)}: see the module docstring (e.g. jpg85, rt2, s1.5)"
        )
    rows = measure(variants, args.sheet)
    print("| variant | haze px | dev px |")
    print("|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['haze']} | {row['dev']} |")
    perturbed = [r for n, r in rows.items() if n != "orig"]
    print(f"total: haze {sum(r['haze'] for r in perturbed)}, dev {sum(r['dev'] for r in perturbed)}")


if __name__ == "__main__":
    main()

"""Speed of the learned erase fillers (LaMa, MI-GAN) on this machine, side by side with Telea in one run.

No real weights can be downloaded here. Two kinds of ONNX files stand in, both loaded and run by the backend's
own code (ModelManager.load_onnx + LearnedFiller, the path `fill=lama|migan` takes):

- *plumbing* stand-ins (tests/learned_models.py): the real files' inputs, outputs and conventions around a tiny
  conv net: their time is our pre/post-processing, padding and onnxruntime call overhead;
- *architecture* stand-ins (bench/learned_arch.py): random weights in the real layer shapes (big-lama ~51 M
  parameters with its FFTs as ONNX DFT ops; MI-GAN-512 ~6 M): their time is what the real model costs here.

    flock /work/heavy.lock .venv/bin/python -m bench.learned_fill [--runs 3] [--json out.json]

Times are medians of ``--runs`` after one warm-up; the machine is shared, so read the ratios to Telea measured
in the same run rather than the absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _median_time(fn, runs: int) -> float:
    fn()  # warm-up: onnxruntime plans its memory on the first run
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class _Timed:
    """An onnxruntime session that records how long each run takes (the rest of a fill is our own work)."""

    def __init__(self, session):
        self._session = session
        self.times: list[float] = []

    def __getattr__(self, name):
        return getattr(self._session, name)

    def run(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self._session.run(*args, **kwargs)
        finally:
            self.times.append(time.perf_counter() - t)


def _crop(h: int = 504, w: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A coffee.png-sized model crop (the spoon's plan is 512x504) with a spoon-sized hole."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    hole = ((yy - h * 0.55) / (h * 0.22)) ** 2 + ((xx - w * 0.5) / (w * 0.12)) ** 2 <= 1
    return rgb, hole


def _layer(side: int = 4096, obj: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (side, side, 4), dtype=np.uint8)
    sel = np.zeros((side, side), np.float32)
    yy, xx = np.ogrid[:side, :side]
    c = side // 2
    sel[((yy - c) / (obj / 2)) ** 2 + ((xx - c) / (obj / 3)) ** 2 <= 1] = 1.0
    return image, sel


def build_files(folder: Path) -> dict[str, tuple[str, Path, float, float | None]]:
    """name -> (model kind, installed file, seconds to build it, GFLOPs per 512 crop where the architecture
    is the real one)."""
    from bench.learned_arch import export_lama, export_migan, gflops
    from tests.learned_models import build_lama, build_migan

    plan = {
        "lama plumbing stand-in": ("lama", lambda p: build_lama(p), False),
        "migan plumbing stand-in": ("migan", lambda p: build_migan(p), False),
        "lama architecture (big-lama, random weights)": ("lama", export_lama, True),
        "migan architecture (MI-GAN-512, random weights)": ("migan", export_migan, True),
    }
    out = {}
    for i, (label, (kind, build, real)) in enumerate(plan.items()):
        target = folder / f"m{i}" / kind / ("lama_fp32.onnx" if kind == "lama" else "migan.onnx")
        t = time.perf_counter()
        build(target)
        out[label] = (kind, target, time.perf_counter() - t, gflops(kind) if real else None)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from backend.erase import EraseParams, ErasePipeline, OpenCVFiller
    from backend.erase.fill_learned import LearnedFiller
    from backend.models import ModelManager

    rgb, hole = _crop()
    image, sel = _layer()
    telea = OpenCVFiller("telea")
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "runs": args.runs,
        "crop": list(rgb.shape[:2]),
        "layer": list(image.shape[:2]),
    }
    t_telea = _median_time(lambda: telea(rgb, hole), args.runs)
    t_telea_e2e = _median_time(
        lambda: ErasePipeline(snapper=None)(image, sel, EraseParams(fill="telea")), args.runs
    )
    rows = [("telea (OpenCV, reference)", None, None, 0.0, t_telea, 0.0, t_telea_e2e)]
    with tempfile.TemporaryDirectory() as tmp:
        for label, (kind, path, _built, flops) in build_files(Path(tmp)).items():
            models = ModelManager(models_dir=path.parent.parent, device="cpu", search_dirs=[])
            t = time.perf_counter()
            session = models.load_onnx(kind)
            load = time.perf_counter() - t
            filler = LearnedFiller(kind, _Timed(session))
            per_crop = _median_time(lambda f=filler: f(rgb, hole), args.runs)
            model_s = statistics.median(filler.session.times[-args.runs :])
            pipe = ErasePipeline(snapper=None, fillers={kind: filler})
            e2e = _median_time(lambda p=pipe, k=kind: p(image, sel, EraseParams(fill=k)), args.runs)
            size = sum(f.stat().st_size for f in path.parent.iterdir())
            rows.append((label, size, flops, load, per_crop, per_crop - model_s, e2e))
    keys = ("filler", "file_bytes", "gflops", "load_s", "crop_s", "outside_model_s", "erase_4096_s")
    results["rows"] = [dict(zip(keys, r, strict=True)) for r in rows]
    results["loadavg_after"] = os.getloadavg()[0]
    print(f"# {results['machine']}; crop {rgb.shape[1]}x{rgb.shape[0]}, layer 4096x4096 with a 600 px object")
    print(
        "| filler | file | GFLOPs per crop | session load s | s per 512 crop | of it outside the model | x Telea | "
        "erase 4096 layer s (no snap) | x Telea |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, size, flops, load, crop_s, outside, e2e in rows:
        mb = f"{size / 1e6:.1f} MB" if size else "-"
        gf = f"{flops:.0f}" if flops else "-"
        print(
            f"| {label} | {mb} | {gf} | {load:.2f} | {crop_s:.3f} | {outside:.3f} | {crop_s / t_telea:.1f} | {e2e:.2f} | "
            f"{e2e / t_telea_e2e:.1f} |"
        )
    print(f"# load average after the run: {results['loadavg_after']:.1f} (2 cores)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU cost of the segment-anything snappers, side by side: SAM 2.1 tiny/small, SAM-HQ ViT-B, SAM ViT-B.

No real weights exist on this machine, so each model is built with random weights from the real checkpoint's
architecture (same shapes, same FLOPs: speed and memory are real, masks are noise). Each snaps the same ~600 px
crop through the real prompting code (backend.snapping.sam.SamSegmenter): the first snap on a layer computes the
image embedding; later snaps on the same layer reuse it (cache) and run only the prompt encoder and decoder.

    flock /work/heavy.lock .venv/bin/python -m bench.snap_models [--runs 3] [--only sam2.1-tiny,sam-hq]

With real weights installed (python3 install.py --models sam2.1-tiny,...), ``--realphoto`` scores each installed
model on the real-photo set of bench/realphoto.py instead (mean IoU, 2 px boundary F; by name and through auto,
which falls back to the embedded snap when a model's mask looks wrong). This machine has no weights, so those
figures come from users' machines:

    .venv/bin/python -m bench.snap_models --realphoto [--models-dir DIR] [--only-objects coffee_spoon,...]

Reports medians of wall and CPU time and CPU-time ratios to sam2.1-tiny, measured round-robin in one run (the
machine is shared: trust the ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from typing import Any

import numpy as np

MODELS = ("sam2.1-tiny", "sam2.1-small", "sam-hq", "sam")


def build(name: str) -> tuple[Any, Any]:
    """(model, processor) with random weights in the architecture of the preset's checkpoint."""
    import torch
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2Model,
        Sam2VisionConfig,
        SamConfig,
        SamHQConfig,
        SamHQModel,
        SamHQProcessor,
        SamModel,
        SamProcessor,
    )
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    from backend.snapping.sam import Sam2Prompts

    torch.manual_seed(0)
    if name.startswith("sam2.1"):
        # Hiera-T: stages 1-2-7-2, global attention in blocks 5, 7, 9; Hiera-S: 1-2-11-2 and 7, 10, 13
        small = name == "sam2.1-small"
        backbone = Sam2HieraDetConfig(
            blocks_per_stage=[1, 2, 11, 2] if small else [1, 2, 7, 2],
            global_attention_blocks=[7, 10, 13] if small else [5, 7, 9],
        )
        return Sam2Model(Sam2Config(vision_config=Sam2VisionConfig(backbone_config=backbone))), Sam2Prompts()
    processor_pil = SamImageProcessorPil()  # longest side 1024, padded to 1024x1024, as the hub configs
    if name == "sam-hq":
        return SamHQModel(SamHQConfig()), SamHQProcessor(image_processor=processor_pil)
    return SamModel(SamConfig()), SamProcessor(image_processor=processor_pil)


def scene(size: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    seed = ((yy - size / 2) / (size * 0.35)) ** 2 + ((xx - size / 2) / (size * 0.4)) ** 2 < 1
    return rgb, seed


def measure(names: list[str], runs: int) -> list[dict[str, Any]]:
    """Round-robin over the models (each round snaps with every model in turn), so that the shared machine's
    load changes hit them alike; wall and CPU time (process_time: less sensitive to other processes)."""
    from backend.snapping.sam import SamSegmenter

    segs, rows = {}, {}
    for name in names:
        t0 = time.perf_counter()
        model, processor = build(name)
        segs[name] = SamSegmenter(model, processor, device="cpu", name=name)
        params = sum(p.numel() for p in model.parameters())
        rows[name] = {
            "model": name,
            "params_m": round(params / 1e6, 1),
            "weights_mb_fp32": round(params * 4 / 2**20),
            "build_s": round(time.perf_counter() - t0, 2),
            **{k: [] for k in ("first_wall", "first_cpu", "cached_wall", "cached_cpu")},
        }
    rgb, seed = scene()
    for i in range(runs):
        for name, seg in segs.items():
            row = rows[name]
            seg._cache.clear()  # a new layer: the encoder runs
            w, c = time.perf_counter(), time.process_time()
            _, info = seg.segment(rgb, seed, gap=12)
            row["first_wall"].append(round(time.perf_counter() - w, 3))
            row["first_cpu"].append(round(time.process_time() - c, 3))
            assert info["embedding"] == "computed"
            w, c = time.perf_counter(), time.process_time()
            _, info = seg.segment(rgb, seed ^ (np.arange(seed.shape[1]) < i + 1), gap=12)  # another selection
            row["cached_wall"].append(round(time.perf_counter() - w, 3))
            row["cached_cpu"].append(round(time.process_time() - c, 3))
            assert info["embedding"] == "cached"
    for row in rows.values():
        for key in ("first_wall", "first_cpu", "cached_wall", "cached_cpu"):
            row[key + "_median"] = round(statistics.median(row[key]), 3)
    return list(rows.values())


def realphoto(models: Any, names: list[str], only: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """{model: {"by name": (mean IoU, mean BF), "auto": (...), "cases": [...]}} on bench/realphoto.py's cases,
    for each of ``names`` that ``models`` (a ModelManager) has installed; the snap op's own code path."""
    from backend.ops.base import JobContext
    from backend.ops.snap import build_snapper, run_snap
    from bench.realphoto import boundary_f, iou, load_cases

    cases = load_cases(only)
    ctx = JobContext(models=models)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        if not models.has_model("sam", name):
            continue
        snapper = build_snapper(ctx, name)
        rows = []
        for case in cases:
            by_name = run_snap(snapper, case.image, case.selection.astype(np.float32), name, 24)
            info = by_name.meta["model"]
            auto_mask = by_name.mask if info["plausible"] else None
            if auto_mask is None:  # what auto does with this model's mask: the embedded snap decides
                fallback = build_snapper(JobContext(), "combined")
                auto_mask = run_snap(
                    fallback, case.image, case.selection.astype(np.float32), "combined", 24
                ).mask
            rows.append(
                {
                    "case": case.name,
                    "iou": round(iou(by_name.mask, case), 3),
                    "bf": round(boundary_f(by_name.mask, case), 3),
                    "auto_iou": round(iou(auto_mask, case), 3),
                    "auto_bf": round(boundary_f(auto_mask, case), 3),
                    "plausible": info["plausible"],
                }
            )
        results[name] = {
            "by name": (_mean(rows, "iou"), _mean(rows, "bf")),
            "auto": (_mean(rows, "auto_iou"), _mean(rows, "auto_bf")),
            "rejected": sum(not r["plausible"] for r in rows),
            "cases": rows,
        }
    return results


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return round(float(np.mean([r[key] for r in rows])), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated subset of " + ", ".join(MODELS))
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument("--realphoto", action="store_true", help="score installed models on real photos")
    parser.add_argument(
        "--models-dir", default=None, help="with --realphoto: where the presets are installed"
    )
    parser.add_argument("--only-objects", default="", help="with --realphoto: comma-separated object names")
    args = parser.parse_args(argv)
    import torch

    names = [n for n in args.only.split(",") if n] or list(MODELS)
    if args.realphoto:
        from backend.models import ModelManager

        objects = {n for n in args.only_objects.split(",") if n} or None
        found = realphoto(ModelManager(models_dir=args.models_dir), names, objects)
        if not found:
            print("no segment-anything model installed (python3 install.py --models sam2.1-tiny, ...)")
            return 1
        print(f"{'model':14} {'IoU':>6} {'BF 2px':>7} | auto: {'IoU':>6} {'BF 2px':>7} (model mask rejected)")
        for name, r in found.items():
            (i, b), (ai, ab) = r["by name"], r["auto"]
            print(
                f"{name:14} {i:>6.3f} {b:>7.3f} |       {ai:>6.3f} {ab:>7.3f} ({r['rejected']} of {len(r['cases'])})"
            )
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(found, fh, indent=1)
        return 0
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}, {time.strftime('%H:%M UTC', time.gmtime())}"
    )
    rows = measure(names, args.runs)
    base = next((r for r in rows if r["model"] == "sam2.1-tiny"), rows[0])
    print(
        f"{'model':14} {'params':>8} {'fp32 MB':>8} | first snap: {'wall':>7} {'CPU':>7} {'CPU x tiny':>10} "
        f"| cached snap: {'wall':>6} {'CPU':>6} {'CPU x tiny':>10}"
    )
    for r in rows:
        print(
            f"{r['model']:14} {r['params_m']:>7}M {r['weights_mb_fp32']:>8} | {'':12}{r['first_wall_median']:>6.2f}s "
            f"{r['first_cpu_median']:>6.2f}s {r['first_cpu_median'] / base['first_cpu_median']:>10.2f} | {'':13}"
            f"{r['cached_wall_median']:>5.2f}s {r['cached_cpu_median']:>5.2f}s "
            f"{r['cached_cpu_median'] / base['cached_cpu_median']:>10.2f}"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS of the whole run {peak:.2f} GiB; load {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Replace speed: the end-to-end op path against the raw diffusers call on the same crop.

What the backend adds around the model (snap-off plumbing: mask growth, crop plan, scaling, PIL conversion,
per-step progress/cancel callback, inward feather, bit-exact composite) must stay small next to the model. Both
are timed side by side, interleaved, on the same inputs; figures are medians.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.replace_speed                 # tiny + SD-1.5-shaped
    .venv/bin/python -m bench.replace_speed --only tiny --runs 9
    .venv/bin/python -m bench.replace_speed --only sd15 --size 256 --steps 2 --runs 3

``tiny``: the test suite's random-weight pipeline (tests/tiny_models.py) loaded from disk through ModelManager.
``sd15``: random weights in the real SD-1.5 inpainting shapes (UNet 320/640/1280/1280, 2 layers per block,
cross-attention 768, 8 heads, 9 input channels; CLIP text 768 x 12 layers; VAE 128/256/512/512): real FLOPs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def scene(size: tuple[int, int] = (768, 1024), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A photo-sized RGBA layer with a selection of about a fifth of its long side."""
    rng = np.random.default_rng(seed)
    h, w = size
    image = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    image[..., 3] = 255
    yy, xx = np.mgrid[:h, :w]
    selection = (((yy - h / 2) / (h / 10)) ** 2 + ((xx - w / 2) / (w / 9)) ** 2 <= 1).astype(np.float32)
    return image, selection


def _raw_inputs(pipe: Any, image: np.ndarray, selection: np.ndarray, params: Any):
    """The exact crop ReplacePipeline feeds the model, as PIL images (prepared once, outside the timing)."""
    from PIL import Image

    from backend.imaging import grow, plan_crop, to_rgb_u8
    from backend.replace.pipeline_replace import native_resolution

    region = (grow(selection >= 0.5, params.grow_px) >= 0.5).astype(np.float32)
    plan = plan_crop(
        region, image.shape, context=params.context, target=params.resolution or native_resolution(pipe)
    )
    rgb = plan.to_model(to_rgb_u8(image))
    mask = (plan.to_model(region, smooth=False) * 255).astype(np.uint8)
    return Image.fromarray(rgb), Image.fromarray(mask), plan.model_size


class _Timed:
    """Forwards to a diffusers pipeline and records how long each of its calls took (wall and CPU), so the
    time Replace spends outside the model is measured inside the very same run."""

    def __init__(self, pipe: Any):
        self.__dict__.update(_pipe=pipe, calls=[])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._pipe, name, value)

    def __call__(self, **kwargs: Any) -> Any:
        w0, c0 = time.perf_counter(), time.process_time()
        out = self._pipe(**kwargs)
        self.calls.append((time.perf_counter() - w0, time.process_time() - c0))
        return out


def _timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def compare(pipe: Any, image: np.ndarray, selection: np.ndarray, params: Any, runs: int) -> dict[str, Any]:
    """Medians of the raw pipeline call and of ReplacePipeline (snapping off), interleaved; wall clock and
    process CPU time (the CPU time is robust to other processes sharing the machine)."""
    import torch

    from backend.replace import ReplacePipeline

    timed = _Timed(pipe)
    replace = ReplacePipeline(timed)
    crop, mask, (w, h) = _raw_inputs(pipe, image, selection, params)

    def raw() -> None:
        pipe(
            prompt=params.prompt,
            image=crop,
            mask_image=mask,
            height=h,
            width=w,
            strength=params.strength,
            num_inference_steps=params.num_inference_steps,
            guidance_scale=params.guidance_scale,
            generator=torch.Generator().manual_seed(params.seed),
            output_type="np",
        )

    def ours() -> None:
        replace(image, selection, params, callback=lambda stage, i, n: None)

    raw(), ours()  # warm-up: first-call allocations, kernel selection
    timed.calls.clear()
    t_raw, t_ours = [], []
    for _ in range(runs):
        t_raw.append(_timed(raw))
        t_ours.append(_timed(ours))
    med = statistics.median
    raw_wall, raw_cpu = med(t[0] for t in t_raw), med(t[1] for t in t_raw)
    ours_wall, ours_cpu = med(t[0] for t in t_ours), med(t[1] for t in t_ours)
    outside = med(
        o[1] - inner[1] for o, inner in zip(t_ours, timed.calls, strict=True)
    )  # CPU s outside the model
    return {
        "image": f"{image.shape[1]}x{image.shape[0]}",
        "model_size": f"{w}x{h}",
        "steps": params.num_inference_steps,
        "runs": runs,
        "raw_s": raw_wall,
        "replace_s": ours_wall,
        "ratio": ours_wall / raw_wall,
        "raw_cpu_s": raw_cpu,
        "replace_cpu_s": ours_cpu,
        "cpu_ratio": ours_cpu / raw_cpu,
        "outside_ms": outside * 1000,
    }


def measure_tiny(runs: int, resolutions: tuple[int, ...] = (64, 512), steps: int = 4) -> list[dict[str, Any]]:
    from backend.models import ModelManager
    from backend.replace import ReplaceParams
    from tests.tiny_models import build_tiny_inpaint

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_inpaint(Path(tmp) / "tiny-inpaint")
        pipe = ModelManager(models_dir=tmp, device="cpu").load_pipeline("inpaint", str(folder))
        image, selection = scene()
        for res in resolutions:
            params = ReplaceParams(prompt="a red vase", num_inference_steps=steps, seed=0, resolution=res)
            out.append({"model": "tiny", **compare(pipe, image, selection, params, runs)})
    return out


def build_sd15_shaped_inpaint():
    """StableDiffusionInpaintPipeline with random weights in SD-1.5's real shapes (fp32, CPU), in memory."""
    from tests.tiny_models import SD15, sd_pipeline

    return sd_pipeline("inpaint", SD15, workdir=Path(tempfile.mkdtemp()))


def measure_sd15(runs: int, size: int = 256, steps: int = 2, device: str = "cpu") -> list[dict[str, Any]]:
    import torch

    from backend.replace import ReplaceParams

    pipe = build_sd15_shaped_inpaint()
    if device != "cpu":
        pipe = pipe.to(device, torch.float16)
    params = ReplaceParams(prompt="a red vase", num_inference_steps=steps, seed=0, resolution=size)
    image, selection = scene()
    with torch.inference_mode():
        return [{"model": f"sd15-shaped ({device})", **compare(pipe, image, selection, params, runs)}]


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| model | image | model size | steps | runs | raw call wall (s) | replace wall (s) | wall ratio "
        "| raw call CPU (s) | replace CPU (s) | CPU ratio | replace outside the model (CPU ms) |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['image']} | {r['model_size']} | {r['steps']} | {r['runs']} | {r['raw_s']:.4f} | "
            f"{r['replace_s']:.4f} | {r['ratio']:.3f} | {r['raw_cpu_s']:.4f} | {r['replace_cpu_s']:.4f} | "
            f"{r['cpu_ratio']:.3f} | {r['outside_ms']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="tiny,sd15", help="comma list of: tiny, sd15")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--sd15-runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=256, help="model resolution for sd15")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps for sd15")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    import torch

    rows: list[dict[str, Any]] = []
    parts = args.only.split(",")
    if "tiny" in parts:
        rows += measure_tiny(args.runs)
    if "sd15" in parts:
        rows += measure_sd15(args.sd15_runs, args.size, args.steps, args.device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

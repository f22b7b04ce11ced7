"""One-command GPU check (issue 15): Imagic, Replace and Erase on SD-1.5-shaped random weights built on the spot.

    .venv/bin/python -m bench.gpu                 # on one CUDA GPU (H100/H200 class: a few minutes)
    .venv/bin/python -m bench.gpu --tiny          # the same plumbing on the tiny test models, CPU, seconds (CI)

Needs nothing but the project's wheels: the models are random weights in the real SD-1.5 shapes (UNet
320/640/1280/1280, CLIP text 768 x 12, VAE 128/256/512/512) created directly on the device in fp16, so the
FLOPs and the memory are real and the images are noise. Measured, each in this one process:

- **imagic** at 512x512 with the op's defaults (LoRA, 100 embedding + 150 fine-tune steps, 25 DDIM steps,
  precision auto = fp16 autocast): the first request (tune + sample), 5 later etas one request each (cache hits),
  the same 5 etas in one batched request, a slider preview; peak VRAM (``torch.cuda.max_memory_allocated``);
  and a plain diffusers text-to-image call at the same size and steps (the yardstick of an eta re-render);
- **replace** at 512x512, 25 steps: ``ReplacePipeline`` against the raw diffusers inpainting call;
- **erase** with the learned fillers' shapes (tests/learned_models.py's LaMa- and MI-GAN-shaped ONNX files)
  when that module and onnxruntime are present, through ``ErasePipeline``.

Writes ``gpu.json`` and ``gpu.md`` (a markdown table) into ``--out``. Compass on an H100-class GPU: Imagic edit
<= 20 s, <= 10 GB VRAM, an eta change <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ETAS = (0.7, 0.5, 0.6, 0.8, 0.9, 1.0)
PROMPT = "a photo of a sitting dog"
TARGETS = {"imagic_first_s": 20.0, "imagic_peak_vram_gb": 10.0, "imagic_eta_s": 1.0}


# ---- setup --------------------------------------------------------------------------------------------------------
def _device(args) -> Any:
    import torch

    if args.device:
        return torch.device(args.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(device, fn, *a, **kw) -> tuple[Any, float]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    _sync(device)
    return out, time.perf_counter() - t0


def build(kind: str, tiny: bool, device, dtype, workdir: Path):
    """An SD-shaped random-weight diffusers pipeline created on ``device`` (no download, no disk round trip)."""
    import torch

    from tests.tiny_models import SD15, TINY, sd_pipeline

    with torch.device(device):
        pipe = sd_pipeline(kind, TINY if tiny else SD15, seed=0, workdir=workdir)
    return pipe if dtype == torch.float32 else pipe.to(device=device, dtype=dtype)


def _vram_reset(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _vram_peak_gb(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


# ---- imagic -------------------------------------------------------------------------------------------------------
def bench_imagic(pipe, device, cfg: dict, workdir: Path) -> dict:
    from backend.imagic import ImagicParams, ImagicPipeline, TunedStateCache

    res, E, F, S = cfg["res"], cfg["E"], cfg["F"], cfg["S"]
    rng = np.random.default_rng(0)
    image = rng.random((res, res, 3), dtype=np.float32)
    engine = ImagicPipeline.from_pipe(pipe, device=device, cache=TunedStateCache(workdir / "imagic-cache"))

    def params(**kw) -> ImagicParams:
        base = dict(
            etas=[ETAS[0]], embedding_steps=E, finetune_steps=F, num_inference_steps=S, resolution=res
        )
        return ImagicParams(PROMPT, **{**base, **kw})

    _vram_reset(device)
    first, first_s = _clock(device, engine, image, None, params())
    first_vram = _vram_peak_gb(device)
    later = []
    for eta in ETAS[1:]:
        out, s = _clock(device, engine, image, None, params(etas=[eta]))
        later.append({"eta": eta, "s": s, "cache_hit": out.cache_hit})
    eager_s = _eager_eta(device, engine, image, params(etas=[ETAS[1]]))
    batched, batched_s = _clock(device, engine, image, None, params(etas=list(ETAS[1:])))
    preview, preview_s = _clock(device, engine, image, None, params(etas=[ETAS[1]], preview=True))
    peak = _vram_peak_gb(device)
    import torch

    plain = []
    for _ in range(3):  # the first call is a warm-up (cuDNN attention builds its plans there), not timed
        gen = torch.Generator("cpu").manual_seed(0)
        _, s = _clock(
            device,
            pipe,
            PROMPT,
            height=res,
            width=res,
            num_inference_steps=S,
            generator=gen,
            output_type="np",
        )
        plain.append(s)
    eta_s = statistics.mean(q["s"] for q in later)
    return {
        "res": res,
        "steps": {"embedding": E, "finetune": F, "sample": S},
        "first_s": first_s,
        "first_timings_s": first.timings,
        "first_info": {k: v for k, v in first.info.items() if k != "cache_key"},
        "first_peak_vram_gb": first_vram,
        "peak_vram_gb": peak,
        "later": later,
        "eta_s": eta_s,
        "eta_eager_s": eager_s,
        "batched_5_s": batched_s,
        "batched_per_eta_s": batched_s / 5,
        "batched_cache_hit": batched.cache_hit,
        "preview_s": preview_s,
        "preview": preview.info.get("preview"),
        "plain_s": statistics.median(plain[1:]),
        "eta_vs_plain": eta_s / statistics.median(plain[1:]),
    }


def _eager_eta(device, engine, image, params) -> float | None:
    """One cache-hit eta with CUDA graphs switched off: what the graphs save, in the same run."""
    import os

    if device.type != "cuda":
        return None
    os.environ["LAYEREDIT_CUDA_GRAPHS"] = "0"
    try:
        return _clock(device, engine, image, None, params)[1]
    finally:
        del os.environ["LAYEREDIT_CUDA_GRAPHS"]


# ---- replace ------------------------------------------------------------------------------------------------------
def bench_replace(pipe, device, cfg: dict, runs: int) -> dict:
    import torch
    from PIL import Image

    from backend.replace import ReplaceParams, ReplacePipeline

    res, S = cfg["res"], cfg["S"]
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (res, res, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:res, :res]
    selection = ((((yy - res / 2) / (res / 4)) ** 2 + ((xx - res / 2) / (res / 4)) ** 2) <= 1).astype(
        np.float32
    )
    params = ReplaceParams(PROMPT, num_inference_steps=S, resolution=res, context=0.0)
    replace = ReplacePipeline(pipe)
    mask = Image.fromarray((selection * 255).astype(np.uint8))

    def raw():
        return pipe(
            prompt=PROMPT,
            image=Image.fromarray(image),
            mask_image=mask,
            height=res,
            width=res,
            num_inference_steps=S,
            guidance_scale=params.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(0),
            output_type="np",
        )

    def ours():
        return replace(image, selection, params)

    raw(), ours()  # warm-up (kernel selection, first allocations)
    t_raw, t_ours = [], []
    for _ in range(runs):
        t_raw.append(_clock(device, raw)[1])
        t_ours.append(_clock(device, ours)[1])
    r, o = statistics.median(t_raw), statistics.median(t_ours)
    return {"res": res, "steps": S, "runs": runs, "raw_s": r, "replace_s": o, "ratio": o / r}


# ---- erase --------------------------------------------------------------------------------------------------------
def bench_erase(workdir: Path, res: int, runs: int) -> dict:
    """ErasePipeline with LaMa- and MI-GAN-shaped ONNX fillers, when the builders and onnxruntime are here."""
    try:
        import onnxruntime as ort

        from backend.erase.fill_learned import LearnedFiller
        from backend.erase.pipeline_erase import EraseParams, ErasePipeline
        from tests.learned_models import build_lama, build_migan
    except ImportError as exc:
        return {"skipped": f"learned filler shapes not present ({exc})"}
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (res, res, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:res, :res]
    selection = ((((yy - res / 2) / (res / 6)) ** 2 + ((xx - res / 2) / (res / 6)) ** 2) <= 1).astype(
        np.float32
    )
    out: dict[str, Any] = {"res": res, "providers": ort.get_available_providers()}
    for name, builder in (("lama", build_lama), ("migan", build_migan)):
        path = builder(workdir / f"{name}.onnx")
        providers = [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()
        ]
        session = ort.InferenceSession(str(path), providers=providers)
        erase = ErasePipeline(fillers={name: LearnedFiller(name, session)})
        params = EraseParams(fill=name)
        params.snap.enabled = False
        erase(image, selection, params)  # warm-up
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            erase(image, selection, params)
            times.append(time.perf_counter() - t0)
        out[name] = {"s": statistics.median(times), "provider": session.get_providers()[0]}
    return out


# ---- report -------------------------------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    """The table of what ran; a part that failed or has not run yet shows as one row saying so."""
    rows = [
        f"Device: {result['device']} ({result['device_name']}), torch {result['torch']}, dtype {result['dtype']}, "
        f"mode {'tiny' if result['tiny'] else 'sd15-shaped'}, total {result.get('total_s', 0):.0f} s",
        "",
        "| what | figure | target (H100 class) |",
        "|---|---|---|",
    ]
    for name, rows_of in (("imagic", _imagic_rows), ("replace", _replace_rows), ("erase", _erase_rows)):
        part = result.get(name)
        if part is None:
            rows.append(f"| {name} | not run | - |")
        elif "error" in part:
            rows.append(f"| {name} | failed: {part['error'].strip().splitlines()[-1]} | - |")
        else:
            rows += rows_of(part)
    im = result.get("imagic") or {}
    if "first_info" in im:
        info = im["first_info"]
        rows += [
            "",
            f"Imagic first request stages: {json.dumps({k: round(v, 2) for k, v in im['first_timings_s'].items()})}; "
            f"precision {info.get('precision')}, gradient checkpointing {info.get('gradient_checkpointing')} "
            f"({info.get('gradient_checkpointing_why')}); UNet calls: embedding "
            f"{info.get('embedding', {}).get('unet_calls')}, fine-tune {info.get('finetune_stats', {}).get('unet_calls')}, "
            f"sampling {info.get('sampling_unet_calls')}",
        ]
    return "\n".join(rows) + "\n"


def _imagic_rows(im: dict) -> list[str]:
    vram = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    return [
        f"| Imagic first request ({im['res']} px, E/F/S {im['steps']['embedding']}/{im['steps']['finetune']}/"
        f"{im['steps']['sample']}, LoRA) | {im['first_s']:.2f} s | <= 20 s |",
        f"| Imagic peak VRAM (max_memory_allocated) | {vram(im['peak_vram_gb'])} GB | <= 10 GB |",
        f"| Imagic each later eta (cache hit) | {im['eta_s']:.2f} s"
        + ("" if im.get("eta_eager_s") is None else f" (CUDA graphs off: {im['eta_eager_s']:.2f} s)")
        + " | <= 1 s |",
        f"| Imagic 5 etas in one request, per eta | {im['batched_per_eta_s']:.2f} s | - |",
        f"| Imagic slider preview ({im['preview']}) | {im['preview_s']:.2f} s | - |",
        f"| plain text-to-image, same size and steps | {im['plain_s']:.2f} s (eta re-render {im['eta_vs_plain']:.2f}x) | - |",
    ]


def _replace_rows(rp: dict) -> list[str]:
    return [
        f"| Replace {rp['res']} px, {rp['steps']} steps: ours / raw diffusers | {rp['replace_s']:.2f} / {rp['raw_s']:.2f} s "
        f"({rp['ratio']:.2f}x) | - |"
    ]


def _erase_rows(er: dict) -> list[str]:
    if "skipped" in er:
        return [f"| Erase, learned fillers | skipped: {er['skipped']} | - |"]
    return [
        f"| Erase {er['res']} px, {name}-shaped ONNX ({er[name]['provider']}) | {er[name]['s']:.3f} s | - |"
        for name in ("lama", "migan")
    ]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--tiny", action="store_true", help="tiny test models, few steps (runs on a CPU in seconds)"
    )
    ap.add_argument("--device", help="default: cuda when available, else cpu")
    ap.add_argument("--out", type=Path, default=Path("bench-gpu-out"))
    ap.add_argument(
        "--runs", type=int, default=None, help="timed repeats of replace/erase (default 3, tiny 1)"
    )
    args = ap.parse_args(argv)
    import torch

    from backend import malloc

    malloc.configure()  # as `python -m backend` does (CPU runs)
    device = _device(args)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if args.tiny:
        cfg = {"res": 64, "E": 2, "F": 2, "S": 2}
        torch.set_num_threads(min(2, torch.get_num_threads()))
    else:
        cfg = {"res": 512, "E": 100, "F": 150, "S": 25}  # the imagic op's defaults
    runs = args.runs or (1 if args.tiny else 3)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype).replace("torch.", ""),
        "tiny": args.tiny,
        "config": cfg,
        "targets": TARGETS,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        def imagic() -> dict:
            return bench_imagic(build("text2img", args.tiny, device, dtype, work / "t2i"), device, cfg, work)

        def replace() -> dict:
            return bench_replace(build("inpaint", args.tiny, device, dtype, work / "inp"), device, cfg, runs)

        for name, section in (("imagic", imagic), ("replace", replace)):
            _section(result, name, section, args.out, t0)
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the section's pipeline is gone: give its memory back before the next
        _section(result, "erase", lambda: bench_erase(work, cfg["res"], runs), args.out, t0)
    print(markdown(result))
    return result


def _section(result: dict, name: str, run, out: Path, t0: float) -> None:
    """Run one part and write what is known so far: a GPU lease is short, so a failure in one part (or the
    lease ending) must not lose the figures of the others. A failed part records its traceback."""
    try:
        result[name] = run()
    except Exception:  # noqa: BLE001 - reported in the JSON and the table, the run goes on
        result[name] = {"error": traceback.format_exc()}
        print(result[name]["error"], flush=True)
    result["total_s"] = time.perf_counter() - t0
    (out / "gpu.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "gpu.md").write_text(markdown(result))


if __name__ == "__main__":
    main()

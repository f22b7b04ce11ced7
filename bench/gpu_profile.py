"""Where an Imagic request spends its time on a GPU (issue 15): a profile to run beside ``bench/gpu.py``.

    python -m bench.gpu_profile --out DIR         # on one CUDA GPU, SD-1.5-shaped random weights, ~2 minutes

Prints and writes ``profile.md``:
- one Imagic request at 512 px with few steps (E/F/S 10/10/5) under ``torch.profiler``: the top operators by CPU
  and by GPU time, and how busy the GPU was (kernel time / wall time: far below 1 means Python and kernel
  launches, not arithmetic, set the pace);
- UNet micro-benchmarks at batch 1 and 2 (fp16 weights): forward with and without autocast, forward+backward to
  the text embedding (stage A's step), channels_last, cuDNN benchmark mode, and a CUDA-graph replay of the
  forward (the floor that launch overhead hides).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(fn, n: int = 10) -> float:
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1000.0


def micro(pipe, lines: list[str]) -> None:
    pipe.unet.requires_grad_(False)  # as in stage A: gradients reach the embedding only
    for b in (1, 2):
        _micro_batch(pipe.unet, b, lines)


def _micro_batch(unet, b: int, lines: list[str]) -> None:
    import torch

    dev = unet.device
    x16 = torch.randn(b, 4, 64, 64, device=dev, dtype=torch.float16)
    e16 = torch.randn(b, 77, 768, device=dev, dtype=torch.float16)
    t = torch.tensor([500], device=dev)

    @torch.no_grad()
    def fwd16():
        return unet(x16, t, encoder_hidden_states=e16).sample

    @torch.no_grad()
    def fwd_amp():
        with torch.autocast("cuda", dtype=torch.float16):
            return unet(x16.float(), t, encoder_hidden_states=e16.float()).sample

    e = e16.float().requires_grad_(True)

    def fwdbwd16():
        out = unet(x16, t, encoder_hidden_states=e.to(torch.float16)).sample
        out.float().pow(2).mean().backward()

    def fwdbwd_amp():
        with torch.autocast("cuda", dtype=torch.float16):
            out = unet(x16.float(), t, encoder_hidden_states=e).sample
        out.float().pow(2).mean().backward()

    for name, fn in (
        ("fwd fp16", fwd16),
        ("fwd autocast", fwd_amp),
        ("fwd+bwd->emb fp16", fwdbwd16),
        ("fwd+bwd->emb autocast", fwdbwd_amp),
    ):
        lines.append(f"| batch {b} | {name} | {_timed(fn):.1f} ms |")
    if b == 2:
        torch.backends.cudnn.benchmark = True
        lines.append(f"| batch 2 | fwd fp16, cudnn.benchmark | {_timed(fwd16):.1f} ms |")
        lines.append(f"| batch 2 | fwd+bwd fp16, cudnn.benchmark | {_timed(fwdbwd16):.1f} ms |")
        unet.to(memory_format=torch.channels_last)
        lines.append(f"| batch 2 | fwd fp16, channels_last+bench | {_timed(fwd16):.1f} ms |")
        lines.append(f"| batch 2 | fwd+bwd fp16, channels_last+bench | {_timed(fwdbwd16):.1f} ms |")
        unet.to(memory_format=torch.contiguous_format)
        torch.backends.cudnn.benchmark = False
        try:
            graph = torch.cuda.CUDAGraph()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    fwd16()
            torch.cuda.current_stream().wait_stream(s)
            with torch.cuda.graph(graph):
                fwd16()
            lines.append(f"| batch 2 | fwd fp16, CUDA graph replay | {_timed(graph.replay):.1f} ms |")
        except Exception as exc:  # noqa: BLE001 - a probe: report and go on
            lines.append(f"| batch 2 | CUDA graph | failed: {type(exc).__name__}: {str(exc)[:120]} |")


def profile_request(pipe, work: Path, lines: list[str]) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from backend.imagic import ImagicParams, ImagicPipeline, TunedStateCache

    engine = ImagicPipeline.from_pipe(pipe, device=pipe.unet.device, cache=TunedStateCache(work / "c"))
    image = np.random.default_rng(0).random((512, 512, 3), dtype=np.float32)

    def request(seed: int, etas=(0.7,)):
        p = ImagicParams(
            "a photo of a sitting dog",
            etas=list(etas),
            embedding_steps=10,
            finetune_steps=10,
            num_inference_steps=5,
            resolution=512,
            tune_seed=seed,
        )
        return engine(image, None, p)

    request(0)  # warm-up: CUDA context, kernels, cuBLAS handles
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        out = request(1)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    gpu_us = sum(e.self_device_time_total for e in events)
    lines.append(f"\nImagic request E/F/S 10/10/5 at 512: wall {wall:.2f} s, timings {out.timings}")
    lines.append(f"GPU kernel time {gpu_us / 1e6:.2f} s = {gpu_us / 1e6 / wall:.0%} of wall")
    lines.append("\nTop by self CUDA time:\n```")
    lines.append(events.table(sort_by="self_device_time_total", row_limit=18, max_name_column_width=60))
    lines.append("```\nTop by self CPU time:\n```")
    lines.append(events.table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=60))
    lines.append("```")
    t0 = time.perf_counter()
    request(1, etas=(0.5,))
    torch.cuda.synchronize()
    hit = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof2:
        t0 = time.perf_counter()
        request(1, etas=(0.6,))
        torch.cuda.synchronize()
        wall2 = time.perf_counter() - t0
    ev2 = prof2.key_averages()
    gpu2 = sum(e.self_device_time_total for e in ev2)
    lines.append(
        f"\nCache hit (S=5): {hit:.3f} s unprofiled; profiled wall {wall2:.3f} s, GPU {gpu2 / 1e6:.3f} s"
    )
    lines.append("```")
    lines.append(ev2.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))
    lines.append("```")


def main(argv=None) -> None:
    import torch

    from bench.gpu import build

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-gpu-out"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"torch {torch.__version__}, {torch.cuda.get_device_name()}",
        "",
        "| batch | what | per call |",
        "|---|---|---|",
    ]
    path = args.out / "profile.md"
    with tempfile.TemporaryDirectory() as tmp:
        pipe = build("text2img", False, torch.device("cuda"), torch.float16, Path(tmp) / "t2i")
        for part in (micro, lambda p, ls: profile_request(p, Path(tmp), ls)):
            try:
                part(pipe, lines)
            except Exception:  # noqa: BLE001 - a probe: keep what was measured
                import traceback

                lines.append("```\n" + traceback.format_exc() + "```")
            path.write_text("\n".join(lines) + "\n")
            print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()

"""fp32 vs bf16 autocast on this CPU for the pieces of an Imagic request (issue 15): what ``precision=auto`` rests on.

SD-1.5-shaped random weights (tests/tiny_models.SD15), 128x128 (16x16 latents), 1 thread, the backend's malloc
setting. Parts, each timed fp32 / bf16 / fp32 / bf16 interleaved in one process (median of 3 after a warm-up;
process CPU seconds next to wall, the machine is shared):
- ``fwd2`` / ``fwd12``: a no-grad UNet forward at batch 2 (one guided eta) and 12 (6 guided etas): stage C;
- ``stageA``: forward + backward to the text embedding (UNet frozen);
- ``stageB``: forward + backward to a LoRA r=4 on the attention projections;
- ``vae``: the VAE decode of one 16x16 latent.
``--memory`` instead runs 3 steps of stage A then 3 of LoRA stage B through ``backend.imagic.stages`` in a fresh
process per mode (fp32, bf16, bf16 without the weight recast) and prints each one's peak RSS.

    flock /work/heavy.lock .venv/bin/python -m bench.imagic_precision
    flock /work/heavy.lock .venv/bin/python -m bench.imagic_precision --memory
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _setup():
    from backend import malloc

    malloc.configure()
    import torch

    torch.set_num_threads(1)
    from tests.tiny_models import SD15, sd_pipeline

    pipe = sd_pipeline("text2img", SD15, 0)
    pipe.unet.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    return torch, pipe


def speed(parts: list[str]) -> dict:
    torch, pipe = _setup()
    from backend.imagic.guard import add_lora, lora_config

    unet, vae = pipe.unet, pipe.vae
    ctx1 = torch.randn(1, 77, 768)
    t = torch.tensor([500])
    lora: list = []

    def autocast(mode: str):
        return torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16" else contextlib.nullcontext()

    def recast(mode: str):
        from backend.imagic.stages import recast_frozen_weights

        return recast_frozen_weights(unet) if mode == "bf16" else contextlib.nullcontext()

    def case(name: str, mode: str):
        if name.startswith("fwd"):
            b = int(name[3:])
            x, ctx = torch.randn(b, 4, 16, 16), ctx1.expand(b, -1, -1).contiguous()

            def fn():
                with torch.no_grad(), autocast(mode):
                    unet(x, t, encoder_hidden_states=ctx).sample.float()

            return fn
        if name in ("stageA", "stageB"):
            if name == "stageB" and not lora:
                lora.extend(add_lora(unet, lora_config(4), seed=0))
                for p in lora:
                    p.requires_grad_(True)
            emb = torch.nn.Parameter(ctx1.clone()) if name == "stageA" else ctx1
            x = torch.randn(1, 4, 16, 16)

            def fn():
                with autocast(mode), recast(mode):
                    pred = unet(x, t, encoder_hidden_states=emb).sample
                torch.nn.functional.mse_loss(pred.float(), x).backward()
                for p in [emb, *lora] if name == "stageA" else lora:
                    p.grad = None

            return fn
        z = torch.randn(1, 4, 16, 16)

        def fn():
            with torch.no_grad(), autocast(mode):
                vae.decode(z).sample.float()

        return fn

    out: dict = {}
    for name in parts:
        for mode in ("fp32", "bf16", "fp32", "bf16"):
            fn = case(name, mode)
            fn()  # warm-up
            runs = []
            for _ in range(3):
                c, w = _cpu(), time.perf_counter()
                fn()
                runs.append((time.perf_counter() - w, _cpu() - c))
            r = (statistics.median(x[0] for x in runs), statistics.median(x[1] for x in runs))
            out.setdefault(name, {}).setdefault(mode, []).append(r)
            print(f"{name} {mode}: {r[0]:.3f} s wall, {r[1]:.3f} s CPU", flush=True)
    for name, m in out.items():
        f32 = statistics.mean(c for _, c in m["fp32"])
        b16 = statistics.mean(c for _, c in m["bf16"])
        print(f"{name}: fp32 {f32:.2f} / bf16 {b16:.2f} CPU s -> bf16 {f32 / b16:.2f}x faster")
    return out


def memory_worker(mode: str) -> None:
    torch, pipe = _setup()
    from backend.imagic import stages
    from backend.imagic.guard import add_lora, lora_config

    if mode == "bf16-no-recast":
        stages.recast_frozen_weights = lambda model, dtype=None: contextlib.nullcontext()
    unet = pipe.unet
    prec = stages.Precision.resolve("no" if mode == "fp32" else "bf16", torch.device("cpu"))
    lat, emb = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 768)
    loaded = _rss_gib()
    c = _cpu()
    e_opt, _ = stages.optimise_embedding(
        unet,
        pipe.scheduler,
        lat,
        emb,
        steps=3,
        lr=1e-3,
        generator=torch.Generator().manual_seed(0),
        precision=prec,
    )
    a = _cpu() - c
    params = add_lora(unet, lora_config(4), seed=0)
    c = _cpu()
    stages.finetune_unet(
        unet,
        pipe.scheduler,
        lat,
        e_opt,
        params,
        steps=3,
        lr=1e-4,
        generator=torch.Generator().manual_seed(0),
        precision=prec,
    )
    print(
        "RESULT "
        + json.dumps(
            {
                "mode": mode,
                "loaded_gib": loaded,
                "stageA_cpu_s": a,
                "stageB_cpu_s": _cpu() - c,
                "peak_gib": _rss_gib(),
            }
        )
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", default=["fwd2", "fwd12", "stageA", "stageB", "vae"])
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_worker:
        memory_worker(args.memory_worker)
        return
    if not args.memory:
        speed(args.parts)
        return
    for mode in ("fp32", "bf16", "bf16-no-recast"):
        done = subprocess.run(
            [sys.executable, "-m", "bench.imagic_precision", "--memory-worker", mode],
            capture_output=True,
            text=True,
        )
        line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        print(line[-1][7:] if line else f"{mode} failed: {done.stderr[-2000:]}", flush=True)


if __name__ == "__main__":
    main()

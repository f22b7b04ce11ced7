"""Imagic benchmark: one edit followed by 5 further eta values, this engine vs. the naive public configuration.

Both configurations run the same stage code (``backend.imagic.stages``) on the same model with the same step
counts, each in a fresh subprocess so that its peak RSS is its own:

- ``engine``: ImagicPipeline defaults (LoRA fine-tune, gradient checkpointing, auto precision, tuned-state cache).
  The first request tunes and samples; the 5 eta changes hit the cache and only sample.
- ``naive``: what the public Stable Diffusion implementations do (diffusers' community imagic pipeline): full
  UNet fine-tune in fp32 with plain Adam, no checkpointing, nothing cached, the UNet overwritten in place, so every
  eta is a fresh run (reload the model, stage A, stage B, sample one image).

Models: ``--size tiny`` is the test suite's tiny pipeline (plumbing check, seconds); ``--size sd15`` is a
random-weight pipeline in the real SD-1.5 shapes (real FLOPs and memory; output is noise), built once and saved
under ``--work`` (~4.3 GB on disk).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.imagic --size tiny
    .venv/bin/python -m bench.imagic --size sd15 --res 128 --threads 2 --emb-steps 3 --ft-steps 3 --gen-steps 5
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ETAS = (0.7, 0.5, 0.6, 0.8, 0.9, 1.0)  # the edit, then 5 slider moves
PROMPT = "a photo of a sitting dog"


# ---- model folders ------------------------------------------------------------------------------------------------
def build_sd15_random(folder: Path) -> Path:
    """A StableDiffusionPipeline with random weights in SD-1.5's shapes (tests/tiny_models.py), saved once."""
    from tests.tiny_models import SD15, build_sd

    if (folder / "model_index.json").exists():
        return folder
    return build_sd(folder, "text2img", SD15)


def model_folder(size: str, work: Path) -> Path:
    if size == "tiny":
        from tests.tiny_models import build_tiny_sd

        folder = work / "tiny-sd"
        return folder if (folder / "model_index.json").exists() else build_tiny_sd(folder)
    return build_sd15_random(work / "sd15-random")


# ---- workers (one configuration per fresh process) ----------------------------------------------------------------
def _load(folder: str):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _input_image(res: int):
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:res, :res] / res
    base = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx * yy)], axis=2)
    return np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1).astype(np.float32)


def run_engine(args) -> dict:
    """This engine's defaults: tune once, then 5 eta changes served from the cache."""
    import tempfile

    from backend.imagic import ImagicParams, ImagicPipeline, TunedStateCache

    t0 = time.perf_counter()
    pipe = _load(args.model)
    load_s = time.perf_counter() - t0
    image = _input_image(args.res)
    requests = []
    with tempfile.TemporaryDirectory() as cache_dir:
        engine = ImagicPipeline.from_pipe(pipe, cache=TunedStateCache(cache_dir))
        for eta in ETAS:
            params = ImagicParams(
                PROMPT,
                etas=[eta],
                embedding_steps=args.emb_steps,
                finetune_steps=args.ft_steps,
                num_inference_steps=args.gen_steps,
                resolution=args.res,
            )
            r0 = time.perf_counter()
            out = engine(image, None, params)
            requests.append(
                {"eta": eta, "s": time.perf_counter() - r0, "cache_hit": out.cache_hit, **out.timings}
            )
    return {"load_s": load_s, "requests": requests}


def run_naive(args) -> dict:
    """The public configuration: every eta reloads the model and runs A (fp32 Adam), full-UNet B, then C."""
    import torch

    from backend.imagic import stages

    device = torch.device("cpu")
    precision = stages.Precision.resolve("no", device)
    image = _input_image(args.res)
    requests = []
    load_s = 0.0
    for eta in ETAS:
        r0 = time.perf_counter()
        pipe = _load(args.model)  # the previous run overwrote the UNet: a fresh copy is needed
        load_s += time.perf_counter() - r0
        timings = {}
        t = time.perf_counter()
        for m in (pipe.unet, pipe.vae, pipe.text_encoder):
            m.requires_grad_(False)
        latents = stages.encode_image(pipe.vae, image, device)
        e_tgt = stages.encode_text(pipe.text_encoder, pipe.tokenizer, PROMPT, device)
        gen = torch.Generator().manual_seed(0)
        e_opt, _ = stages.optimise_embedding(
            pipe.unet,
            pipe.scheduler,
            latents,
            e_tgt,
            steps=args.emb_steps,
            lr=2e-3,
            generator=gen,
            precision=precision,
        )
        timings["embedding"] = time.perf_counter() - t
        t = time.perf_counter()
        pipe.unet.train()  # as the public pipeline does
        stages.finetune_unet(
            pipe.unet,
            pipe.scheduler,
            latents,
            e_opt,
            list(pipe.unet.parameters()),
            steps=args.ft_steps,
            lr=5e-7,
            generator=gen,
            precision=precision,
        )
        pipe.unet.eval()
        timings["finetune"] = time.perf_counter() - t
        t = time.perf_counter()
        uncond = stages.encode_text(pipe.text_encoder, pipe.tokenizer, "", device)
        stages.generate(
            pipe.unet,
            pipe.vae,
            pipe.scheduler.config,
            e_tgt,
            e_opt,
            uncond,
            [eta],
            latent_hw=(args.res // 8, args.res // 8),
            steps=args.gen_steps,
            guidance=7.5,
            seed=0,
            precision=precision,
        )
        timings["generate"] = time.perf_counter() - t
        requests.append({"eta": eta, "s": time.perf_counter() - r0, "cache_hit": False, **timings})
        del pipe, latents, e_tgt, e_opt
        gc.collect()
    return {"load_s": load_s, "requests": requests}


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    import diffusers.pipelines.stable_diffusion  # noqa: F401  (import time is not what is measured)

    import backend.imagic  # noqa: F401

    t0 = time.perf_counter()
    result = (run_engine if args.worker == "engine" else run_naive)(args)
    result["wall_s"] = time.perf_counter() - t0
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
    print("RESULT " + json.dumps(result))


# ---- driver -------------------------------------------------------------------------------------------------------
def run_config(name: str, folder: Path, args) -> dict:
    cmd = [sys.executable, "-m", "bench.imagic", "--worker", name, "--model", str(folder)]
    cmd += ["--res", str(args.res), "--threads", str(args.threads)]
    cmd += [
        "--emb-steps",
        str(args.emb_steps),
        "--ft-steps",
        str(args.ft_steps),
        "--gen-steps",
        str(args.gen_steps),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1]
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def report(results: dict, args) -> str:
    eng, nai = results["engine"], results["naive"]
    rows = [
        "| config | wall s | peak RSS GiB | load s | first request s | each later eta s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in (("engine (defaults)", eng), ("naive (public)", nai)):
        later = [q["s"] for q in r["requests"][1:]]
        rows.append(
            f"| {name} | {r['wall_s']:.1f} | {r['peak_rss_gib']:.2f} | {r['load_s']:.1f} | "
            f"{r['requests'][0]['s']:.1f} | {sum(later) / len(later):.1f} |"
        )
    first_n = nai["requests"][0]
    derived = first_n["s"] + sum(q["generate"] for q in nai["requests"][1:])
    lines = [
        f"model {args.size}, input {args.res}x{args.res}, steps A={args.emb_steps} B={args.ft_steps} "
        f"C={args.gen_steps}, {args.threads} thread(s), etas {', '.join(map(str, ETAS))}",
        "",
        *rows,
        "",
        f"speed-up (naive wall / engine wall): {nai['wall_s'] / eng['wall_s']:.2f}x",
        f"peak memory ratio (engine / naive): {eng['peak_rss_gib'] / nai['peak_rss_gib']:.2f}",
        f"stage times, first request: engine {_stages(eng['requests'][0])}; naive {_stages(first_n)}",
        f"derived: naive tuned once, then 6 sampling runs (the community pipeline within one session): "
        f"{derived:.1f} s -> engine is {derived / eng['wall_s']:.2f}x faster",
    ]
    return "\n".join(lines)


def _stages(r: dict) -> str:
    return ", ".join(f"{k} {r[k]:.1f}s" for k in ("embedding", "finetune", "generate") if k in r)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=("tiny", "sd15"), default="tiny")
    ap.add_argument("--res", type=int, default=None, help="input side in px (default: 64 tiny, 128 sd15)")
    ap.add_argument("--emb-steps", type=int, default=3)
    ap.add_argument("--ft-steps", type=int, default=3)
    ap.add_argument("--gen-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "layeredit-bench-imagic"
    )
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--worker", choices=("engine", "naive"), help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.res is None:
        args.res = 64 if args.size == "tiny" else 128
    if args.worker:
        worker(args)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    folder = model_folder(args.size, args.work)
    print(f"model ready in {time.perf_counter() - t0:.1f} s: {folder}", flush=True)
    results = {name: run_config(name, folder, args) for name in ("engine", "naive")}
    text = report(results, args)
    print(text)
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **results}, indent=1)
        )


if __name__ == "__main__":
    main()

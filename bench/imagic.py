"""Imagic benchmark: this engine against the diffusers community pipeline as its users run it (issue 15).

One fresh subprocess per configuration (its peak RSS is its own), the same model, image, size and step counts
(E embedding steps, F fine-tune steps, S sampling steps), 6 etas: the edit at 0.7, then 5 slider moves.

- ``community``: ``bench/community_imagic.py``, a replica of ``imagic_stable_diffusion.py``: train once (full
  fp32 Adam fine-tune), then one call per alpha. Python as users start it: glibc's default malloc.
- ``lora``: ``ImagicPipeline`` defaults (LoRA, checkpointing auto) with the allocator setting ``python -m
  backend`` applies. First request (tune + sample), 5 later etas one request each (cache hits), the same 5 etas
  as one batched request, a preview request, and plain generations of the base model (diffusers'
  StableDiffusionPipeline, same steps and size) in the same process: the slider's yardstick. Its peak RSS is the
  peak of the engine's requests, taken before the yardstick runs (which keeps every part resident at once; the
  process's own peak is reported next to it).
- ``full``: the same with ``finetune=full`` (the paper's and the community's fine-tune).
- ``lora-fp32`` / ``full-fp32``: the same with ``precision=no``. ``lora`` and ``full`` run ``precision=auto``,
  which is bf16 autocast on a CPU with native bf16 (AVX512-BF16/AMX) and fp32 elsewhere; the community replica
  runs fp32, as its users run it.

Models: ``--size tiny`` is the test suite's tiny pipeline (plumbing, seconds); ``--size sd15`` has random weights
in the real SD-1.5 shapes (real FLOPs and memory; the output is noise), built once under ``--work`` (4 GB).
The extrapolation to other step counts uses per-step costs measured in the run (stage time / steps).

    .venv/bin/python -m bench.imagic --size tiny
    flock /work/heavy.lock .venv/bin/python -m bench.imagic --size sd15 --res 128 --steps 3/3/5,10/20/5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ETAS = (0.7, 0.5, 0.6, 0.8, 0.9, 1.0)  # the edit, then 5 slider moves
PROMPT = "a photo of a sitting dog"
CONFIGS = ("community", "lora", "full", "lora-fp32", "full-fp32")
COMMUNITY_DEFAULTS = (500, 1000, 50)  # E, F, S of imagic_stable_diffusion.py
OUR_DEFAULTS = (100, 150, 25)  # ImagicParams defaults (LoRA)


# ---- model folders ------------------------------------------------------------------------------------------------
def model_folder(size: str, work: Path) -> Path:
    from tests.tiny_models import SD15, build_sd, build_tiny_sd

    folder = work / ("tiny-sd" if size == "tiny" else "sd15-random")
    if (folder / "model_index.json").exists():
        return folder
    return build_tiny_sd(folder) if size == "tiny" else build_sd(folder, "text2img", SD15)


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


def _faults() -> tuple[int, float, float]:
    """(minor page faults, system seconds, CPU seconds) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, r.ru_stime, r.ru_utime + r.ru_stime


def _timed(fn, *a, **kw) -> tuple[object, dict]:
    f0, s0, c0 = _faults()
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    f1, s1, c1 = _faults()
    return out, {
        "s": time.perf_counter() - t0,
        "cpu_s": c1 - c0,
        "faults": f1 - f0,
        "sys_s": s1 - s0,
        "peak_rss_gib": _peak_rss_gib(),  # so far: says which request set the process's peak
        **_rss_split(),
    }


def _rss_split() -> dict:
    """Resident memory now, split: the process's own (anonymous) and mapped files' pages (the weights)."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssFile:")):
                    key, value = line.split(":")
                    out[key.lower().replace("rss", "rss_") + "_gib"] = int(value.split()[0]) / 2**20
    except OSError:
        pass
    return out


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def run_community(args) -> dict:
    """The replica: train once, then one call per alpha (nothing shared between calls)."""
    import torch

    from bench.community_imagic import CommunityImagicReplica

    torch.manual_seed(0)  # the published train() draws its noise from the global RNG
    pipe = _load(args.model)
    replica = CommunityImagicReplica(pipe)
    image = torch.from_numpy(_input_image(args.res)).permute(2, 0, 1)[None] * 2 - 1
    requests = []
    for i, eta in enumerate(ETAS):
        gen = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        f0, s0, c0 = _faults()
        if i == 0:
            replica.train(
                PROMPT,
                image,
                generator=gen,
                text_embedding_optimization_steps=args.E,
                model_fine_tuning_optimization_steps=args.F,
            )
        replica(alpha=eta, height=args.res, width=args.res, num_inference_steps=args.S, generator=gen)
        f1, s1, c1 = _faults()
        stages = {
            k: replica.timings[k]
            for k in (("embedding", "finetune", "generate") if i == 0 else ("generate",))
        }
        requests.append(
            {
                "eta": eta,
                "s": time.perf_counter() - t0,
                "cpu_s": c1 - c0,
                "faults": f1 - f0,
                "sys_s": s1 - s0,
                "peak_rss_gib": _peak_rss_gib(),
                **_rss_split(),
                **stages,
            }
        )
    return {"requests": requests}


def run_engine(args, config: str) -> dict:
    """This engine: tune once, 5 cache hits, the 5 etas batched, a preview, and plain base-model generations."""
    import tempfile

    from backend import malloc
    from backend.imagic import ImagicParams, ImagicPipeline, TunedStateCache

    finetune, _, fp32 = config.partition("-")
    pipe = _load(args.model)
    image = _input_image(args.res)
    out: dict = {"malloc": dict(malloc.status), "loaded_rss_gib": _peak_rss_gib()}

    def params(**kw) -> ImagicParams:
        base = dict(
            etas=[ETAS[0]],
            embedding_steps=args.E,
            finetune_steps=args.F,
            finetune=finetune,
            num_inference_steps=args.S,
            resolution=args.res,
            precision="no" if fp32 else "auto",
        )
        return ImagicParams(PROMPT, **{**base, **kw})

    requests = []
    with tempfile.TemporaryDirectory() as cache_dir:
        engine = ImagicPipeline.from_pipe(pipe, cache=TunedStateCache(cache_dir))
        for eta in ETAS:
            result, cost = _timed(engine, image, None, params(etas=[eta]))
            requests.append({"eta": eta, **cost, "cache_hit": result.cache_hit, **result.timings})
            if len(requests) == 1:
                out["info"] = {k: v for k, v in result.info.items() if k not in ("cache_key",)}
        result, cost = _timed(engine, image, None, params(etas=list(ETAS[1:])))
        out["batched"] = {"etas": list(ETAS[1:]), **cost, "cache_hit": result.cache_hit}
        result, cost = _timed(engine, image, None, params(etas=[ETAS[1]], preview=True))
        out["preview"] = {**cost, "cache_hit": result.cache_hit, "info": result.info.get("preview")}
    # the peak of this engine's requests (model loading included), before the yardstick below: diffusers' plain
    # call keeps every part resident (text encoder, VAE decoder and UNet together), so it can set the process's
    # peak without being part of the sequence measured; the process's own peak is kept as process_peak_rss_gib
    out["requests_peak_rss_gib"] = _peak_rss_gib()
    plain = []
    for _ in range(2):
        import torch

        gen = torch.Generator().manual_seed(0)
        _, cost = _timed(
            pipe,
            PROMPT,
            height=args.res,
            width=args.res,
            num_inference_steps=args.S,
            generator=gen,
            output_type="np",
        )
        plain.append(cost)
    out["plain"] = plain
    out["requests"] = requests
    return out


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    import diffusers.pipelines.stable_diffusion  # noqa: F401  (import time is not what is measured)

    import backend.imagic  # noqa: F401

    t0 = time.perf_counter()
    result = run_community(args) if args.worker == "community" else run_engine(args, args.worker)
    result["wall_s"] = time.perf_counter() - t0
    result["process_peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
    # what the table compares: the edit-and-slide sequence's peak (for the community: its whole process)
    result["peak_rss_gib"] = result.get("requests_peak_rss_gib", result["process_peak_rss_gib"])
    print("RESULT " + json.dumps(result))


# ---- driver -------------------------------------------------------------------------------------------------------
def run_config(name: str, folder: Path, steps: tuple[int, int, int], args) -> dict:
    E, F, S = steps
    cmd = [sys.executable]
    if name != "community":  # as `python -m backend` starts: the allocator setting before anything allocates
        cmd += ["-c", "from backend import malloc; malloc.configure(); from bench.imagic import main; main()"]
    else:
        cmd += ["-m", "bench.imagic"]
    cmd += ["--worker", name, "--model", str(folder), "--res", str(args.res), "--threads", str(args.threads)]
    cmd += ["--E", str(E), "--F", str(F), "--S", str(S)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    env.pop("GLIBC_TUNABLES", None)
    env.pop("LAYEREDIT_MALLOC", None)
    t0 = time.perf_counter()
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1]
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    result["process_s"] = time.perf_counter() - t0
    print(
        f"  {name} E/F/S={E}/{F}/{S}: {result['wall_s']:.1f} s, {result['peak_rss_gib']:.3f} GiB "
        f"(process with the yardstick: {result['process_peak_rss_gib']:.3f})",
        flush=True,
    )
    return result


def summarise(r: dict) -> dict:
    """first request, each later eta (mean of the 5 single requests), total, peak RSS, per-step costs."""
    first, later = r["requests"][0], r["requests"][1:]
    each = statistics.mean(q["s"] for q in later)
    s = {
        "first_s": first["s"],
        "each_later_s": each,
        "total_s": first["s"] + sum(q["s"] for q in later),
        "peak_rss_gib": r["peak_rss_gib"],
        "later_faults": statistics.mean(q["faults"] for q in later),
        "later_sys_s": statistics.mean(q["sys_s"] for q in later),
        "first_cpu_s": first.get("cpu_s", float("nan")),
        "each_later_cpu_s": statistics.mean(q.get("cpu_s", float("nan")) for q in later),
    }
    s["total_cpu_s"] = s["first_cpu_s"] + 5 * s["each_later_cpu_s"]
    if "batched" in r:
        s["batched_per_eta_s"] = r["batched"]["s"] / len(r["batched"]["etas"])
        s["batched_per_eta_cpu_s"] = r["batched"].get("cpu_s", float("nan")) / len(r["batched"]["etas"])
        s["preview_s"] = r["preview"]["s"]
        s["preview_cpu_s"] = r["preview"].get("cpu_s", float("nan"))
        s["plain_s"] = statistics.median(p["s"] for p in r["plain"])
        s["plain_cpu_s"] = statistics.median(p.get("cpu_s", float("nan")) for p in r["plain"])
    return s


def _r(a: dict, b: dict, key: str, key_b: str | None = None) -> str:
    """``a[key] / b[key_b]`` on wall clock, then on CPU time in brackets."""
    key_b = key_b or key
    wall = a[key + "_s"] / b[key_b + "_s"]
    cpu = a[key + "_cpu_s"] / b[key_b + "_cpu_s"]
    return f"{wall:.2f}x [{cpu:.2f}x]"


def per_step(results: dict, sets: list[tuple[int, int, int]]) -> dict:
    """Per-step CPU seconds from the largest step set run: stage wall time / steps, scaled by that request's
    CPU/wall ratio (the cores are shared: wall time depends on the load of the minute, CPU time much less).
    Sample step = later-eta request CPU time / S (includes the VAE decode's share)."""
    out = {}
    for name in CONFIGS:
        done = [st for st in sets if f"{name}@{st[0]}/{st[1]}/{st[2]}" in results]
        if not done:
            continue
        E, F, S = done[-1]
        run = results[f"{name}@{E}/{F}/{S}"]
        first = run["requests"][0]
        k = first.get("cpu_s", first["s"]) / first["s"]
        later = run["requests"][1:]
        out[name] = {
            "embedding_step_s": k * first["embedding"] / max(E, 1),
            "finetune_step_s": k * first["finetune"] / max(F, 1),
            "sample_step_s": statistics.mean(q.get("cpu_s", q["s"]) for q in later) / S,
        }
        if "batched" in run:
            b = run["batched"]
            out[name]["batched_sample_step_per_eta_s"] = b.get("cpu_s", b["s"]) / len(b["etas"]) / S
    return out


def extrapolate(steps: dict, E: int, F: int, S: int, n_etas: int = 6) -> dict:
    """Seconds for one edit + (n_etas - 1) eta changes at E/F/S from the per-step costs."""
    out = {}
    for name, c in steps.items():
        tune = E * c["embedding_step_s"] + F * c["finetune_step_s"]
        out[name] = tune + n_etas * S * c["sample_step_s"]
        if "batched_sample_step_per_eta_s" in c:
            out[name + " (later etas batched)"] = (
                tune + S * c["sample_step_s"] + (n_etas - 1) * S * c["batched_sample_step_per_eta_s"]
            )
    return out


def report(results: dict, sets: list[tuple[int, int, int]], args) -> str:
    lines = [
        f"model {args.size}, {args.res}x{args.res}, {args.threads} thread(s), etas {', '.join(map(str, ETAS))}",
        "",
        "| E/F/S | config | first request s (CPU s) | each later eta s (CPU s) | total s (CPU s) | peak RSS GiB "
        "| later-eta page faults |",
        "|---|---|---|---|---|---|---|",
    ]
    for e, f, s in sets:
        for name in CONFIGS:
            r = results.get(f"{name}@{e}/{f}/{s}")
            if r is None:
                continue
            m = summarise(r)
            lines.append(
                f"| {e}/{f}/{s} | {name} | {m['first_s']:.1f} ({m['first_cpu_s']:.1f}) | "
                f"{m['each_later_s']:.2f} ({m['each_later_cpu_s']:.2f}) | {m['total_s']:.1f} ({m['total_cpu_s']:.1f}) | "
                f"{m['peak_rss_gib']:.3f} | {m['later_faults']:.0f} |"
            )
    lines += ["", "Ratios within each set, wall clock [CPU time in brackets]:", ""]
    for e, f, s in sets:
        com = results.get(f"community@{e}/{f}/{s}")
        if com is None:
            continue
        c = summarise(com)
        for name in CONFIGS[1:]:
            r = results.get(f"{name}@{e}/{f}/{s}")
            if r is None:
                continue
            m = summarise(r)
            lines.append(
                f"- {e}/{f}/{s} {name}: first request {_r(c, m, 'first')} faster, memory "
                f"{m['peak_rss_gib'] / c['peak_rss_gib']:.4f}x, each later eta {_r(m, c, 'each_later', 'each_later')} "
                f"a community call, batched {_r(m, c, 'batched_per_eta', 'each_later')} per eta, "
                f"preview {_r(m, c, 'preview', 'each_later')}, later eta vs plain generation in the same "
                f"process {_r(m, m, 'each_later', 'plain')}, total {_r(c, m, 'total')} faster"
            )
    steps = per_step(results, sets)
    lines += [
        "",
        "Per-step CPU costs (s): "
        + json.dumps({k: {a: round(b, 3) for a, b in v.items()} for k, v in steps.items()}),
    ]
    for E, F, S in (COMMUNITY_DEFAULTS, OUR_DEFAULTS):
        ex = extrapolate(steps, E, F, S)
        lines.append(
            f"Extrapolated edit + 5 etas at E/F/S={E}/{F}/{S}: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in ex.items())
        )
    if "community" in steps and "lora" in steps:
        com = extrapolate(steps, *COMMUNITY_DEFAULTS)["community"]
        ours = extrapolate(steps, *OUR_DEFAULTS)
        lines.append(
            f"Community defaults vs ours with our defaults (LoRA {OUR_DEFAULTS}): {com / ours['lora']:.1f}x "
            f"(most of it from fewer steps; quality not checkable without real weights)"
        )
    return "\n".join(lines)


def parse_sets(text: str) -> list[tuple[int, int, int]]:
    sets = []
    for part in text.split(","):
        e, f, s = (int(x) for x in part.split("/"))
        sets.append((e, f, s))
    return sets


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=("tiny", "sd15"), default="tiny")
    ap.add_argument("--res", type=int, default=None, help="input side in px (default: 64 tiny, 128 sd15)")
    ap.add_argument("--steps", default="3/3/5", help="E/F/S sets, comma-separated (e.g. 3/3/5,10/20/5)")
    ap.add_argument("--configs", default="community,lora,full", help=f"which of {','.join(CONFIGS)} to run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "layeredit-bench-imagic"
    )
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--E", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--F", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--S", type=int, default=5, help=argparse.SUPPRESS)
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
    sets = parse_sets(args.steps)
    configs = [c for c in args.configs.split(",") if c]
    results = {}
    for steps in sets:
        for name in configs:
            results[f"{name}@{steps[0]}/{steps[1]}/{steps[2]}"] = run_config(name, folder, steps, args)
            if args.json:  # keep what is done if a later configuration fails
                args.json.write_text(
                    json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **results}, indent=1)
                )
    text = report(results, sets, args)
    print(text)


if __name__ == "__main__":
    main()

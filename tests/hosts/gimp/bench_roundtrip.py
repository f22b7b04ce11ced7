"""GIMP round trip of a big layer through the installed plug-in (real GIMP 3 in the chroot, as root).

The backend is the product server with ``erase`` swapped for an echo (slow_backend.py --echo), so the
figures are the plug-in's share: GEGL read of the region, submit + backend decode/encode + receive, and the
new layer's GEGL write. The selection covers the whole layer, so the whole layer travels. Run:

    .venv/bin/python tests/hosts/gimp/bench_roundtrip.py [--size 4096] [--runs 3]

Each run is a fresh GIMP; the plug-in prints its phase timings to GIMP's log, parsed here.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.hosts.gimp.harness import PROJECT, GimpSandbox, chroot_ready  # noqa: E402

TIMES = re.compile(r"layeredit: erase job \w+: (.*)")


def one_run(size: int) -> dict:
    box = GimpSandbox.create()
    env = {"LAYEREDIT_RUNTIME_DIR": str(box.runtime_dir), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    server = subprocess.Popen(
        [
            str(PROJECT / ".venv" / "bin" / "python"),
            str(Path(__file__).with_name("slow_backend.py")),
            "--echo",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not (box.runtime_dir / "backend.json").exists():
            time.sleep(0.1)
        layer = {"width": size, "height": size, "x": 0, "y": 0, "object": [0, 0, 1, 1], "fast_fill": True}
        case = {
            "image": {"width": size, "height": size},
            "layer": layer,
            "selection": {"shape": "rect", "rect": [0, 0, size, size]},
            "procedure": "plug-in-layeredit-erase",
            "no_dumps": True,
        }
        report = box.run_driver(case, timeout=600)
        assert report["status"] == "success", report.get("error")
        match = TIMES.search(report["log"])
        assert match, report["log"][-2000:]
        phases = {k: float(v) for k, v in (item.split() for item in match.group(1).split(", "))}
        return {**phases, "proc_run_s": report["proc_run_s"]}
    finally:
        server.terminate()
        server.wait(15)
        box.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not chroot_ready():
        print("GIMP chroot missing: run tests/hosts/gimp/setup.sh as root")
        return 1
    runs = [one_run(args.size) for _ in range(args.runs)]
    print(f"{args.size}x{args.size} RGBA u8 layer + u8 selection, {args.runs} runs, medians:")
    for key in ("read_s", "job_s", "write_s", "total_s", "proc_run_s"):
        print(f"  {key:11s} {statistics.median(r[key] for r in runs) * 1000:8.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

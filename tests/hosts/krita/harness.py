"""Run a real Krita (Debian's 5.1, headless on an Xvfb display, tests/hosts/xvfb.py) with the plugin installed by its own installer and
a scripted job (krita_plugin/layeredit/scripted.py), against a backend started here.

Used by tests/test_krita_host.py; also runnable by hand:
``python -m tests.hosts.krita.harness OUT_DIR`` (real erase on a synthetic scene, prints the report).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.hosts import xvfb

ROOT = Path(__file__).resolve().parents[3]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def krita_available() -> bool:
    return bool(shutil.which("krita") and shutil.which("Xvfb"))


@dataclass
class Backend:
    proc: subprocess.Popen
    runtime: Path
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_backend(
    work: Path, args: list[str] | None = None, timeout: float = 120.0, env: dict[str, str] | None = None
) -> Backend:
    """``.venv/bin/python -m backend serve`` (or another module) with a private runtime dir; waits for its
    connection file."""
    runtime = work / "run"
    runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    log = work / "backend.log"
    env = {**os.environ, "LAYEREDIT_RUNTIME_DIR": str(runtime), "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [str(VENV_PYTHON), "-m", *(args or ["backend", "serve", "--no-model-report"])]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    conn = runtime / "backend.json"
    end = time.monotonic() + timeout
    while not conn.exists():
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            raise RuntimeError(f"backend did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    return Backend(proc, runtime, log)


def stop_backend_of(runtime: Path) -> None:
    """Stop a backend the plugin started (its pid is in the connection file of ``runtime``)."""
    conn = runtime / "backend.json"
    if conn.exists():
        try:
            os.kill(int(json.loads(conn.read_text("utf-8"))["pid"]), signal.SIGTERM)
        except (OSError, ValueError, KeyError):
            pass


def fresh_home(work: Path, krita_python: str | None = None) -> dict[str, str]:
    """A fresh HOME with the plugin installed by krita_plugin.installer (the real install path)."""
    sys.path.insert(0, str(ROOT))
    from krita_plugin import installer

    home = work / "home"
    (home / ".config").mkdir(parents=True, exist_ok=True)
    installer.install(
        ROOT,
        VENV_PYTHON,
        resource_dir=home / ".local" / "share" / "krita",
        krita_python=krita_python,
        kritarc=home / ".config" / "kritarc",
    )
    run = home / "xdg-run"
    run.mkdir(mode=0o700, exist_ok=True)
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_RUNTIME_DIR": str(run),
    }


def run_krita(
    work: Path,
    spec: dict,
    backend: Backend | None,
    timeout: float = 300.0,
    krita_python: str | None = None,
    display: xvfb.Xvfb | None = None,
) -> dict:
    """Start Krita with the scripted job on ``display`` (the tests' session Xvfb; None: one just for this run);
    return report.json (raises with Krita's log when there is none)."""
    if display is None:
        own = xvfb.start()
        try:
            return run_krita(work, spec, backend, timeout, krita_python, own)
        finally:
            own.stop()
    if not display.alive():
        raise RuntimeError(f"the Xvfb server {display.display} died (log: {display.log})")
    out = work / "out"
    out.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "out_dir": str(out)}
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec), "utf-8")
    env = {
        **os.environ,
        **fresh_home(work, krita_python),
        "LAYEREDIT_KRITA_SCRIPT": str(spec_path),
        "QT_QPA_PLATFORM": "xcb",
        **display.env,
    }
    if backend is not None:
        env["LAYEREDIT_RUNTIME_DIR"] = str(backend.runtime)
    else:
        env["LAYEREDIT_RUNTIME_DIR"] = str(work / "run")
    log = work / "krita.log"
    with open(log, "wb") as f:
        proc = subprocess.run(
            ["krita", "--nosplash"],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    report = out / "report.json"
    if not report.exists():
        partial = out / "report.partial.json"
        raise RuntimeError(
            f"Krita exited {proc.returncode} without a report; partial: "
            f"{partial.read_text() if partial.exists() else None}\nlog tail:\n"
            f"{log.read_text(errors='replace')[-3000:]}"
        )
    return json.loads(report.read_text("utf-8"))


def scene_bgra(w: int, h: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A textured background with a solid disc on it (BGRA u8, Krita's layout) and a loose box around the disc."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([60 + (xx * 90) // w, 110 + (yy * 60) // h, 150 + ((xx + yy) % 7) * 4], axis=-1).astype(
        np.uint8
    )
    cx, cy, r = w // 2, h // 2, min(w, h) // 6
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    rgb[disc] = (220, 30, 40)
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((h, w, 1), 255, np.uint8)], axis=-1)
    pad = r // 2 + 4
    return np.ascontiguousarray(bgra), (cx - r - pad, cy - r - pad, 2 * (r + pad), 2 * (r + pad))


def read_raw(path: Path, w: int, h: int, channels: int = 4) -> np.ndarray:
    return np.frombuffer(path.read_bytes(), np.uint8).reshape(h, w, channels)


def main(argv: list[str]) -> int:  # pragma: no cover - manual use
    work = Path(argv[0])
    work.mkdir(parents=True, exist_ok=True)
    w, h = 160, 120
    img, sel = scene_bgra(w, h)
    (work / "layer.raw").write_bytes(img.tobytes())
    backend = start_backend(work)
    try:
        spec = {
            "width": w,
            "height": h,
            "layer_raw": str(work / "layer.raw"),
            "layer_rect": [0, 0, w, h],
            "selection": list(sel),
            "mode": "Erase",
            "set_selection": True,
            "screenshot": True,
        }
        vendor = os.environ.get("LAYEREDIT_VENDOR_PYZMQ")  # e.g. 3.11: Krita loads the vendored wheel
        print(json.dumps(run_krita(work, spec, backend, krita_python=vendor), indent=1))
    finally:
        backend.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))

"""What the backend's load pays so the user's first erase does not (backend.ops.erase.warm_up): no numba compile
left for an erase after it, and the heap faulted in ahead of a big layer (backend.malloc.prefault).

Both run in a fresh process: in this one, earlier tests may already have compiled a signature or grown the
heap, which would hide what warm_up leaves out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_SIGNATURES = """
import json, sys
import cv2
import numpy as np
from numba.core.registry import CPUDispatcher
from backend.erase import patchmatch, structure
from backend.ops.base import JobContext, OpInputs
from backend.ops.erase import EraseOp, warm_up

def signatures():
    return {
        f"{mod.__name__}.{name}": sorted(str(s) for s in obj.signatures)
        for mod in (patchmatch, structure)
        for name, obj in vars(mod).items()
        if isinstance(obj, CPUDispatcher)
    }

if sys.argv[1] == "warm":
    warm_up()
before = signatures()
image = cv2.cvtColor(cv2.imread("examples/coffee.png"), cv2.COLOR_BGR2RGB)
selection = cv2.imread("examples/coffee-spoon-selection.png", cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
used = {}
real = structure.find_structure
def spy(*args, **kwargs):
    found = real(*args, **kwargs)
    used["structure"] = found is not None
    return found
structure.find_structure = spy
res = EraseOp().run(OpInputs(image, selection), EraseOp.spec.validate({"fill": "auto"}), JobContext())
after = signatures()
new = {k: [s for s in v if s not in before.get(k, [])] for k, v in after.items()}
print(json.dumps({"fill": res.meta["fill"], "structure": used.get("structure"),
                  "new": {k: v for k, v in new.items() if v}, "warmed": sorted(k for k, v in before.items() if v)}))
"""


def _erase_signatures(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _SIGNATURES, mode],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_after_warm_up_an_erase_compiles_no_numba_kernel():
    """The README's erase (the coffee's spoon: snap, structure path, meld) after warm_up: every numba kernel it
    calls already has the signature it needs. Without warm_up the same erase compiles (or loads) them itself,
    which is what the check sees."""
    warm = _erase_signatures("warm")
    assert warm["fill"] == "patchmatch" and warm["structure"] is True  # the default path, guide channels on
    assert warm["new"] == {}, f"compiled during the erase despite warm_up: {warm['new']}"
    assert {"backend.erase.patchmatch._patchmatch", "backend.erase.structure._flood"} <= set(warm["warmed"])
    cold = _erase_signatures("cold")
    assert "backend.erase.patchmatch._patchmatch" in cold["new"]  # the check does see a first compile


_PREFAULT = """
import json, resource, sys
import numpy as np
from backend import malloc
state = malloc.configure()
done = malloc.prefault(96 << 20) if sys.argv[1] == "prefault" else False
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(64 << 20, dtype=np.uint8)  # a 4096x4096 RGBA layer's worth
print(json.dumps({"state": state, "done": done, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_prefault_leaves_a_big_buffer_nothing_to_fault():
    def run(mode: str, env_extra: dict | None = None) -> dict:
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env_extra or {})}
        done = subprocess.run(
            [sys.executable, "-c", _PREFAULT, mode],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    warm, cold = run("prefault"), run("none")
    if warm["state"]["malloc"] == "not glibc: unchanged":
        pytest.skip("not glibc")
    assert warm["done"] is True
    assert warm["faults"] <= 2  # the buffer reuses heap pages faulted in by prefault
    assert cold["faults"] >= (64 << 20) // (2 << 20)  # without it: faulted in now (huge pages at best)
    off = run("prefault", {"LAYEREDIT_MALLOC": "off"})
    assert off["done"] is False  # glibc's defaults would trim it straight back: nothing done


def test_a_stopping_server_cuts_the_warm_up_short(monkeypatch):
    """The server asks ``cancelled`` between the warm-up's steps and joins the thread on stop: a stop must not
    wait for two erases and a heap prefault, and nothing after the stop may run."""
    from backend import malloc
    from backend.erase import patchmatch
    from backend.ops import erase

    ran: list[str] = []
    monkeypatch.setattr(patchmatch, "warm_up", lambda: ran.append("kernels") or 0.0)
    monkeypatch.setattr(erase.EraseOp, "run", lambda *a, **k: ran.append("erase"))
    monkeypatch.setattr(malloc, "prefault", lambda n: ran.append("prefault") or True)
    erase.warm_up(cancelled=lambda: True)
    assert ran == ["kernels"]
    ran.clear()
    erase.warm_up(cancelled=lambda: len(ran) >= 2)  # the stop arrives during the first erase
    assert ran == ["kernels", "erase"]
    ran.clear()
    erase.warm_up()
    assert ran == ["kernels", "erase", "erase", "prefault"]


WAIT_FOR = {"during": "erase warm-up: a small erase", "after": "erase warmed up"}


@pytest.mark.parametrize("at", ["during", "after"])
def test_the_server_warms_erase_up_and_stops_cleanly_whenever_sigterm_comes(tmp_path, at):
    """``serve`` runs the whole erase warm-up by default. A SIGTERM while it runs inside onnxruntime aborted the
    process when the thread was simply left behind (rc -6, day 7); the server now cuts it short and joins it."""
    import os
    import signal
    import time

    from protocol import connection

    conn = tmp_path / "backend.json"
    log = tmp_path / "stderr.txt"
    env = dict(os.environ, LAYEREDIT_REGISTRY="tests.test_server_support:registry", PYTHONPATH=str(ROOT))
    env["LAYEREDIT_RUNTIME_DIR"] = str(tmp_path)
    env.pop("LAYEREDIT_WARM_UP", None)
    cmd = [sys.executable, "-m", "backend", "serve", "--no-model-report", "--connection-file", str(conn)]
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*cmd, "--device", "cpu", "--log-level", "debug"], cwd=ROOT, env=env, stderr=err
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            ready = conn.exists() and connection.read(conn).pid == proc.pid
            if ready and WAIT_FOR[at] in log.read_text():
                break
            time.sleep(0.05)
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0, log.read_text()
        text = log.read_text()
        assert "could not warm" not in text
        if at == "after":
            assert "erase warmed up" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

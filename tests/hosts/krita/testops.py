"""Deterministic stand-in ops for plugin tests (no models): they prove plumbing, layouts and lifecycle.

``python -m tests.hosts.krita.testops CONNECTION_FILE [--drop-first N]`` serves them (a separate process the tests
can kill); ``--drop-first N``: its guard cuts the first N connections' first messages unread (``DropFirst``).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np

from backend.guard import PeerGuard
from backend.ops import Op, OpResult, OpSpec, ParamSpec, Registry

RED = {"uint8": 255, "uint16": 65535}
GATE = threading.Event()  # Slow waits for it (in-process tests set it)


class PaintRed(Op):
    """Selected pixels become opaque red (RGBA order as ops see it). Two masks, as the real erase sends: the
    region it painted (the selection) and the "object" (the selection's even rows), so a host that selects the
    object afterwards can be told from one that selects the region."""

    spec = OpSpec(
        "erase",
        "test erase",
        (
            ParamSpec("grow", "int", 0, "unused", min=0, max=10),
            ParamSpec("seed", "int", 1, "unused", advanced=True),
        ),
        needs_selection=True,
    )

    def run(self, inputs, params, ctx):
        img = inputs.image.copy()
        sel = inputs.selection > 0.5
        top = RED.get(img.dtype.name, 1.0)
        ctx.progress("paint", 1, 2, np.zeros((8, 8, 3), np.uint8))
        img[sel, 0] = top
        img[sel, 1] = 0
        img[sel, 2] = 0
        img[sel, 3] = top
        region = (sel * 255).astype(np.uint8)
        obj = region.copy()
        obj[1::2] = 0
        return OpResult(img, mask=region, meta={"masks": ["region", "object"]}, object_mask=obj)


def soft_ramp(h: int, w: int) -> np.ndarray:
    """Every 8-bit value in turn, row-major over an h x w region (all 256 when h * w >= 256)."""
    return (np.arange(h * w, dtype=np.int64) % 256).astype(np.uint8).reshape(h, w)


class SoftSnap(Op):
    """Select object's stand-in: the mask is ``soft_ramp`` over the region, so a host test can check that
    partial values (54, 127, ...) become the same selection values (GIMP once brightened them)."""

    spec = OpSpec("snap", "test snap: a ramp of every mask value", (), needs_selection=True)

    def run(self, inputs, params, ctx):
        h, w = inputs.image.shape[:2]
        return OpResult(None, mask=soft_ramp(h, w))


# Slow's most steps of 20 ms (~8 s); an in-process test raises it to hold a job longer, a backend process
# started with LAYEREDIT_TEST_HOLD_STEPS too (the real-Krita reconnect test)
HOLD_STEPS = int(os.environ.get("LAYEREDIT_TEST_HOLD_STEPS", "400"))


class Slow(Op):
    """Runs until GATE is set (or ~8 s), checking for cancel (a model's steps); one candidate per eta."""

    spec = OpSpec(
        "imagic",
        "test imagic",
        (
            ParamSpec("prompt", "str", "", "text"),
            ParamSpec("eta", "float_list", [0.7], "eta", min=0.0, max=1.5),
        ),
    )

    def run(self, inputs, params, ctx):
        for i in range(HOLD_STEPS):
            ctx.check_cancelled()
            if GATE.wait(0.02):
                break
            ctx.progress("tune", i, 400)
        extra = [inputs.image.copy() for _ in params["eta"][1:]]  # one candidate per further eta
        return OpResult(inputs.image.copy(), extra_images=extra)


def registry() -> Registry:
    return Registry({"erase": PaintRed, "imagic": Slow, "snap": SoftSnap})


class DropFirst(PeerGuard):
    """Cuts the first ``n`` unproven connections whose first message arrives, with that message unread: what
    the real guard does to a young connection past its caps (``_drop``: the TCP socket is shut down), so a
    host's first hello is lost as it can be past 64 hosts at once or during a flood."""

    def __init__(self, n: int):
        super().__init__()
        self.left = n

    def admit(self, fd: int | None) -> bool:
        conn = self._conns.get(fd) if fd is not None else None
        if conn is not None and self.left > 0 and not conn.proven and not conn.dropped:
            self.left -= 1
            self._drop(fd)
            print(f"DropFirst: cut a connection with its first message unread ({self.left} left)", flush=True)
            return False
        return super().admit(fd)


def main(argv: list[str]) -> int:
    from backend.server import Server, ServerConfig

    server = Server(ServerConfig(connection_file=Path(argv[0]), report_models=False), registry(), None)
    if "--drop-first" in argv:
        server.guard = DropFirst(int(argv[argv.index("--drop-first") + 1]))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The backend for the host cancel test: the product server and ops, with ``erase`` swapped for a slow
stand-in that steps until cancelled, so the test can kill the plug-in mid-job deterministically (the real
erase finishes too fast to be killed reliably). Everything else (server, jobs, wire, cancel) is the product's.

Usage: LAYEREDIT_RUNTIME_DIR=... python tests/hosts/gimp/slow_backend.py [--echo | --soft] [--drop-first N]
(``--echo``: ``erase`` returns the image at once, for tests/hosts/gimp/bench_roundtrip.py; ``--soft``:
``snap`` returns a ramp of every 8-bit mask value, for the soft-selection test; ``--drop-first N``: the guard
cuts the first N connections' first messages unread, tests/hosts/krita/testops.py's ``DropFirst``.)
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from backend.ops import Op, OpResult, OpSpec, product_registry  # noqa: E402
from backend.server import Server, ServerConfig  # noqa: E402

STEPS = 1200  # 60 s at 50 ms: far longer than the test needs to kill the plug-in


class SlowErase(Op):
    spec = OpSpec("erase", "slow stand-in for the cancel test", (), needs_selection=True)

    def run(self, inputs, params, ctx):
        for step in range(STEPS):
            ctx.check_cancelled()
            ctx.progress("waiting", step + 1, STEPS)
            time.sleep(0.05)
        return OpResult(inputs.image)


class EchoErase(Op):
    """For the round-trip benchmark: the plug-in's and the protocol's share, without any model time."""

    spec = OpSpec("erase", "echo stand-in for the GIMP round-trip benchmark", (), needs_selection=True)

    def run(self, inputs, params, ctx):
        return OpResult(inputs.image)


def main() -> None:
    registry = product_registry()
    registry.register(EchoErase if "--echo" in sys.argv else SlowErase)
    if "--soft" in sys.argv:
        from tests.hosts.krita.testops import SoftSnap

        registry.register(SoftSnap)
    server = Server(ServerConfig(report_models=False), registry=registry, models_factory=None)
    if "--drop-first" in sys.argv:
        from tests.hosts.krita.testops import DropFirst

        server.guard = DropFirst(int(sys.argv[sys.argv.index("--drop-first") + 1]))
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    server.serve_forever()


if __name__ == "__main__":
    main()

"""Flood: sockets without the key send big unsigned messages while a signed client keeps working.

The backend runs in its own process (``python -m backend serve``) so its peak resident memory (VmHWM) is its
own. Flood sockets send messages just under the server's message limit, with a well-formed but wrong
signature (the worst case: the server must hash the buffer to find out), for ``seconds``; meanwhile one
signed client runs jobs and pings. Reports the server's peak RSS growth, the bytes the flood offered, and
the signed client's round trips (all must succeed).

    OMP_NUM_THREADS=1 .venv/bin/python bench/flood.py --sockets 24 --seconds 6 --max-pixels 250000
    .venv/bin/python bench/flood.py --backend-root /tmp/old-checkout    # the same flood against other code

``--rss-cap-mb`` kills the server when its RSS passes the cap (a shared machine must not be swamped by a
backend without the bounds): the report then says so instead of giving its peak.

``--partial-mib N`` is review13's slow flood instead: each socket speaks ZMTP itself, announces an (N+1) MiB
message, sends N MiB of it and never finishes it (ZeroMQ holds it, the server never reads a message, so no
bad signature), holds ``--hold`` s, then closes and reconnects, ``--cycles`` times. Reports per cycle the
sockets the server had not hung up on and its RSS growth (sampled every 0.2 s) over the cycle:

    OMP_NUM_THREADS=1 .venv/bin/python bench/flood.py --sockets 64 --partial-mib 16 --hold 12 --cycles 3 \
        --max-pixels 2000000
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.wire_images import array_buffer  # noqa: E402
from protocol import connection, wire  # noqa: E402
from protocol.client import Client  # noqa: E402
from protocol.errors import ProtocolError  # noqa: E402


@dataclass
class FloodReport:
    sockets: int
    seconds: float
    message_bytes: int
    max_message_bytes: int = 0
    offered_bytes: int = 0  # handed to ZeroMQ by the flood sockets (what they tried to make the server hold)
    baseline_rss_mb: float = 0.0  # server VmHWM after start and one job, before the flood
    peak_rss_mb: float = 0.0  # server VmHWM after the flood
    signed_jobs: int = 0
    signed_pings: int = 0
    signed_errors: list[str] = field(default_factory=list)
    ping_p50_ms: float = 0.0
    ping_max_ms: float = 0.0
    killed_at_cap_mb: float = 0.0  # non-zero: the server's RSS passed --rss-cap-mb and it was killed there

    @property
    def growth_mb(self) -> float:
        return self.peak_rss_mb - self.baseline_rss_mb


def _vm(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _serve(workdir: Path, max_pixels: int, backend_root: Path) -> tuple[subprocess.Popen, Path]:
    conn = workdir / "backend.json"
    env = dict(
        os.environ,
        LAYEREDIT_REGISTRY="tests.test_server_support:registry",
        LAYEREDIT_RUNTIME_DIR=str(workdir),
        PYTHONPATH=str(backend_root),
        OMP_NUM_THREADS="1",
        LAYEREDIT_WARM_UP="fill",  # the flood's memory, not the erase warm-up's heap (read by newer code only)
    )
    cmd = [sys.executable, "-m", "backend", "serve", "--no-model-report", "--device", "cpu"]
    cmd += ["--max-pixels", str(max_pixels), "--connection-file", str(conn)]
    if not (backend_root / "backend" / "guard.py").exists():  # older code: its message limit was a flag
        cmd += ["--max-message-mb", str(max(1, (max_pixels * 20 + (2 << 20)) >> 20))]
    proc = subprocess.Popen(cmd, cwd=backend_root, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            if connection.read(conn).pid == proc.pid:
                return proc, conn
        except ProtocolError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the backend did not start")
        time.sleep(0.05)


def _flood(endpoint: str, payload: bytes, until: float, offered: list[int], lock: threading.Lock) -> None:
    """One socket without the key: big messages with a well-formed, wrong signature, as fast as it can."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 4)
    sock.connect(endpoint)
    desc = {"role": "image", "width": len(payload) // 4, "height": 1, "channels": 4, "dtype": "u8"}
    header = json.dumps(
        {"protocol": "1.0", "type": "submit", "id": "x", "op": "echo", "buffers": [{**desc, "order": "RGBA"}]}
    ).encode()
    frame = zmq.Frame(payload)  # one buffer, referenced by every send: the flood costs this process nothing
    sent = 0
    while time.monotonic() < until:
        try:
            sock.send_multipart(
                [wire.DELIMITER, secrets.token_hex(32).encode(), header, frame], copy=False, flags=zmq.NOBLOCK
            )
            sent += len(payload)
        except zmq.Again:
            time.sleep(0.005)
    sock.close(linger=0)
    with lock:
        offered[0] += sent


def _watch(proc: subprocess.Popen, cap_mb: float, until: float, report: FloodReport) -> None:
    while time.monotonic() < until and proc.poll() is None:
        try:
            rss = _vm(proc.pid, "VmRSS")
        except OSError:
            return
        if rss > cap_mb:
            report.killed_at_cap_mb = rss
            proc.kill()
            return
        time.sleep(0.02)


def run_flood(
    sockets: int = 24,
    seconds: float = 6.0,
    max_pixels: int = 250_000,
    workdir: Path | None = None,
    backend_root: Path = ROOT,
    rss_cap_mb: float = 0.0,
) -> FloodReport:
    tmp = Path(workdir or tempfile.mkdtemp(prefix="layeredit-flood-"))
    proc, conn = _serve(tmp, max_pixels, backend_root)
    try:
        with Client.connect(conn, shm="off") as client:
            caps = client.hello()
            limit = int(caps["limits"]["max_message_bytes"])
            img = np.random.default_rng(0).integers(0, 255, (64, 64, 4), dtype=np.uint8)
            client.run("echo", {}, image=array_buffer(img), timeout=60)
            report = FloodReport(sockets, seconds, 0, limit)
            report.baseline_rss_mb = _vm(proc.pid, "VmHWM")
            # just under the limit (header and framing included), a multiple of 4 bytes (RGBA)
            size = (limit - wire.MAX_HEADER_BYTES // 2) // 4 * 4
            report.message_bytes = size
            payload = secrets.token_bytes(size)
            offered, lock = [0], threading.Lock()
            until = time.monotonic() + seconds
            if rss_cap_mb:
                threading.Thread(
                    target=_watch, args=(proc, rss_cap_mb, until + 60, report), daemon=True
                ).start()
            threads = [
                threading.Thread(
                    target=_flood, args=(connection.read(conn).endpoint, payload, until, offered, lock)
                )
                for _ in range(sockets)
            ]
            for t in threads:
                t.start()
            pings: list[float] = []
            while time.monotonic() < until and not report.killed_at_cap_mb:
                t0 = time.perf_counter()
                try:
                    client.ping(timeout=30)
                    pings.append((time.perf_counter() - t0) * 1000)
                    result = client.run("echo", {}, image=array_buffer(img), timeout=60)
                    assert np.array_equal(np.frombuffer(result.image.data, np.uint8).reshape(img.shape), img)
                    report.signed_jobs += 1
                except (ProtocolError, AssertionError) as exc:
                    report.signed_errors.append(repr(exc))
            for t in threads:
                t.join()
            if report.killed_at_cap_mb:
                report.offered_bytes = offered[0]
                return report
            client.ping(timeout=30)  # still served after the flood
            report.offered_bytes = offered[0]
            report.signed_pings = len(pings)
            report.ping_p50_ms = float(np.percentile(pings, 50)) if pings else 0.0
            report.ping_max_ms = max(pings, default=0.0)
            report.peak_rss_mb = _vm(proc.pid, "VmHWM")
    finally:
        _stop(proc)
    return report


def _stop(proc: subprocess.Popen) -> None:
    """The backend asked to stop (SIGTERM), killed if it does not within 10 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# ZMTP 3.0 spoken by hand: NULL mechanism greeting, then READY as a DEALER (RFC 23)
_GREETING = b"\xff" + b"\0" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\0") + b"\0" * 32
_READY = b"\x04\x1c\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER"


@dataclass
class PartialCycle:
    alive: int  # sockets the server had not hung up on when the cycle ended
    peak_growth_mb: float  # server RSS peak over the cycle minus the baseline


def _partial(sock: socket.socket, mib: int) -> None:
    chunk = b"\x5a" * (1 << 20)
    try:
        for _ in range(mib):
            sock.sendall(chunk)
    except OSError:
        pass  # hung up on


def _hung_up(sock: socket.socket) -> bool:
    """The server shut this connection down (reads what the server sent until EOF or nothing is waiting)."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def run_partial_flood(
    sockets: int = 64,
    mib: int = 16,
    hold_s: float = 12.0,
    cycles: int = 3,
    max_pixels: int = 2_000_000,
    backend_root: Path = ROOT,
) -> tuple[float, list[PartialCycle]]:
    """review13's slow flood (see the module); returns the baseline RSS and one record per cycle."""
    tmp = Path(tempfile.mkdtemp(prefix="layeredit-partial-"))
    proc, conn = _serve(tmp, max_pixels, backend_root)
    out: list[PartialCycle] = []
    try:
        host, port = connection.read(conn).endpoint.split("//")[1].rsplit(":", 1)
        address = (host.strip("[]"), int(port))
        time.sleep(1.0)
        base = _vm(proc.pid, "VmRSS")
        for _ in range(cycles):
            socks = []
            for _ in range(sockets):
                sock = socket.create_connection(address)
                sock.sendall(_GREETING + _READY + b"\x02" + struct.pack(">Q", (mib + 1) << 20))
                socks.append(sock)
            threads = [threading.Thread(target=_partial, args=(s, mib)) for s in socks]
            for t in threads:
                t.start()
            t0, peak = time.monotonic(), 0.0
            while time.monotonic() - t0 < hold_s:
                peak = max(peak, _vm(proc.pid, "VmRSS"))
                time.sleep(0.2)
            out.append(PartialCycle(sum(not _hung_up(s) for s in socks), round(peak - base, 1)))
            for s in socks:
                s.close()
            for t in threads:
                t.join(5)
            time.sleep(2.0)
    finally:
        _stop(proc)
    return base, out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--max-pixels", type=int, default=250_000)
    parser.add_argument("--backend-root", type=Path, default=ROOT, help="checkout whose backend to run")
    parser.add_argument("--rss-cap-mb", type=float, default=0.0, help="kill the server past this RSS")
    parser.add_argument("--partial-mib", type=int, default=0, help="review13's slow flood (see above)")
    parser.add_argument("--hold", type=float, default=12.0, help="--partial-mib: seconds per cycle")
    parser.add_argument("--cycles", type=int, default=3, help="--partial-mib: connect/hold/close cycles")
    args = parser.parse_args()
    if args.partial_mib:
        base, cycles = run_partial_flood(
            args.sockets, args.partial_mib, args.hold, args.cycles, args.max_pixels, args.backend_root
        )
        print(
            json.dumps({"baseline_rss_mb": round(base, 1), "cycles": [asdict(c) for c in cycles]}, indent=2)
        )
        return 0
    report = run_flood(
        args.sockets,
        args.seconds,
        args.max_pixels,
        backend_root=args.backend_root,
        rss_cap_mb=args.rss_cap_mb,
    )
    print(json.dumps({**asdict(report), "growth_mb": round(report.growth_mb, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

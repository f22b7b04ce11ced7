"""Transport benchmark: a 4096x4096 RGBA8 layer plus an 8-bit mask, there and back.

Four ways, measured in the same run on the same bytes:
  shm       the real client -> ``python -m backend serve`` (a separate process) -> an echo op -> back, with
            buffers in shared memory (SPEC.md section 8: signed header, pooled segments, the default locally);
  protocol  the same with inline frames (``Client(shm="off")``, what remote clients use: every byte signed
            and verified, decoded to numpy and encoded again on the backend side); the two alternate run by run;
  memcpy    copying the same bytes in memory (image + mask out, image back): the floor;
  http      base64 PNG in JSON over HTTP (stdlib http.server in a separate process + Pillow), the usual
            "ComfyUI/A1111 API" way: the server decodes both PNGs and sends the image back as PNG.

    .venv/bin/python bench/transport.py [--runs 10] [--http-runs 3] [--out docs/benchmarks/transport.md]

The echo op is registered only here (``LAYEREDIT_REGISTRY=bench.transport:registry``), never in the product.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing import Process, Queue
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.ops import JobContext, Op, OpInputs, OpResult, OpSpec, Registry  # noqa: E402
from protocol.client import Client  # noqa: E402
from protocol.wire import Buffer  # noqa: E402

SIZE = 4096


class BenchEcho(Op):
    spec = OpSpec(name="echo", help="Return the image as received (benchmark only).", params=())

    def run(self, inputs: OpInputs, params: dict, ctx: JobContext) -> OpResult:
        return OpResult(inputs.image)


def registry() -> Registry:
    reg = Registry()
    reg.register(BenchEcho)
    return reg


def make_inputs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like layer (gradients, shapes, mild noise) so PNG is neither trivially small nor worst case."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.empty((size, size, 4), np.uint8)
    img[..., 0] = (255 * xx).astype(np.uint8)
    img[..., 1] = (255 * yy).astype(np.uint8)
    img[..., 2] = (128 + 100 * np.sin(12 * xx * yy)).astype(np.uint8)
    img[..., :3] = np.clip(img[..., :3].astype(np.int16) + rng.integers(-6, 7, (size, size, 3)), 0, 255)
    img[..., 3] = 255
    mask = (((xx - 0.5) ** 2 + (yy - 0.5) ** 2) < 0.1).astype(np.uint8) * 255
    return img, mask


# -- (a) the floor ------------------------------------------------------------------------------
def time_memcpy(img: np.ndarray, mask: np.ndarray, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        sent_img, sent_mask = bytearray(img.data), bytearray(mask.data)
        back = bytearray(sent_img)
        out.append(time.perf_counter() - t)
        del sent_img, sent_mask, back
    return out


# -- (b) the protocol -----------------------------------------------------------------------------
def start_backend(tmp: Path) -> tuple[subprocess.Popen, Path]:
    conn = tmp / "backend.json"
    env = dict(os.environ, LAYEREDIT_REGISTRY="bench.transport:registry", LAYEREDIT_RUNTIME_DIR=str(tmp))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "backend", "serve", "--no-model-report", "--connection-file", str(conn)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not conn.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the backend did not start")
        time.sleep(0.05)
    return proc, conn


def time_protocol(img: np.ndarray, mask: np.ndarray, runs: int, conn: Path) -> dict[str, list[float]]:
    """The inline (signed frames) and shared-memory ways against the same backend, run by run in turn so
    load from other work hits both alike. The first run of each warms sockets and allocators."""
    clients = {"protocol": Client.connect(conn, shm="off"), "shm": Client.connect(conn, shm="auto")}
    for c in clients.values():
        c.hello()
    if not clients["shm"].shm_active:
        raise RuntimeError("the shared-memory path is not available here")
    h, w = mask.shape
    out: dict[str, list[float]] = {name: [] for name in clients}
    for i in range(runs + 1):
        for name, client in clients.items():
            image = Buffer(memoryview(img).cast("B"), w, h, 4, "u8", "RGBA")
            sel = Buffer(memoryview(mask).cast("B"), w, h, 1, "u8", "gray")
            t = time.perf_counter()
            result = client.run("echo", {}, image=image, selection=sel)
            dt = time.perf_counter() - t
            assert result.image is not None and result.image.nbytes == img.nbytes
            assert (result.image.location is not None) == (name == "shm")
            if i == 0:
                assert bytes(result.image.data) == bytes(memoryview(img).cast("B"))
            else:
                out[name].append(dt)
            del result
    for c in clients.values():
        c.close()
    return out


def time_raw_zmq(img: np.ndarray, mask: np.ndarray, runs: int) -> list[float]:
    """For the breakdown: the same frames over a bare DEALER/ROUTER pair, no signing, no backend."""
    import threading

    import zmq

    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.connect(f"tcp://127.0.0.1:{port}")

    def echo() -> None:
        for _ in range(runs + 1):
            ident, _, image, _mask = router.recv_multipart(copy=False)
            router.send_multipart([ident, b"h", image], copy=False)

    t = threading.Thread(target=echo)
    t.start()
    out = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        dealer.send_multipart([b"h", memoryview(img).cast("B"), memoryview(mask).cast("B")], copy=False)
        dealer.recv_multipart(copy=False)
        if i:
            out.append(time.perf_counter() - t0)
    t.join()
    router.close(0)
    dealer.close(0)
    ctx.term()
    return out


def time_signing(img: np.ndarray, mask: np.ndarray, runs: int) -> list[float]:
    """For the breakdown: signing image + mask once (the round trip signs/verifies ~4x this much data)."""
    from protocol import wire

    key = b"k" * 64
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        wire.sign(key, b"{}", [memoryview(img).cast("B"), memoryview(mask).cast("B")])
        out.append(time.perf_counter() - t0)
    return out


# -- (c) base64 PNG in JSON over HTTP -------------------------------------------------------------
def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)  # the fastest zlib level: generous to HTTP
    return buf.getvalue()


def _unpng(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        image = _unpng(base64.b64decode(body["image"]))
        _unpng(base64.b64decode(body["mask"]))
        payload = json.dumps({"image": base64.b64encode(_png(image)).decode("ascii")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def _http_serve(q: Queue) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    q.put(server.server_address[1])
    server.serve_forever()


def time_http(img: np.ndarray, mask: np.ndarray, runs: int) -> list[float]:
    q: Queue = Queue()
    proc = Process(target=_http_serve, args=(q,), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{q.get(timeout=30)}/"
    out = []
    try:
        for _ in range(runs):
            t = time.perf_counter()
            body = json.dumps(
                {"image": base64.b64encode(_png(img)).decode(), "mask": base64.b64encode(_png(mask)).decode()}
            ).encode()
            req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=300) as resp:
                back = _unpng(base64.b64decode(json.loads(resp.read())["image"]))
            out.append(time.perf_counter() - t)
            assert back.shape == img.shape
    finally:
        proc.terminate()
    return out


def report(figures: dict[str, list[float]], args: argparse.Namespace) -> str:
    med = {k: statistics.median(v) * 1000 for k, v in figures.items()}
    lines = [
        "# Transport benchmark",
        "",
        f"Round trip of a {args.size}x{args.size} RGBA8 layer plus an 8-bit mask (the result: a same-size layer).",
        "",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}",
        f"- Command: `.venv/bin/python bench/transport.py --runs {args.runs} --http-runs {args.http_runs}`",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at the end "
        f"{os.getloadavg()[0]:.1f} (the 2 cores are shared with other work: compare within one run)",
        "",
        "| way | median ms | min ms | runs | vs memcpy | HTTP / this | this / shm |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in (
        ("memcpy", "memcpy (floor)"),
        ("shm", "protocol, shared memory (signed header)"),
        ("protocol", "protocol, inline frames (all signed)"),
        ("http", "base64 PNG JSON HTTP"),
    ):
        v = figures[name]
        lines.append(
            f"| {label} | {med[name]:.1f} | {min(v) * 1000:.1f} | {len(v)} | {med[name] / med['memcpy']:.1f}x | "
            f"{med['http'] / med[name]:.1f}x | {med[name] / med['shm']:.2f}x |"
        )
    lines += [
        "",
        "Breakdown (same run): the same frames over a bare ZeroMQ DEALER/ROUTER pair, unsigned, no backend: "
        f"{med['raw_zmq']:.1f} ms; signing image + mask once (chunked SHA-256 on 2 threads + HMAC): "
        f"{med['sign']:.1f} ms. A round trip signs and verifies each direction: ~4x that.",
    ]
    lower = med["raw_zmq"] + 4 * med["sign"]
    target_ok = med["shm"] <= 150 and med["http"] / med["shm"] >= 20
    inline_ok = med["protocol"] <= 150 and med["http"] / med["protocol"] >= 20
    lines += [
        "",
        f"Shared-memory path (local clients, the default): median {med['shm']:.1f} ms (target <= 150 ms), "
        f"{med['http'] / med['shm']:.1f}x faster than base64-PNG-over-HTTP (target >= 20x): "
        f"{'met' if target_ok else 'NOT met'}.",
        f"Inline path (remote clients, or shm off): median {med['protocol']:.1f} ms, "
        f"{med['http'] / med['protocol']:.1f}x: {'met' if inline_ok else 'NOT met'}.",
        "",
        "What the shared-memory time includes: the client copies image + mask into a new 0600 segment (one",
        "copy), signs only the header; the backend maps the segment read-only (checked with fstat), unlinks its",
        "name, decodes (the selection becomes float32), copies the result into a segment of its own (one copy);",
        "the client maps it read-only and sends release (the backend unlinks it). No pixel byte is hashed.",
        "",
        "What the protocol time includes: signing (HMAC-SHA256 over the header and chunked SHA-256 digests of every",
        "buffer) and verifying on both sides, two loopback TCP transfers (68 MB there, 64 MB back), decoding to numpy",
        "(the image is a zero-copy view; the selection becomes float32 [0, 1] as the op contract says) and encoding",
        "the result on the backend, and the hand-offs socket thread -> worker -> socket thread.",
        "",
        f"Lower bound for any inline (signed frames) round trip here: bare transfer + 4 x signing = {lower:.0f} ms. The 150 ms",
        "target is below that bound whenever signing 68 MB costs more than (150 - bare transfer) / 4: the",
        "authentication requirement (every byte under HMAC-SHA256, both directions) and ZeroMQ over loopback TCP",
        "(two kernel copies per direction) cannot both fit in 150 ms on these 2 cores. What would: a shared-memory",
        "path for local clients (one copy per direction), or a faster MAC than SHA-256 (not in Python's stdlib).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--http-runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--out", type=Path, help="write the markdown report here")
    args = parser.parse_args()
    img, mask = make_inputs(args.size)
    figures: dict[str, list[float]] = {"memcpy": time_memcpy(img, mask, args.runs)}
    figures["raw_zmq"] = time_raw_zmq(img, mask, args.runs)
    figures["sign"] = time_signing(img, mask, args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        proc, conn = start_backend(Path(tmp))
        try:
            figures.update(time_protocol(img, mask, args.runs, conn))
        finally:
            proc.terminate()
            proc.wait(10)
    figures["http"] = time_http(img, mask, args.http_runs)
    text = report(figures, args)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()

"""Load: N clients x M jobs (small images, a fast op) against one backend, all at once.

Checks every job is answered exactly once and to its own client (each image carries its client and job
number in its pixels), and measures throughput, job latency, and hello latency while the queue is full.

    OMP_NUM_THREADS=1 .venv/bin/python bench/load.py --clients 8 --jobs 50
    OMP_NUM_THREADS=1 .venv/bin/python bench/load.py --clients 32 --jobs 50   # more hosts at once than the
                                                                              # guard's cap of 8 unproven ones
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.server import Server, ServerConfig  # noqa: E402
from backend.wire_images import array_buffer  # noqa: E402
from protocol import connection  # noqa: E402
from protocol.client import Client  # noqa: E402
from tests.reliability_support import registry  # noqa: E402


@dataclass
class LoadReport:
    clients: int
    jobs_per_client: int
    answered: int = 0
    wrong_owner: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)
    clients_failed: int = 0  # clients that raised (e.g. a hello lost with a dropped connection: timeout)
    connections_dropped: int = 0  # connections the server's PeerGuard shut down (none for honest clients)
    seconds: float = 0.0
    jobs_per_s: float = 0.0
    job_latency_p50_ms: float = 0.0
    job_latency_p95_ms: float = 0.0
    job_latency_p99_ms: float = 0.0
    hello_p50_ms: float = 0.0
    hello_p99_ms: float = 0.0
    hellos: int = 0
    hello_in_flight_ms: float | None = None  # hello once all jobs were sent, none collected
    peak_rss_before_mb: float = 0.0
    peak_rss_after_mb: float = 0.0
    rss_after_mb: float = 0.0
    records_left: int = 0
    results_left_bytes: int = 0


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process (server and clients share it), MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        current = pages * resource.getpagesize() / (1 << 20)
    except OSError:
        current = peak
    return current, peak


def _image(client: int, job: int) -> np.ndarray:
    img = np.zeros((16, 16, 4), np.uint8)
    img[..., 0], img[..., 1], img[..., 2], img[..., 3] = client, job % 256, job // 256, 255
    return img


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return float(np.percentile(np.asarray(values), q))


def run_load(
    clients: int = 8, jobs: int = 50, op_delay: float = 0.0, workdir: Path | None = None
) -> LoadReport:
    report = LoadReport(clients, jobs)
    tmp = Path(workdir or tempfile.mkdtemp(prefix="layeredit-load-"))
    cfg = ServerConfig(
        connection_file=tmp / "backend.json",
        report_models=False,
        max_queue=clients * jobs + 8,
        max_queued_per_client=jobs + 8,  # every client queues its whole batch at once
    )
    srv = Server(cfg, registry(), models_factory=None).start()
    info = connection.read(srv.connection_file)
    _, report.peak_rss_before_mb = _rss_mb()
    latencies: list[float] = []
    hello_ms: list[float] = []
    lock = threading.Lock()
    done = threading.Event()
    ready = threading.Event()  # the prober has proved its connection
    # every client has submitted its whole batch (or failed: a lost hello times out after 60 s)
    queued = threading.Barrier(clients + 1, timeout=120)
    probed = threading.Event()  # the in-flight hello was answered (or failed): clients may collect

    def one_client(c: int) -> None:
        """One host: hello, its whole batch, then collect. A failure (e.g. a hello never answered because
        its connection was shut down unread) is counted, and the other clients are not held up by it."""
        arrived = threading.Event()
        try:
            _one_client(c, arrived)
        except Exception as exc:
            with lock:
                report.clients_failed += 1
                report.errors.append(f"client {c}: {type(exc).__name__}: {exc}")
            if not arrived.is_set():
                try:
                    queued.wait()
                except threading.BrokenBarrierError:
                    pass

    def _one_client(c: int, arrived: threading.Event) -> None:
        with Client(info, token=f"load{c}") as client:
            client.hello()
            sent: dict[str, tuple[int, float]] = {}
            for j in range(jobs):
                params = {"steps": 1, "delay": op_delay} if op_delay else {}
                op = "steps" if op_delay else "echo"
                job = client.submit(op, params, image=array_buffer(_image(c, j)))
                sent[job] = (j, time.perf_counter())
            arrived.set()
            queued.wait()
            probed.wait(60)
            seen: set[str] = set()
            while len(seen) < len(sent):
                events = client.pump()
                if not events:
                    client._sock.poll(50)
                    continue
                for ev in events:
                    if ev.type not in ("result", "error") or ev.job is None:
                        continue
                    with lock:
                        if ev.job in seen:
                            report.duplicates += 1
                            continue
                        if ev.job not in sent:
                            report.wrong_owner += 1
                            continue
                        seen.add(ev.job)
                        report.answered += 1
                        latencies.append((time.perf_counter() - sent[ev.job][1]) * 1000)
                        if ev.type == "error":
                            report.errors.append(str(ev.error))
                            continue
                        pixels = np.frombuffer(ev.result.image.data, np.uint8)
                        j = sent[ev.job][0]
                        if pixels[0] != c or pixels[1] != j % 256 or pixels[2] != j // 256:
                            report.wrong_owner += 1

    def prober() -> None:
        """A host that is already connected (a proved connection, never cut by the server's guard) asks hello
        once every job has been sent and before any result is collected (the server is still reading and
        running most of them), then keeps asking."""
        with Client(info, token="prober") as client:
            try:
                client.hello()
            finally:
                ready.set()
            try:
                queued.wait()
                t0 = time.perf_counter()
                client.hello()
                report.hello_in_flight_ms = (time.perf_counter() - t0) * 1000
                hello_ms.append(report.hello_in_flight_ms)
            finally:
                probed.set()
            while not done.is_set():
                t0 = time.perf_counter()
                client.hello()
                hello_ms.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.01)

    probe = threading.Thread(target=prober, daemon=True)
    threads = [threading.Thread(target=one_client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    probe.start()
    ready.wait(60)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.seconds = time.perf_counter() - t0
    done.set()
    probe.join(10)
    time.sleep(1.5)  # one sweep of the server loop
    report.jobs_per_s = report.answered / report.seconds if report.seconds else 0.0
    report.job_latency_p50_ms = _percentile(latencies, 50)
    report.job_latency_p95_ms = _percentile(latencies, 95)
    report.job_latency_p99_ms = _percentile(latencies, 99)
    report.hellos = len(hello_ms)
    report.hello_p50_ms = _percentile(hello_ms, 50)
    report.hello_p99_ms = _percentile(hello_ms, 99)
    report.connections_dropped = srv.guard.dropped_total
    with srv.jobs._lock:
        report.records_left = len(srv.jobs._jobs)
        report.results_left_bytes = sum(j.final_bytes for j in srv.jobs._jobs.values())
    srv.stop()
    report.rss_after_mb, report.peak_rss_after_mb = _rss_mb()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per job (steps op) instead of echo")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.repeat):
        print(json.dumps(asdict(run_load(args.clients, args.jobs, args.delay)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

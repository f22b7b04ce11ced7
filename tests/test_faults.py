"""Faults: a killed or stalled backend, a busy worker, a client that vanishes, out of memory, an unwritable
runtime dir, a damaged connection file. Each must end in a clear error, never a hang or a crash loop.
(Damaged model files: tests/test_models.py::test_truncated_weights_are_model_broken and friends; a taken
port: tests/test_server_protocol.py::test_a_taken_port_is_a_clear_error.)"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from backend.jobs import Job, JobManager
from backend.ops import JobContext, Op, OpInputs, OpResult, OpSpec, Registry
from backend.server import ConfigError, Server, ServerConfig
from backend.wire_images import array_buffer
from protocol import client as client_mod
from protocol import connection
from protocol.client import Client
from protocol.errors import ErrorCode, ProtocolError
from tests import reliability_support
from tests.test_server_support import wait_until

ROOT = Path(__file__).resolve().parents[1]


def _serve(tmp_path: Path, name: str = "backend.json") -> tuple[subprocess.Popen, Path]:
    conn = tmp_path / name
    env = dict(
        os.environ,
        LAYEREDIT_REGISTRY="tests.reliability_support:registry",
        LAYEREDIT_RUNTIME_DIR=str(tmp_path),
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend", "serve", "--no-model-report", "--connection-file", str(conn)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not (conn.exists() and _pid_in(conn) == proc.pid):  # a stale file of a killed backend may be there
        assert proc.poll() is None, "backend exited at start"
        assert time.monotonic() < deadline, "backend did not start"
        time.sleep(0.05)
    return proc, conn


def _pid_in(conn: Path) -> int:
    try:
        return connection.read(conn).pid
    except ProtocolError:
        return 0


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
    proc.wait(10)


@pytest.fixture
def in_process(tmp_path):
    cfg = ServerConfig(connection_file=tmp_path / "backend.json", report_models=False)
    srv = Server(cfg, reliability_support.registry(), models_factory=None).start()
    yield srv
    srv.stop()


# -- the backend dies or stalls --------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_mid_job_is_reported_from_the_pid_and_a_restart_serves_again(tmp_path):
    proc, conn = _serve(tmp_path)
    document = np.random.default_rng(0).integers(0, 255, (32, 32, 4), dtype=np.uint8)
    before = document.copy()
    try:
        client = Client.connect(conn)
        job = client.submit("steps", {"steps": 10000, "delay": 0.01}, image=array_buffer(document))
        killed_at: list[float] = []

        def kill(progress):
            if not killed_at:
                proc.kill()  # SIGKILL: no cleanup, the connection file stays behind
                killed_at.append(time.monotonic())

        with pytest.raises(ProtocolError) as exc:
            client.wait(job, on_progress=kill, timeout=60)
        noticed = time.monotonic() - killed_at[0]
        assert exc.value.code == ErrorCode.BACKEND_GONE
        assert "has stopped" in exc.value.message  # the pid check, not the 15 s grace for a slow backend
        print(f"killed backend noticed after {noticed:.2f} s")
        client.close(linger_ms=0)
    finally:
        _stop(proc)
    assert np.array_equal(document, before)  # the host's pixels are untouched
    with pytest.raises(ProtocolError) as exc:  # the stale file: a dead pid is NO_BACKEND at once
        Client.connect(conn)
    assert exc.value.code == ErrorCode.NO_BACKEND
    proc, conn = _serve(tmp_path)  # restarted: serves again (it overwrites the stale file)
    try:
        with Client.connect(conn) as client:
            result = client.run("echo", {}, image=array_buffer(document), timeout=30)
            assert np.array_equal(np.frombuffer(result.image.data, np.uint8).reshape(document.shape), before)
    finally:
        _stop(proc)


@pytest.mark.slow
def test_a_stalled_but_alive_backend_gets_a_grace_period(tmp_path):
    """The false BACKEND_GONE two colleagues saw on a loaded machine: a backend that cannot answer for a few
    seconds (here: SIGSTOP, the extreme of a starved process) must not be declared gone while its pid lives."""
    proc, conn = _serve(tmp_path)
    try:
        client = Client.connect(conn)
        job = client.submit(
            "steps", {"steps": 150, "delay": 0.02}, image=array_buffer(np.zeros((4, 4, 4), np.uint8))
        )
        paused: list[bool] = []

        def stall(progress):
            if not paused:
                paused.append(True)
                proc.send_signal(signal.SIGSTOP)
                subprocess.Popen(["sh", "-c", f"sleep 3; kill -CONT {proc.pid}"])

        result = client.wait(job, on_progress=stall, timeout=120)  # the old client gave up after 1.9 s
        assert result.meta == {"steps": 150}
        client.close()
        # past the grace period an alive-but-silent backend is reported, saying it still runs
        slow = Client(connection.read(conn), local_grace_s=1.0)
        job = slow.submit(
            "steps", {"steps": 1000, "delay": 0.01}, image=array_buffer(np.zeros((4, 4, 4), np.uint8))
        )
        proc.send_signal(signal.SIGSTOP)
        with pytest.raises(ProtocolError) as exc:
            slow.wait(job, timeout=60)
        assert exc.value.code == ErrorCode.BACKEND_GONE and "is running but" in exc.value.message
        proc.send_signal(signal.SIGCONT)
        slow.close(linger_ms=0)
    finally:
        _stop(proc)


def test_pings_are_answered_while_a_worker_burns_cpu_in_python(in_process):
    with Client.connect(in_process.connection_file) as client:
        job = client.submit("spin", {"seconds": 3.0})
        assert wait_until(lambda: in_process.jobs.get(job).state == "running")
        answered = 0
        while in_process.jobs.get(job).state == "running":
            client.ping(timeout=2.0)  # the socket thread gets the GIL between the op's bytecodes
            answered += 1
        assert answered >= 3
        assert client.wait(job, timeout=30).meta["n"] >= 0


# -- the client vanishes ---------------------------------------------------------------------------
def test_a_vanished_clients_job_is_cancelled_after_the_configured_silence(tmp_path, monkeypatch):
    monkeypatch.setattr(client_mod, "KEEPALIVE_S", 0.2)  # a live client pings well inside abandon_after_s
    cfg = ServerConfig(connection_file=tmp_path / "b.json", report_models=False, abandon_after_s=1.0)
    srv = Server(cfg, reliability_support.registry(), models_factory=None).start()
    try:
        img = array_buffer(np.zeros((4, 4, 4), np.uint8))
        info = connection.read(srv.connection_file)
        gone = Client(info, token="gone")
        lost = gone.submit("steps", {"steps": 3000, "delay": 0.01}, image=img)
        gone.close()
        with Client(info, token="alive") as alive:  # waiting and pinging: its job runs to the end
            kept = alive.submit("steps", {"steps": 150, "delay": 0.02}, image=img)
            assert alive.wait(kept, timeout=60).meta == {"steps": 150}
        assert wait_until(lambda: srv.jobs.get(lost).state == "cancelled", timeout=30)
    finally:
        srv.stop()


def test_unfetched_results_expire_and_records_stay_bounded(tmp_path):
    cfg = ServerConfig(connection_file=tmp_path / "b.json", report_models=False, result_ttl_s=0.5)
    srv = Server(cfg, reliability_support.registry(), models_factory=None).start()
    srv.jobs.max_records = 20
    try:
        info = connection.read(srv.connection_file)
        img = array_buffer(np.zeros((16, 16, 4), np.uint8))
        gone = Client(info, token="gone")
        jobs = [gone.submit("echo", {}, image=img) for _ in range(40)]
        assert wait_until(lambda: jobs[-1] in srv.jobs._jobs)  # all arrived (one socket keeps their order)
        gone.close()
        assert wait_until(
            lambda: all(srv.jobs._jobs.get(j) is None or srv.jobs.get(j).state == "expired" for j in jobs)
        )
        assert len(srv.jobs.list()) <= 20  # forgotten beyond max_records; no result bytes kept
        assert all(j.final is None for j in srv.jobs._jobs.values())
        with Client(info, token="gone") as back:
            with pytest.raises(ProtocolError) as exc:
                back.fetch(jobs[-1], timeout=10)
            assert exc.value.code == ErrorCode.RESULT_EXPIRED
    finally:
        srv.stop()


def test_records_submitted_behind_a_busy_worker_are_trimmed_when_they_finish():
    """The bound holds once jobs end, not only at the next submit: 40 jobs queued behind a held worker with
    max_records=20 leave at most 20 records when they are all done (was: all 40 until another submit)."""
    gate = threading.Event()

    class Gate(Op):
        spec = OpSpec(name="gate", help="Wait for the test (test op).", params=(), needs_image=False)

        def run(self, inputs: OpInputs, params: dict, ctx: JobContext) -> OpResult:
            assert gate.wait(30)
            return OpResult(None, np.zeros((1, 1), np.uint8))

    jobs = JobManager(
        Registry({"gate": Gate}), b"k" * 32, lambda job, frames: None, max_records=20, models_factory=None
    )
    jobs.start()
    try:
        ids = [f"j{i}" for i in range(40)]
        for job_id in ids:
            jobs.submit(Job(id=job_id, op="gate", params={}, image=None, selection=None, owner=[b"x"]))
        assert len(jobs.list()) == 40  # nothing finished: nothing may be forgotten yet
        gate.set()
        assert wait_until(lambda: all(d["state"] == "done" for d in jobs.list()) and ids[-1] in jobs._jobs)
        assert wait_until(lambda: len(jobs.list()) <= 20)
        assert [d["job"] for d in jobs.list()] == ids[-20:]  # the oldest went first
    finally:
        gate.set()
        jobs.stop()


# -- out of memory inside an op --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["torch", "python"])
def test_out_of_memory_is_a_clear_error_and_the_next_job_succeeds(in_process, kind):
    weights = reliability_support.Oom.weights.copy()
    img = np.zeros((8, 8, 4), np.uint8)
    with Client.connect(in_process.connection_file) as client:
        with pytest.raises(ProtocolError) as exc:
            client.run("oom", {"kind": kind}, image=array_buffer(img), timeout=30)
        assert exc.value.code == ErrorCode.OUT_OF_MEMORY and "smaller" in exc.value.message
        assert client.run("echo", {}, image=array_buffer(img), timeout=30).image is not None
    assert np.array_equal(reliability_support.Oom.weights, weights)  # the "base model" is intact


# -- the runtime dir and the connection file ----------------------------------------------------------
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_an_unwritable_runtime_dir_is_a_config_error_not_a_crash(tmp_path, monkeypatch, capsys, err):
    def refuse(*args, **kwargs):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(connection, "write", refuse)
    cfg = ServerConfig(connection_file=tmp_path / "b.json", report_models=False)
    with pytest.raises(ConfigError, match="LAYEREDIT_RUNTIME_DIR"):
        Server(cfg, reliability_support.registry(), models_factory=None).start()
    from backend.cli import main

    code = main(
        ["serve", "--no-model-report", "--connection-file", str(tmp_path / "c.json")],
        reliability_support.registry(),
    )
    assert code == 2  # a usage error: a supervisor must not restart it in a loop
    assert os.strerror(err) in capsys.readouterr().err


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff garbage",
        b"[1, 2]",
        b'{"endpoint": 5, "key": "k"}',
        b'{"endpoint": "tcp://127.0.0.1:1"}',
        b'{"endpoint": "tcp://127.0.0.1:1", "key": "k", "pid": "x"}',
    ],
)
def test_a_damaged_connection_file_is_no_backend_with_the_fix(tmp_path, content):
    path = tmp_path / "backend.json"
    path.write_bytes(content)
    with pytest.raises(ProtocolError) as exc:
        Client.connect(path)
    assert exc.value.code == ErrorCode.NO_BACKEND and "python -m backend serve" in exc.value.message
    with pytest.raises(ProtocolError) as exc:  # as a remote connection to import: its own code
        connection.import_connection(path, directory=tmp_path / "r")
    assert exc.value.code == ErrorCode.BAD_CONNECTION

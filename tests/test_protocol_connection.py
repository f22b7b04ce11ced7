"""Connection file, runtime directory, missing and dead backends (a real `python -m backend serve` process)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backend.wire_images import array_buffer
from protocol import connection
from protocol.client import Client
from protocol.errors import ErrorCode, ProtocolError

ROOT = Path(__file__).resolve().parents[1]


def test_runtime_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    assert connection.runtime_dir() == tmp_path / "explicit"
    monkeypatch.delenv("LAYEREDIT_RUNTIME_DIR")
    assert connection.runtime_dir() == tmp_path / "xdg" / "layeredit"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = connection.runtime_dir()
    assert path == tmp_path / "home" / ".cache" / "layeredit" / "run"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_connection_file_is_private_and_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "rt"))
    old = os.umask(0)  # even a permissive umask must not make the key readable by others
    try:
        info = connection.ConnectionInfo("tcp://127.0.0.1:5", connection.new_key(), pid=os.getpid())
        path = connection.write(info)
    finally:
        os.umask(old)
    assert path == tmp_path / "rt" / "backend.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert connection.read() == info
    connection.remove(pid=os.getpid() + 1)  # not ours: kept
    assert path.exists()
    connection.remove(pid=os.getpid())
    assert not path.exists()


def test_no_connection_file_is_no_backend(tmp_path):
    with pytest.raises(ProtocolError) as exc:
        Client.connect(tmp_path / "missing.json")
    assert exc.value.code == ErrorCode.NO_BACKEND and "python -m backend serve" in exc.value.message


def test_stale_file_or_nothing_listening_is_no_backend(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = connection.ConnectionInfo("tcp://127.0.0.1:9", "k", pid=int(dead.stdout))
    with pytest.raises(ProtocolError) as exc:
        Client.connect(connection.write(stale, tmp_path / "stale.json"))
    assert exc.value.code == ErrorCode.NO_BACKEND
    silent = connection.ConnectionInfo("tcp://127.0.0.1:9", "k", pid=os.getpid())  # alive, but nothing there
    with pytest.raises(ProtocolError) as exc:
        Client.connect(connection.write(silent, tmp_path / "silent.json"))
    assert exc.value.code == ErrorCode.NO_BACKEND


def _serve(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    conn = tmp_path / "backend.json"
    env = dict(
        os.environ,
        LAYEREDIT_REGISTRY="tests.test_server_support:registry",
        LAYEREDIT_RUNTIME_DIR=str(tmp_path),
    )
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend", "serve", "--no-model-report", "--connection-file", str(conn)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not conn.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "backend did not start"
        time.sleep(0.05)
    return proc, conn


@pytest.mark.slow
def test_served_process_writes_private_file_logs_and_cleans_up(tmp_path):
    proc, conn = _serve(tmp_path)
    try:
        assert stat.S_IMODE(conn.stat().st_mode) == 0o600
        with Client.connect(conn) as client:
            assert "steps" in [op["name"] for op in client.hello()["ops"]]
        assert (tmp_path / "logs" / "backend.log").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert not conn.exists()  # a clean stop removes its own connection file


@pytest.mark.slow
def test_killed_backend_is_noticed_while_waiting(tmp_path):
    proc, conn = _serve(tmp_path)
    try:
        client = Client.connect(conn)
        img = array_buffer(np.zeros((4, 4, 4), np.uint8))
        job = client.submit("steps", {"steps": 10000, "delay": 0.01}, image=img)

        def kill_on_first_step(progress):
            if proc.poll() is None:
                proc.kill()

        with pytest.raises(ProtocolError) as exc:
            client.wait(job, on_progress=kill_on_first_step, timeout=60)
        assert exc.value.code == ErrorCode.BACKEND_GONE  # the liveness check, long before the 60 s timeout
        client.close(linger_ms=0)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.mark.slow
def test_killed_backend_is_reported_by_pump(tmp_path):
    proc, conn = _serve(tmp_path)
    try:
        client = Client.connect(conn)
        img = array_buffer(np.zeros((4, 4, 4), np.uint8))
        job = client.submit("steps", {"steps": 10000, "delay": 0.01}, image=img)
        events = []
        deadline = time.monotonic() + 60
        while not any(e.type == "progress" for e in events) and time.monotonic() < deadline:
            events += client.pump()
            time.sleep(0.02)
        proc.kill()
        gone = []
        while not gone and time.monotonic() < deadline:  # what a Qt timer calling pump() sees
            gone = [e for e in client.pump() if e.type == "error"]
            time.sleep(0.05)
        assert [(e.job, e.error.code) for e in gone] == [(job, ErrorCode.BACKEND_GONE)]
        client.close(linger_ms=0)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)

"""A host's first message lost to the backend's guard is resent on a fresh connection, and a backend that never
answers is described as it is (protocol/greeting.py).

The backend's PeerGuard may cut a connection whose signed first message it has not read yet (past 64 unproven
connections at once, or while a flood makes it wary). ``DropFirst`` does exactly that to the first connections
whose first message arrives (tests/hosts/krita/testops.py), so a real server loses the hosts' first hello or ping,
unread (test_krita_host.py does it to real Krita). Before, the Krita docker waited its whole hello timeout (60 s
for a live local backend) and said "start it", and GIMP's connect pinged for 5 s, said "Nothing answers" and
started a second backend beside the running one.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from tests import fake_krita

fake_krita.install()

from backend.server import Server, ServerConfig  # noqa: E402
from krita_plugin.layeredit import controller as ctl  # noqa: E402
from protocol import client as client_mod  # noqa: E402
from protocol import connection, greeting  # noqa: E402
from protocol.client import Client  # noqa: E402
from protocol.errors import ErrorCode, ProtocolError  # noqa: E402
from tests.hosts.krita.testops import GATE, DropFirst, registry  # noqa: E402

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "gimp_plugin" / "layeredit"
sys.path.insert(0, str(PLUGIN_DIR))

from layeredit_gimp import backend as gimp_backend  # noqa: E402


@pytest.fixture
def cutting_server(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    GATE.clear()
    srv = Server(ServerConfig(report_models=False), registry(), models_factory=None)
    srv.guard = DropFirst(1)
    srv.start()
    yield srv
    GATE.set()
    srv.stop()


@pytest.fixture
def silent_backend(tmp_path, monkeypatch):
    """A live local 'backend' (this process's pid) that accepts connections and never answers: busy or
    refusing, as a host sees it. Its connection file is the default one."""
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    info = connection.ConnectionInfo(
        endpoint=f"tcp://127.0.0.1:{port}", key=connection.new_key(), pid=os.getpid()
    )
    connection.write(info)
    yield info
    listener.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the schedule ----------------------------------------------------------------------------------------


def _resends(timeout: float) -> list[float]:
    tries, now, out = greeting.Tries(timeout, 0.0), 0.0, []
    while not tries.expired(now):
        now += tries.wait_s(now)
        if tries.due(now):
            out.append(now)
            tries.resent(now)
    return out


def test_resends_back_off_and_leave_the_last_try_half_the_timeout():
    assert _resends(60.0) == [1.0, 3.0, 7.0, 15.0]  # a live local backend's hello (Krita)
    assert _resends(15.0) == [1.0, 3.0, 7.0]  # connect's ping to a local backend (GIMP)
    assert _resends(10.0) == [1.0, 3.0]  # a remote backend's hello
    assert _resends(3.0) == [1.0]


# -- protocol.client (GIMP's blocking path, install.py's check) -------------------------------------------


def test_a_ping_cut_unread_by_the_guard_is_resent_and_connect_succeeds(cutting_server):
    client = Client.connect(cutting_server.connection_file)  # main: NO_BACKEND "Nothing answers ... start"
    try:
        assert cutting_server.guard.dropped_total == 1
        assert "erase" in {op["name"] for op in client.hello()["ops"]}
    finally:
        client.close()


def test_a_hello_cut_unread_by_the_guard_is_resent_on_a_fresh_connection(cutting_server):
    client = Client.connect(cutting_server.connection_file, check=False)
    try:
        first = client._sock
        caps = client.hello(timeout=15.0)  # main: TIMEOUT after the whole 15 s
        assert "erase" in {op["name"] for op in caps["ops"]}
        assert cutting_server.guard.dropped_total == 1 and client._sock is not first  # a new socket
    finally:
        client.close()


def test_a_live_local_backend_that_never_answers_is_called_busy_not_missing(silent_backend, monkeypatch):
    monkeypatch.setattr(client_mod, "CHECK_TIMEOUT_S", 2.5)
    with pytest.raises(ProtocolError) as err:
        Client.connect()
    assert err.value.code == ErrorCode.TIMEOUT  # main: NO_BACKEND, "start the backend"
    msg = err.value.message
    assert f"pid {os.getpid()}" in msg and "is running but did not answer" in msg and "busy" in msg
    assert "2 tries, each on a new connection" in msg


def test_a_live_pid_with_nothing_listening_is_a_stale_file_start_one(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    connection.write(connection.ConnectionInfo(endpoint=endpoint, key=connection.new_key(), pid=os.getpid()))
    with pytest.raises(ProtocolError) as err:
        Client.connect()
    assert err.value.code == ErrorCode.NO_BACKEND
    assert (
        f"Nothing listens at {endpoint}" in err.value.message
        and "python -m backend serve" in err.value.message
    )


# -- GIMP --------------------------------------------------------------------------------------------------


def test_gimp_connects_through_a_cut_ping_without_starting_a_second_backend(
    cutting_server, tmp_path, monkeypatch
):
    started = []
    monkeypatch.setattr(gimp_backend, "Launcher", lambda *a, **k: started.append(a))
    monkeypatch.setattr(gimp_backend, "read_config", lambda _dir: object())
    client = gimp_backend.connect_or_start(tmp_path)
    try:
        assert started == [] and cutting_server.guard.dropped_total == 1
        assert client.hello()["ops"]
    finally:
        client.close()


def test_gimp_does_not_start_a_second_backend_beside_a_silent_one(silent_backend, tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(client_mod, "CHECK_TIMEOUT_S", 2.5)
    monkeypatch.setattr(gimp_backend, "Launcher", lambda *a, **k: started.append(a))
    monkeypatch.setattr(gimp_backend, "read_config", lambda _dir: object())
    with pytest.raises(ProtocolError) as err:
        gimp_backend.connect_or_start(tmp_path)
    assert started == []  # main: a second backend was started
    assert err.value.code == ErrorCode.TIMEOUT and "is running but did not answer" in err.value.message


# -- Krita's docker (non-blocking) -------------------------------------------------------------------------


@pytest.fixture
def app():
    fake_krita.Krita._instance = None
    return fake_krita.Krita.instance()


def _poll_until(c: ctl.Controller, cond, limit_polls: int = 3000) -> None:
    import time

    for _ in range(limit_polls):
        if cond():
            return
        c.poll()
        time.sleep(0.01)
    raise AssertionError(f"gave up; connection: {c.connection_text} / {c.connection_tip}")


def test_krita_resends_a_hello_cut_unread_and_connects(app, cutting_server):
    c = ctl.Controller(app, lambda: Client.connect(cutting_server.connection_file, check=False))
    sockets = []
    c.on_new_socket = lambda: sockets.append(c.client.fd)
    assert c.connect()
    _poll_until(c, lambda: c.connected or c.client is None)  # main: 60 s of "connecting…", then "start it"
    assert c.connected and c.connection_text == "Backend: running on this computer (CPU)"
    assert cutting_server.guard.dropped_total == 1 and len(sockets) == 1 and sockets[0] == c.client.fd
    assert "erase" in c.forms


def test_krita_says_a_live_backend_that_never_answers_is_running_not_missing(
    app, silent_backend, monkeypatch
):
    monkeypatch.setattr(ctl, "LOCAL_BUSY_HELLO_TIMEOUT_S", 2.5)
    c = ctl.Controller(app, lambda: Client.connect(check=False))
    assert c.connect()
    _poll_until(c, lambda: c.client is None)
    assert c.connection_text.startswith(
        "Backend: running on this computer but not answering"
    )  # main: "not running"
    assert "busy" in c.connection_tip and "2 tries, each on a new connection" in c.connection_tip


def test_krita_says_start_it_when_the_backend_process_is_gone(app, tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    listener = socket.create_server(("127.0.0.1", 0))  # something listens, but its pid is gone
    try:
        endpoint = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        info = connection.ConnectionInfo(endpoint=endpoint, key=connection.new_key(), pid=os.getpid())
        connection.write(info)
        c = ctl.Controller(app, lambda: Client.connect(check=False))
        assert c.connect()
        connection.write(connection.ConnectionInfo(endpoint=endpoint, key=info.key, pid=dead.pid))
        c.client.info = connection.read()  # the backend died after the connect
        _poll_until(c, lambda: c.client is None)
        assert c.connection_text == "Backend: not running. Press Connect to start it on this computer."
        assert f"pid {dead.pid}" in c.connection_tip and "start it" in c.connection_tip
    finally:
        listener.close()

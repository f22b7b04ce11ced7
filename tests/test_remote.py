"""Remote mode: keys, connection strings, CurveZMQ admission by authorized keys, per-client ownership,
fair sharing of the queue (real servers on real sockets)."""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import zmq

from backend import keys, remote
from backend.server import ConfigError, Server, ServerConfig
from backend.wire_images import array_buffer
from protocol import connection
from protocol.client import Client
from protocol.errors import ErrorCode, ProtocolError
from tests.reliability_support import registry
from tests.test_server_support import wait_until

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")


@contextmanager
def remote_server(tmp_path: Path, host: str = "127.0.0.1", **config):
    """A server in remote mode: persistent keys in tmp_path/keys, admitted keys from authorized_keys."""
    kdir = tmp_path / "keys"
    kdir.mkdir(exist_ok=True)
    server_keys = (
        remote.load_server(kdir) if (kdir / remote.SERVER_FILE).exists() else remote.init_server(kdir)
    )
    cfg = ServerConfig(
        host=host,
        connection_file=tmp_path / "backend.json",
        curve_secret_key=server_keys.secret,
        key=server_keys.hmac_key,
        authorized_keys=kdir / remote.AUTHORIZED_FILE,
        report_models=False,
        **config,
    )
    srv = Server(cfg, registry(), models_factory=None).start()
    try:
        yield srv
    finally:
        srv.stop()


def _endpoint(srv: Server) -> str:
    return srv.endpoint.replace("0.0.0.0", "127.0.0.1")


def _admitted(tmp_path: Path, srv: Server, name: str) -> connection.ConnectionInfo:
    return remote.client_new(name, _endpoint(srv), tmp_path / "keys")


def _img(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (8, 8, 4), dtype=np.uint8)


# -- connection strings and files (what the hosts call) ----------------------------------------------
def test_connection_string_round_trips_and_imports_privately(tmp_path):
    public, secret = zmq.curve_keypair()
    server_pub, _ = zmq.curve_keypair()
    info = connection.ConnectionInfo(
        "tcp://gpu.lan:5555",
        connection.new_key(),
        curve_serverkey=server_pub.decode(),
        curve_publickey=public.decode(),
        curve_secretkey=secret.decode(),
        name="studio",
    )
    text = connection.to_string(info)
    assert text.startswith(connection.STRING_PREFIX) and "\n" not in text
    wrapped = text[:30] + "\n  " + text[30:]  # pasted from an e-mail, wrapped
    assert connection.parse_string(wrapped) == info
    path = connection.import_connection(wrapped, directory=tmp_path / "remotes")
    assert path == tmp_path / "remotes" / "studio.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    back = connection.read(path)
    assert back.curve_secretkey == info.curve_secretkey and back.pid == 0 and connection.is_remote(back)
    assert [p for p, _ in connection.list_imported(tmp_path / "remotes")] == [path]
    # a connection file (JSON) imports the same way
    again = connection.import_connection(path, name="other", directory=tmp_path / "remotes")
    assert connection.read(again).endpoint == info.endpoint


@pytest.mark.parametrize(
    "text",
    [
        "hello",  # not ours
        connection.STRING_PREFIX + "!!!",  # damaged
        connection.STRING_PREFIX + "eyJlIjoidGNwOi8vaDoxIn0",  # no signing key
    ],
)
def test_bad_connection_strings_are_clear_errors(text):
    with pytest.raises(ProtocolError) as exc:
        connection.parse_string(text)
    assert exc.value.code == ErrorCode.BAD_CONNECTION and "keys client-new" in exc.value.message


def test_half_a_key_pair_or_a_local_file_is_refused(tmp_path):
    pub, _ = zmq.curve_keypair()
    half = connection.ConnectionInfo(
        "tcp://h:1", "k", curve_serverkey=pub.decode(), curve_publickey=pub.decode()
    )
    with pytest.raises(ProtocolError) as exc:
        connection.check(half)
    assert exc.value.code == ErrorCode.BAD_CONNECTION
    local = connection.write(connection.ConnectionInfo("tcp://127.0.0.1:1", "k", pid=1), tmp_path / "l.json")
    with pytest.raises(ProtocolError) as exc:
        connection.import_connection(local, directory=tmp_path / "r")
    assert exc.value.code == ErrorCode.BAD_CONNECTION


def test_from_address_makes_a_key_pair_to_admit(tmp_path):
    server_pub, _ = zmq.curve_keypair()
    info = connection.from_address("gpu.lan:5555", server_pub.decode(), "ab" * 32, name="me")
    assert info.endpoint == "tcp://gpu.lan:5555" and len(info.curve_publickey) == 40
    assert zmq.curve_public(info.curve_secretkey.encode()).decode() == info.curve_publickey
    with pytest.raises(ProtocolError):
        connection.from_address("no-port", server_pub.decode(), "ab" * 32)


# -- the keys command ----------------------------------------------------------------------------
def test_keys_command_manages_the_authorized_keys(tmp_path, capsys):
    kdir = tmp_path / "k"
    assert keys.main(["--keys-dir", str(kdir), "server-init"]) == 0
    assert keys.main(["--keys-dir", str(kdir), "server-init"]) == 1  # never silently replaced
    assert stat.S_IMODE((kdir / remote.SERVER_FILE).stat().st_mode) == 0o600
    capsys.readouterr()
    out_file = tmp_path / "alice.json"
    assert (
        keys.main(
            ["--keys-dir", str(kdir), "client-new", "alice", "--endpoint", "gpu:5555", "--out", str(out_file)]
        )
        == 0
    )
    string = capsys.readouterr().out.strip()
    info = connection.parse_string(string)
    assert info.endpoint == "tcp://gpu:5555" and info.curve_serverkey == remote.load_server(kdir).public
    assert connection.read(out_file).curve_secretkey == info.curve_secretkey
    pub, _ = zmq.curve_keypair()
    assert keys.main(["--keys-dir", str(kdir), "allow", pub.decode(), "bob"]) == 0
    assert keys.main(["--keys-dir", str(kdir), "allow", "not-a-key", "eve"]) == 1
    dashed = next(k for k in (zmq.curve_keypair()[0].decode() for _ in range(20000)) if k.startswith("-"))
    assert keys.main(["--keys-dir", str(kdir), "allow", dashed, "dash"]) == 0  # Z85 keys may start with '-'
    capsys.readouterr()
    assert keys.main(["--keys-dir", str(kdir), "list"]) == 0
    listed = capsys.readouterr().out
    assert "alice\t" + info.curve_publickey in listed and "bob\t" + pub.decode() in listed
    assert keys.main(["--keys-dir", str(kdir), "revoke", "alice"]) == 0
    assert keys.main(["--keys-dir", str(kdir), "revoke", "alice"]) == 1
    assert set(remote.AuthorizedKeys(kdir / remote.AUTHORIZED_FILE).entries()) == {"bob", "dash"}
    assert stat.S_IMODE((kdir / remote.AUTHORIZED_FILE).stat().st_mode) == 0o600


def test_serve_listen_without_keys_is_a_clear_error(tmp_path, capsys):
    from backend.cli import main

    code = main(["serve", "--listen", "0.0.0.0:0", "--keys-dir", str(tmp_path / "none")], registry())
    assert code == 2 and "keys server-init" in capsys.readouterr().err


def test_non_loopback_needs_curve_and_authorized_keys(tmp_path):
    _, secret = zmq.curve_keypair()
    with pytest.raises(ConfigError, match="authorized-keys"):
        Server(
            ServerConfig(host="0.0.0.0", curve_secret_key=secret.decode()), registry(), models_factory=None
        )


# -- admission -----------------------------------------------------------------------------------
def test_admitted_client_runs_jobs_over_the_network_address(tmp_path):
    with remote_server(tmp_path, host="0.0.0.0") as srv:
        info = _admitted(tmp_path, srv, "alice")
        with Client(info) as client:
            assert client.remote
            client.ping(timeout=10)
            img = _img(1)
            result = client.run("echo", {"label": "x"}, image=array_buffer(img), timeout=30)
            assert np.array_equal(np.frombuffer(result.image.data, np.uint8).reshape(img.shape), img)
        # this machine's hosts use the local connection file (a key admitted in memory) as before
        with Client.connect(srv.connection_file) as local:
            assert not local.remote
            local.ping()


def test_unknown_key_gets_nothing(tmp_path):
    with remote_server(tmp_path) as srv:
        info = _admitted(tmp_path, srv, "alice")
        stranger = connection.from_address(_endpoint(srv), info.curve_serverkey, info.key)  # never admitted
        with Client(stranger) as client:
            with pytest.raises(ProtocolError) as exc:
                client.ping(timeout=1.5)  # refused during the handshake: nothing is ever answered
            assert exc.value.code in (ErrorCode.TIMEOUT, ErrorCode.NO_BACKEND)
            with pytest.raises(ProtocolError) as exc:
                client.ping(timeout=1.5)  # and later sends fail rather than hang
            assert exc.value.code in (ErrorCode.TIMEOUT, ErrorCode.NO_BACKEND)
        assert srv.jobs.list() == []


def test_allow_admits_and_revoke_cuts_an_open_connection(tmp_path):
    with remote_server(tmp_path) as srv:
        info = _admitted(tmp_path, srv, "alice")  # creates the keys; the pasted-address flow next
        pasted = connection.from_address(_endpoint(srv), info.curve_serverkey, info.key, name="bob")
        authorized = remote.AuthorizedKeys(tmp_path / "keys" / remote.AUTHORIZED_FILE)
        authorized.allow(pasted.curve_publickey, "bob")  # what `keys allow PUBKEY bob` does
        with Client(pasted) as client:
            client.ping(timeout=10)
            assert authorized.revoke("bob")
            with pytest.raises(ProtocolError) as exc:
                client.jobs()
            assert exc.value.code == ErrorCode.NOT_ALLOWED


# -- ownership -----------------------------------------------------------------------------------
def _assert_invisible(other: Client, job: str) -> None:
    for call in (lambda: other.status(job), lambda: other.fetch(job, timeout=10)):
        with pytest.raises(ProtocolError) as exc:
            call()
        assert exc.value.code == ErrorCode.UNKNOWN_JOB
    assert job not in [j["job"] for j in other.jobs()]


def test_remote_clients_see_only_their_own_jobs(tmp_path):
    with remote_server(tmp_path) as srv:
        alice, bob = _admitted(tmp_path, srv, "alice"), _admitted(tmp_path, srv, "bob")
        with Client(alice, token="same") as a, Client(bob, token="same") as b:  # same token: keys decide
            job = a.submit("steps", {"steps": 200, "delay": 0.01}, image=array_buffer(_img(0)))
            assert wait_until(lambda: srv.jobs.get(job).state == "running")
            _assert_invisible(b, job)
            b.cancel(job)  # fire and forget: ignored for a stranger
            assert a.status(job)["state"] == "running"
            a.cancel(job)
            with pytest.raises(ProtocolError) as exc:
                a.wait(job, timeout=30)
            assert exc.value.code == ErrorCode.CANCELLED


def test_local_clients_are_told_apart_by_token_and_reconnect_with_it(tmp_path):
    from tests.test_server_support import running_server

    with running_server(tmp_path) as srv:
        info = connection.read(srv.connection_file)
        with Client(info, token="alice") as a, Client(info, token="bob") as b:
            job = a.submit("steps", {"steps": 5, "delay": 0.01}, image=array_buffer(_img(2)))
            assert wait_until(lambda: srv.jobs.get(job).state == "done")
            _assert_invisible(b, job)
        with Client(info, token="alice") as again:  # a new socket with the same token owns the job
            assert again.fetch(job, timeout=10).meta == {"steps": 5}


def test_default_token_is_per_process_and_inherited(monkeypatch):
    from protocol import client as client_mod

    monkeypatch.delenv(client_mod.TOKEN_ENV, raising=False)
    first = client_mod.default_token()
    assert os.environ[client_mod.TOKEN_ENV] == first == client_mod.default_token()


# -- fairness ------------------------------------------------------------------------------------
def test_one_clients_batch_does_not_starve_anothers_single_job(tmp_path):
    from tests.test_server_support import running_server

    with running_server(tmp_path) as srv:
        info = connection.read(srv.connection_file)
        with Client(info, token="batch") as a, Client(info, token="single") as b:
            batch = [
                a.submit("steps", {"steps": 3, "delay": 0.02}, image=array_buffer(_img(i))) for i in range(12)
            ]
            assert wait_until(lambda: srv.jobs.get(batch[-1]).state == "queued")
            single = b.submit("steps", {"steps": 3, "delay": 0.02}, image=array_buffer(_img(99)))
            b.wait(single, timeout=60)
            for job in batch:
                a.wait(job, timeout=60)
        order = sorted([*batch, single], key=lambda j: srv.jobs.get(j).started)
        assert (
            order.index(single) <= 2
        )  # round-robin: at most the running job and one more of the batch first


def test_remote_progress_cancel_and_reconnect_fetch_work_as_locally(tmp_path):
    with remote_server(tmp_path) as srv:
        info = _admitted(tmp_path, srv, "alice")
        img = _img(5)
        with Client(info) as client:
            steps = []
            client.run(
                "steps", {"steps": 5, "delay": 0.01}, image=array_buffer(img), on_progress=steps.append
            )
            assert [p.step for p in steps] == [1, 2, 3, 4, 5]
            job = client.submit("steps", {"steps": 2000, "delay": 0.01}, image=array_buffer(img))
            assert wait_until(lambda: srv.jobs.get(job).state == "running")
            client.cancel(job)
            with pytest.raises(ProtocolError) as exc:
                client.wait(job, timeout=30)
            assert exc.value.code == ErrorCode.CANCELLED
            job = client.submit("steps", {"steps": 5, "delay": 0.01}, image=array_buffer(img))
        assert wait_until(lambda: srv.jobs.get(job).state == "done")
        with Client(info, token="another-process") as again:  # the key owns the job, whatever the token
            result = again.fetch(job, timeout=10)
            assert np.array_equal(np.frombuffer(result.image.data, np.uint8).reshape(img.shape), img)

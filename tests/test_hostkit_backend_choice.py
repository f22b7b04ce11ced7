"""Which backend a host uses: the saved choice both plugins share, and turning pasted text into an imported
remote connection (no server needed: these are files and strings)."""

from __future__ import annotations

import json
import stat

import pytest
import zmq

from protocol import connection
from protocol.errors import ErrorCode, ProtocolError
from protocol.hostkit import (
    CHOICE_FILE,
    BackendChoice,
    choose_backend,
    load_choice,
    refused_message,
    save_choice,
)


def _remote_info(name: str = "studio") -> connection.ConnectionInfo:
    public, secret = zmq.curve_keypair()
    server_pub, _ = zmq.curve_keypair()
    return connection.ConnectionInfo(
        "tcp://gpu.lan:5555",
        connection.new_key(),
        curve_serverkey=server_pub.decode(),
        curve_publickey=public.decode(),
        curve_secretkey=secret.decode(),
        name=name,
    )


def test_default_is_local_and_damaged_or_dangling_choices_fall_back_to_local(tmp_path):
    assert load_choice(tmp_path) == BackendChoice() and load_choice(tmp_path).local
    (tmp_path / CHOICE_FILE).write_text("{not json")
    assert load_choice(tmp_path).local
    save_choice(BackendChoice(str(tmp_path / "gone.json"), "gone"), tmp_path)
    assert load_choice(tmp_path).local  # its connection file was deleted: never point at nothing
    assert load_choice(tmp_path).label == "Local backend"


def test_connection_string_is_imported_saved_and_read_back(tmp_path):
    text = connection.to_string(_remote_info())
    choice = choose_backend("  " + text[:20] + "\n" + text[20:] + "\n", tmp_path)  # wrapped when pasted
    assert not choice.local and choice.name == "studio" and choice.label == "Remote: studio"
    path = tmp_path / "remotes" / "studio.json"
    assert choice.connection_file == str(path) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert choice.pending_key == ""  # the admin made this key pair: it is already allowed
    assert load_choice(tmp_path) == choice
    assert json.loads((tmp_path / CHOICE_FILE).read_text())["connection_file"] == str(path)
    assert choose_backend("LOCAL", tmp_path).local and load_choice(tmp_path).local


def test_connection_file_path_is_imported(tmp_path):
    src = connection.write(_remote_info("gpu box"), tmp_path / "from-admin.json")
    choice = choose_backend(str(src), tmp_path / "cfg")
    assert choice.connection_file == str(tmp_path / "cfg" / "remotes" / "gpu-box.json")
    assert connection.read(choice.connection_file).pid == 0


def test_address_server_key_and_signing_key_make_a_key_to_allow(tmp_path):
    server_pub, _ = zmq.curve_keypair()
    choice = choose_backend(f"gpu.lan:5555\n{server_pub.decode()}\n{'ab' * 32}", tmp_path)
    info = connection.read(choice.connection_file)
    assert info.endpoint == "tcp://gpu.lan:5555" and info.curve_serverkey == server_pub.decode()
    assert choice.pending_key == info.curve_publickey and len(choice.pending_key) == 40
    assert load_choice(tmp_path).pending_key == choice.pending_key
    msg = refused_message(info)
    assert f"python -m backend keys allow {info.curve_publickey} " in msg and "gpu.lan:5555" in msg


@pytest.mark.parametrize(
    "text,says",
    [
        ("layeredit1:!!!", "damaged"),
        ("/no/such/file.json", "neither a connection string"),
        ("gpu.lan:5555 somekey", "ADDRESS:PORT SERVER_KEY SIGNING_KEY"),
        ("no-port " + "x" * 40 + " abcd", "not HOST:PORT"),
        ("gpu.lan:5555 short-server-key abcd", "Z85"),
    ],
)
def test_bad_text_is_bad_connection_and_keeps_the_previous_choice(tmp_path, text, says):
    before = choose_backend(connection.to_string(_remote_info()), tmp_path)
    with pytest.raises(ProtocolError) as exc:
        choose_backend(text, tmp_path)
    assert exc.value.code == ErrorCode.BAD_CONNECTION and says in exc.value.message
    assert load_choice(tmp_path) == before


def test_a_local_connection_file_is_refused_as_remote(tmp_path):
    local = connection.write(connection.ConnectionInfo("tcp://127.0.0.1:1", "k", pid=1), tmp_path / "l.json")
    with pytest.raises(ProtocolError) as exc:
        choose_backend(str(local), tmp_path)
    assert exc.value.code == ErrorCode.BAD_CONNECTION and load_choice(tmp_path).local

"""Issue 13: what a second, independent client found (real servers, real sockets, hand-made frames where the
reference client would never send them). One test (or group) per point; docs/SECURITY.md lists them."""

from __future__ import annotations

import json
import os
import secrets

import numpy as np
import pytest
import zmq

from backend.wire_images import array_buffer
from protocol import connection, shm, wire
from protocol.client import Client
from protocol.errors import ErrorCode, ProtocolError
from protocol.wire import Message
from tests.test_remote import _admitted, remote_server
from tests.test_server_support import running_server, wait_until

needs_shm = pytest.mark.skipif(not shm.available(), reason="no POSIX shared memory (/dev/shm) here")
needs_curve = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")


def _img(h: int = 6, w: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 4), dtype=np.uint8)


def _header(type_: str, **fields) -> dict:
    return {"protocol": wire.PROTOCOL_VERSION, "type": type_, "id": wire.new_id(), **fields}


class Dealer:
    """A bare DEALER with a chosen routing id, for frames the reference client never sends."""

    def __init__(self, info: connection.ConnectionInfo, routing_id: bytes | None = None):
        self.key = info.key_bytes
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, routing_id)
        if info.curve_serverkey:
            self.sock.curve_serverkey = info.curve_serverkey.encode()
            self.sock.curve_publickey = info.curve_publickey.encode()
            self.sock.curve_secretkey = info.curve_secretkey.encode()
        self.sock.connect(info.endpoint)

    def signed(self, header: dict | bytes, buffers=()) -> list[bytes]:
        raw = header if isinstance(header, bytes) else json.dumps(header).encode()
        return [wire.DELIMITER, wire.sign(self.key, raw, list(buffers)), raw, *buffers]

    def send(self, header: dict | bytes, buffers=(), before: tuple[bytes, ...] = ()) -> None:
        self.sock.send_multipart([*before, *self.signed(header, buffers)])

    def recv(self, timeout_ms: int = 5000) -> Message | None:
        if not self.sock.poll(timeout_ms):
            return None
        return wire.decode(self.sock.recv_multipart(), self.key)

    def ask(self, header: dict, buffers=(), before: tuple[bytes, ...] = ()) -> Message:
        self.send(header, buffers, before)
        reply = self.recv()
        assert reply is not None, f"no reply to {header.get('type')}"
        return reply

    def close(self) -> None:
        self.sock.close()


def _located(seg: shm.Segment, h: int, w: int) -> dict:
    n = h * w * 4
    desc = {"role": "image", "width": w, "height": h, "channels": 4, "dtype": "u8", "order": "RGBA"}
    return desc | {
        "stride": w * 4,
        "x": 0,
        "y": 0,
        "nbytes": n,
        "location": {"shm": seg.name, "offset": 0, "size": n},
    }


# -- 1. shared memory is for the local owner only ---------------------------------------------------
@needs_shm
@needs_curve
def test_a_remote_key_gets_bad_buffer_for_any_shm_descriptor(tmp_path):
    h, w = 4, 4
    secret = _img(h, w, seed=3)
    seg = shm.Segment.create(h * w * 4 * 2, shm.CLIENT_PREFIX)  # a local client's segment: input + space
    seg.write(0, secret.tobytes())
    seg.write(h * w * 4, bytes(h * w * 4))
    try:
        with remote_server(tmp_path) as srv:
            remote = Dealer(_admitted(tmp_path, srv, "mallory"))
            try:
                caps = remote.ask(_header("hello", content={}))
                assert caps.type == wire.CAPABILITIES and caps.content["shm"] is None  # nothing to aim at
                reply = remote.ask(_header("submit", job="steal", op="echo", buffers=[_located(seg, h, w)]))
                assert reply.type == wire.ERROR and reply.content["code"] == "bad_buffer"
                assert "inline" in reply.content["message"]
                space = {"shm": seg.name, "offset": 0, "size": seg.size}
                img = _img(h, w, seed=4)
                desc = {**_located(seg, h, w), "location": None}
                offer = _header(
                    "submit", job="smash", op="echo", buffers=[desc], content={"shm_result": space}
                )
                reply = remote.ask(offer, [img.tobytes()])
                assert reply.type == wire.ERROR and reply.content["code"] == "bad_buffer"
                assert srv.jobs.list() == []  # nothing ran
            finally:
                remote.close()
            # this machine's own client (the connection file's key, over loopback) still uses shared memory
            local = Dealer(connection.read(srv.connection_file))
            try:
                assert local.ask(_header("hello", content={})).content["shm"] is not None
                reply = local.ask(_header("submit", job="mine", op="echo", buffers=[_located(seg, h, w)]))
                assert reply.type == wire.ACCEPTED
            finally:
                local.close()
        with open(shm.SHM_DIR / seg.name, "rb") as f:
            assert f.read(h * w * 4) == secret.tobytes()  # never overwritten
    finally:
        seg.unlink()


# -- 3. a FIFO under a segment name does not freeze the server -------------------------------------
@needs_shm
def test_a_fifo_named_like_a_segment_is_refused_without_blocking(tmp_path):
    name = f"{shm.CLIENT_PREFIX}{os.getpid()}-{secrets.token_hex(16)}"
    os.mkfifo(shm.SHM_DIR / name, 0o600)
    try:
        with running_server(tmp_path) as srv:
            d = Dealer(connection.read(srv.connection_file))
            try:
                desc = {**_located(shm.Segment(name, 64), 4, 4)}
                reply = d.ask(_header("submit", job="fifo", op="echo", buffers=[desc]))
                assert reply.type == wire.ERROR and reply.content["code"] == "bad_buffer"
                assert "not private" in reply.content["message"] or "regular" in reply.content["message"]
                assert d.ask(_header("ping")).type == wire.PONG  # still serving, nothing blocked
                offer = {"shm": name, "offset": 0, "size": 4096}  # and as result space: falls back, no block
                img = _img(4, 4)
                desc = {**desc, "location": None}
                content = {"shm_results": True, "shm_result": offer}
                d.send(
                    _header("submit", job="fifo2", op="echo", buffers=[desc], content=content),
                    [img.tobytes()],
                )
                kinds = []
                while (m := d.recv()) is not None and m.type != wire.RESULT:
                    kinds.append(m.type)
                assert m is not None and m.type == wire.RESULT, kinds
            finally:
                d.close()
    finally:
        os.unlink(shm.SHM_DIR / name)


# -- 4. only the local owner may shut the backend down -----------------------------------------------
@needs_curve
def test_shutdown_from_a_remote_key_is_forbidden(tmp_path):
    with remote_server(tmp_path) as srv:
        with Client(_admitted(tmp_path, srv, "alice")) as remote:
            with pytest.raises(ProtocolError) as exc:
                remote.shutdown()
            assert exc.value.code == ErrorCode.FORBIDDEN
            remote.ping(timeout=10)  # still serving
        with Client.connect(srv.connection_file) as local:
            local.shutdown()  # the owner, over loopback
        assert wait_until(lambda: not srv.connection_file.exists())


# -- 8. only ZeroMQ's routing id counts ------------------------------------------------------------
def test_frames_before_the_delimiter_are_malformed_not_an_identity(tmp_path):
    with running_server(tmp_path) as srv:
        info = connection.read(srv.connection_file)
        with Client(info, token="victim") as victim:
            job = victim.submit("steps", {"steps": 3, "delay": 0.01}, image=array_buffer(_img()))
            assert wait_until(lambda: srv.jobs.get(job).state == "done")
            attacker = Dealer(info, routing_id=b"t:attacker:1")
            try:
                posed = (b"t:victim:" + secrets.token_hex(6).encode(),)
                for header in (_header("status", job=job), _header("fetch", job=job), _header("list")):
                    reply = attacker.ask(header, before=posed)
                    assert reply.type == wire.ERROR and reply.content["code"] == "malformed", header
                    assert reply.parent == header["id"]
                reply = attacker.ask(_header("status", job=job))  # as itself: another owner's job
                assert reply.content["code"] == "unknown_job"
            finally:
                attacker.close()
            assert victim.fetch(job, timeout=10).meta == {"steps": 3}  # untouched, still the victim's


@pytest.mark.parametrize("rid", [b"t:a b:1", b"t::1", b"t:x", b"t:" + b"a" * 65 + b":1", b"t:abc:"])
def test_a_routing_id_that_claims_a_token_must_follow_the_grammar(tmp_path, rid):
    with running_server(tmp_path) as srv:
        d = Dealer(connection.read(srv.connection_file), routing_id=rid)
        try:
            header = _header("ping")
            reply = d.ask(header)
            assert reply.type == wire.ERROR and reply.content["code"] == "malformed"
            assert reply.parent == header["id"]
        finally:
            d.close()
        with Client(connection.read(srv.connection_file), token="ok") as c:
            c.ping()

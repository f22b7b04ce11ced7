"""A real server over real sockets (thread, free loopback port, temp runtime dir) driven by the real client."""

from __future__ import annotations

import json
import select
import time

import numpy as np
import pytest
import zmq

from backend.server import ConfigError, Server, ServerConfig
from backend.wire_images import array_buffer
from protocol import connection, wire
from protocol.client import Client
from protocol.errors import ErrorCode, ProtocolError
from protocol.wire import Buffer, Message
from tests.test_server_support import registry, running_server, wait_until


@pytest.fixture
def server(tmp_path):
    with running_server(tmp_path, max_pixels=512 * 512) as srv:
        yield srv


@pytest.fixture
def client(server):
    c = Client.connect(server.connection_file)
    c.hello()
    yield c
    c.close()


def _image(h=6, w=5, c=4, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random((h, w, c)).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, (h, w, c), endpoint=True).astype(dtype)


class Raw:
    """A bare DEALER for sending hand-made (bad) frames."""

    def __init__(self, server: Server):
        info = connection.read(server.connection_file)
        self.key = info.key_bytes
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(info.endpoint)

    def send_signed(self, header: dict | bytes, buffers=(), key: bytes | None = None) -> None:
        raw = header if isinstance(header, bytes) else json.dumps(header).encode()
        self.sock.send_multipart(
            [wire.DELIMITER, wire.sign(key or self.key, raw, list(buffers)), raw, *buffers]
        )

    def recv(self, timeout_ms: int = 3000) -> Message | None:
        if not self.sock.poll(timeout_ms):
            return None
        return wire.decode(self.sock.recv_multipart(), self.key)

    def close(self) -> None:
        self.sock.close()


def _header(type_: str, **fields) -> dict:
    return {"protocol": wire.PROTOCOL_VERSION, "type": type_, "id": wire.new_id(), **fields}


def _still_serving(server: Server) -> None:
    with Client.connect(server.connection_file) as c:
        c.ping()


# -- hello, results, formats ------------------------------------------------------------------------
def test_hello_lists_ops_with_schemas_devices_and_limits(client):
    caps = client.hello()
    assert caps["protocol"] == wire.PROTOCOL_VERSION and caps["backend_version"]
    assert caps["devices"] == ["cpu"]
    ops = {o["name"]: o for o in caps["ops"]}
    assert ops["echo"] == registry().get("echo").spec.to_json()
    assert caps["limits"]["max_pixels"] == 512 * 512
    assert set(caps["sample_types"]) == {"u8", "u16", "f16", "f32"}


@pytest.mark.parametrize(
    ("dtype", "name"), [(np.uint8, "u8"), (np.uint16, "u16"), (np.float16, "f16"), (np.float32, "f32")]
)
def test_round_trip_keeps_sample_type_bit_exact(client, dtype, name):
    img = _image(dtype=dtype)
    result = client.run("echo", {}, image=array_buffer(img))
    assert result.image.dtype == name and result.image.order == "RGBA"
    back = np.frombuffer(result.image.data, img.dtype).reshape(img.shape)
    assert np.array_equal(back, img)
    assert result.meta["dtype"] == np.dtype(dtype).name and result.meta["shape"] == list(img.shape)


def test_bgra_is_seen_as_rgba_by_the_op_and_comes_back_bgra(client):
    img = _image()
    buf = Buffer(img.tobytes(), 5, 6, 4, "u8", "BGRA")
    result = client.run("echo", {"invert": True}, image=buf)
    b, g, r, a = img[0, 0].tolist()
    assert result.meta["first_pixel"] == [r, g, b, a]
    assert result.image.order == "BGRA"
    back = np.frombuffer(result.image.data, np.uint8).reshape(img.shape)
    expected = img.copy()
    expected[..., :3] = 255 - img[..., :3]  # inverting colour channels is order-agnostic
    assert np.array_equal(back, expected)


def test_row_stride_padding_is_honoured(client):
    img = _image(h=3, w=2, c=3)
    stride = 2 * 3 + 10
    padded = np.zeros((3, stride), np.uint8)
    padded[:, :6] = img.reshape(3, 6)
    result = client.run("echo", {}, image=Buffer(padded.tobytes(), 2, 3, 3, "u8", "RGB", stride=stride))
    assert result.image.stride == 6
    assert np.array_equal(np.frombuffer(result.image.data, np.uint8).reshape(img.shape), img)


def test_selection_is_aligned_in_document_coordinates(client):
    img = Buffer(_image(h=6, w=8).tobytes(), 8, 6, 4, x=100, y=50)
    sel = np.full(
        (4, 4), 255, np.uint8
    )  # covers document x 96..100, y 48..52: the image's top-left 0..4 x 0..2
    result = client.run("echo", {}, image=img, selection=Buffer(sel.tobytes(), 4, 4, 1, x=96, y=48))
    expected = np.zeros((6, 8), np.uint8)
    assert (result.mask.x, result.mask.y, result.mask.dtype, result.mask.order) == (100, 50, "u8", "gray")
    assert result.meta["selection_sum"] == 0.0  # x 96..100 does not reach the image at x >= 100
    sel2 = Buffer(np.full((4, 4), 255, np.uint8).tobytes(), 4, 4, 1, x=102, y=48)  # x 102..106, y 48..52
    result = client.run("echo", {}, image=img, selection=sel2)
    mask = np.frombuffer(result.mask.data, np.uint8).reshape(6, 8)
    expected[0:2, 2:6] = 255
    assert np.array_equal(mask, expected)
    u16 = Buffer(np.full((6, 8), 32768, np.uint16).tobytes(), 8, 6, 1, "u16", x=100, y=50)
    result = client.run("echo", {}, image=img, selection=u16)
    assert result.meta["selection_sum"] == pytest.approx(48 * 32768 / 65535, rel=1e-5)


def test_params_are_validated_and_defaults_filled(client):
    result = client.run("echo", {"gains": [0.5, 2], "mode": "fancy"}, image=array_buffer(_image()))
    assert result.meta["params"] == {
        "invert": False,
        "gains": [0.5, 2.0],
        "label": "",
        "mode": "fancy",
        "count": 1,
    }


def test_candidates_come_back_as_extra_buffers(client):
    img = _image(dtype=np.uint16)
    result = client.run("candidates", {}, image=array_buffer(img))
    assert len(result.candidates) == 2 and all(c.dtype == "u16" for c in result.candidates)
    assert result.meta == {"n": 2}


# -- progress, cancel, fetch --------------------------------------------------------------------------
def test_progress_arrives_in_order_before_the_result(client):
    seen = []
    result = client.run(
        "steps",
        {"steps": 6, "delay": 0.0, "preview": True},
        image=array_buffer(_image()),
        on_progress=lambda p: seen.append((p.stage, p.step, p.total, p.preview.width if p.preview else None)),
    )
    assert seen == [("sleep", i, 6, 4) for i in range(1, 7)]
    assert result.meta == {"steps": 6}


def test_cancel_mid_job_stops_between_steps(client):
    job = client.submit("steps", {"steps": 2000, "delay": 0.01}, image=array_buffer(_image()))
    steps = []

    def on_progress(p):
        steps.append(p.step)
        if p.step == 3:
            client.cancel(job)

    with pytest.raises(ProtocolError) as exc:
        client.wait(job, on_progress=on_progress, timeout=30)
    assert exc.value.code == ErrorCode.CANCELLED
    assert 3 <= max(steps) < 2000
    assert client.status(job)["state"] == "cancelled"


def test_cancel_a_queued_job(client):
    first = client.submit("steps", {"steps": 300, "delay": 0.01}, image=array_buffer(_image()))
    queued = client.submit("echo", {}, image=array_buffer(_image()))
    client.cancel(queued)
    with pytest.raises(ProtocolError) as exc:
        client.wait(queued, timeout=30)
    assert exc.value.code == ErrorCode.CANCELLED
    client.cancel(first)
    with pytest.raises(ProtocolError):
        client.wait(first, timeout=30)
    states = {j["job"]: j["state"] for j in client.jobs()}
    assert states[queued] == "cancelled" and states[first] == "cancelled"


def test_fetch_after_reconnect_gets_the_finished_result(server):
    img = _image(dtype=np.uint16)
    first = Client.connect(server.connection_file)
    job = first.submit("steps", {"steps": 20, "delay": 0.01}, image=array_buffer(img))
    first.close()  # gone before the result: the result must not be lost
    assert wait_until(lambda: server.jobs.get(job).state == "done")
    with Client.connect(server.connection_file) as second:
        result = second.fetch(job, timeout=30)
        assert result.job == job and result.meta == {"steps": 20}
        assert np.array_equal(np.frombuffer(result.image.data, np.uint16).reshape(img.shape), img)
        # fetched and released: a second fetch says so with its own code
        with pytest.raises(ProtocolError) as exc:
            second.fetch(job, timeout=10)
        assert exc.value.code == ErrorCode.RESULT_EXPIRED


def test_fetch_of_a_running_job_reattaches_it(server):
    first = Client.connect(server.connection_file)
    job = first.submit("steps", {"steps": 40, "delay": 0.02}, image=array_buffer(_image()))
    first.close()
    with Client.connect(server.connection_file) as second:
        steps = []
        result = second.fetch(job, on_progress=lambda p: steps.append(p.step), timeout=30)
        assert result.meta == {"steps": 40} and steps and steps == sorted(steps)


def test_oldest_results_are_evicted_by_bytes(tmp_path):
    img = _image(h=64, w=64)  # 16 KiB per result
    quota = {"max_result_bytes_per_client": 40_000}  # one client here: its quota is the whole store
    with (
        running_server(tmp_path, max_result_bytes=40_000, **quota) as srv,
        Client.connect(srv.connection_file) as c,
    ):
        jobs = [c.submit("echo", {}, image=array_buffer(img)) for _ in range(4)]
        assert wait_until(lambda: all(srv.jobs.get(j).state in ("done", "expired") for j in jobs))
        with Client.connect(srv.connection_file) as other:  # c holds the pushed results in its own queue
            with pytest.raises(ProtocolError) as exc:
                other.fetch(jobs[0], timeout=10)
            assert exc.value.code == ErrorCode.RESULT_EXPIRED
            assert other.fetch(jobs[3], timeout=10).image.nbytes == img.nbytes


def test_unknown_job(client):
    for call in (client.status, lambda j: client.fetch(j, timeout=10)):
        with pytest.raises(ProtocolError) as exc:
            call("no-such-job")
        assert exc.value.code == ErrorCode.UNKNOWN_JOB


def test_pump_drains_everything_for_a_qt_loop(client):
    job = client.submit("steps", {"steps": 5, "delay": 0.0}, image=array_buffer(_image()))
    events = client.pump()  # right after a send, as the Qt notifier may not fire for what is already queued
    deadline = time.monotonic() + 30
    while not any(e.type == "result" for e in events) and time.monotonic() < deadline:
        select.select([client.fd], [], [], 0.25)  # what QSocketNotifier does
        events += client.pump()
    kinds = [e.type for e in events if e.job == job]
    assert kinds[0] == "accepted" and kinds[-1] == "result"
    assert [e.progress.step for e in events if e.type == "progress"] == [1, 2, 3, 4, 5]
    assert next(e for e in events if e.type == "result").result.meta == {"steps": 5}


# -- bad input: an error reply with a stable code, and the server keeps serving ---------------------
def _submit_error(client: Client, op: str, params: dict, **buffers) -> ProtocolError:
    with pytest.raises(ProtocolError) as exc:
        client.run(op, params, timeout=30, **buffers)
    return exc.value


@pytest.mark.parametrize(
    ("op", "params", "code"),
    [
        ("nope", {}, ErrorCode.UNKNOWN_OP),
        ("echo", {"colour": 1}, ErrorCode.UNKNOWN_PARAM),
        ("echo", {"count": 9}, ErrorCode.BAD_PARAM),
        ("echo", {"mode": "weird"}, ErrorCode.BAD_PARAM),
        ("boom", {}, ErrorCode.INTERNAL),
        ("refuse", {}, ErrorCode.MODEL_MISSING),
        ("badshape", {}, ErrorCode.INTERNAL),
        ("needsel", {}, ErrorCode.NO_SELECTION),
    ],
)
def test_request_errors_have_stable_codes(server, client, op, params, code):
    err = _submit_error(client, op, params, image=array_buffer(_image()))
    assert err.code == code and err.message
    _still_serving(server)


def test_empty_selection_is_no_selection(server, client):
    empty = Buffer(bytes(30), 5, 6, 1)
    assert (
        _submit_error(client, "needsel", {}, image=array_buffer(_image()), selection=empty).code
        == ErrorCode.NO_SELECTION
    )


def test_missing_image_and_oversize_image(server, client):
    assert _submit_error(client, "echo", {}).code == ErrorCode.MISSING_INPUT
    client.capabilities = {}  # skip the client-side check: the server must refuse on its own
    big = Buffer(bytes(600 * 600), 600, 600, 1)
    assert _submit_error(client, "echo", {}, image=big).code == ErrorCode.TOO_LARGE
    client.hello()
    with pytest.raises(
        ProtocolError
    ) as exc:  # and the client refuses before sending once it knows the limits
        client.submit("echo", {}, image=big)
    assert exc.value.code == ErrorCode.TOO_LARGE
    _still_serving(server)


def test_selection_with_colour_channels_is_unsupported(server, client):
    sel = array_buffer(_image(), role="selection")
    err = _submit_error(client, "echo", {}, image=array_buffer(_image()), selection=sel)
    assert err.code == ErrorCode.UNSUPPORTED_FORMAT


def _raw_error(raw: Raw, header: dict | bytes, buffers=()) -> dict:
    raw.send_signed(header, buffers)
    reply = raw.recv()
    assert reply is not None and reply.type == wire.ERROR
    return reply.content


def test_bad_frames_get_error_replies(server):
    raw = Raw(server)
    try:
        desc = Buffer(bytes(16), 2, 2).descriptor()
        sub = _header("submit", op="echo", params={}, buffers=[desc, {**desc, "role": "selection"}])
        # truncated: two buffers described, one frame sent
        assert _raw_error(raw, sub, [bytes(16)])["code"] == "bad_buffer"
        # wrong buffer length
        assert (
            _raw_error(raw, {**sub, "id": wire.new_id(), "buffers": [desc]}, [bytes(15)])["code"]
            == "bad_buffer"
        )
        # unsupported sample type
        bad = {**sub, "id": wire.new_id(), "buffers": [{**desc, "dtype": "u32"}]}
        assert _raw_error(raw, bad, [bytes(16)])["code"] == "unsupported_format"
        assert _raw_error(raw, b"{not json")["code"] == "malformed"
        assert _raw_error(raw, _header("dance"))["code"] == "unknown_type"
        assert _raw_error(raw, {**_header("hello"), "protocol": "7.0"})["code"] == "bad_version"
        assert _raw_error(raw, _header("submit", params={}))["code"] == "malformed"  # no op
        assert _raw_error(raw, {**_header("submit", op="echo"), "params": [1]})["code"] == "malformed"
    finally:
        raw.close()
    _still_serving(server)


def test_bad_signature_is_dropped_without_reply(server):
    raw = Raw(server)
    try:
        raw.send_signed(_header("ping"), key=b"not the key")
        raw.sock.send_multipart([wire.DELIMITER, b"", json.dumps(_header("ping")).encode()])  # no signature
        raw.sock.send_multipart([b"no delimiter at all"])
        assert raw.recv(timeout_ms=500) is None  # nothing answered, nothing executed
        raw.send_signed(_header("ping"))
        reply = raw.recv()
        assert reply is not None and reply.type == wire.PONG  # and the server still serves this very socket
    finally:
        raw.close()


def test_server_refuses_non_loopback_without_curve(tmp_path):
    for host in ("0.0.0.0", "192.168.1.10", "example.com", "*"):
        with pytest.raises(ConfigError, match="loopback"):
            Server(
                ServerConfig(host=host, connection_file=tmp_path / "b.json"), registry(), models_factory=None
            )
    assert not (tmp_path / "b.json").exists()


def test_list_and_shutdown(tmp_path):
    with running_server(tmp_path) as srv:
        with Client.connect(srv.connection_file) as c:
            c.run("echo", {}, image=array_buffer(_image()))
            assert [j["op"] for j in c.jobs()] == ["echo"]
            c.shutdown()
        assert wait_until(lambda: not srv.connection_file.exists())
        with pytest.raises(ProtocolError) as exc:
            Client.connect(srv.connection_file)
        assert exc.value.code == ErrorCode.NO_BACKEND


def test_frames_over_the_message_size_limit_never_reach_the_server(tmp_path):
    with running_server(tmp_path, max_message_bytes=4096) as srv:
        raw = Raw(srv)
        try:
            desc = Buffer(bytes(8192), 64, 32, 4).descriptor()
            raw.send_signed(_header("submit", op="echo", params={}, buffers=[desc]), [bytes(8192)])
            assert (
                raw.recv(timeout_ms=500) is None
            )  # ZeroMQ dropped it (and the connection) before any code ran
        finally:
            raw.close()
        with Client.connect(srv.connection_file) as c:
            c.hello()
            with pytest.raises(ProtocolError) as exc:  # the client knows the limit and says so instead
                c.submit("echo", {}, image=Buffer(bytes(8192), 64, 32, 4))
            assert exc.value.code == ErrorCode.TOO_LARGE
            assert c.run("echo", {}, image=array_buffer(_image()), timeout=30).image is not None


def test_queue_full(tmp_path):
    with running_server(tmp_path, max_queue=1) as srv, Client.connect(srv.connection_file) as c:
        running = c.submit("steps", {"steps": 2000, "delay": 0.01}, image=array_buffer(_image()))
        assert wait_until(lambda: srv.jobs.get(running).state == "running")
        queued = c.submit("echo", {}, image=array_buffer(_image()))
        refused = c.submit("echo", {}, image=array_buffer(_image()))
        with pytest.raises(ProtocolError) as exc:
            c.wait(refused, timeout=30)
        assert exc.value.code == ErrorCode.QUEUE_FULL
        c.cancel(running)
        assert c.wait(queued, timeout=30).image is not None


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")
def test_curve_encryption_end_to_end(tmp_path):
    public, secret = zmq.curve_keypair()
    with running_server(tmp_path, curve_secret_key=secret.decode()) as srv:
        info = connection.read(srv.connection_file)
        assert info.curve_serverkey == public.decode()
        with Client.connect(srv.connection_file) as c:
            assert c.run("echo", {}, image=array_buffer(_image()), timeout=30).meta["shape"] == [6, 5, 4]


def test_mask_only_result(client):
    sel = np.zeros((6, 5), np.uint8)
    sel[2:4, 1:3] = 255
    result = client.run(
        "maskonly", {}, image=array_buffer(_image()), selection=array_buffer(sel, role="selection")
    )
    assert result.image is None and result.mask is not None
    assert np.array_equal(np.frombuffer(result.mask.data, np.uint8).reshape(6, 5), 255 - sel)


def test_server_survives_a_burst_of_garbage(server):
    """Random frames, random signed headers and buffers: only error replies, in order, and the server still serves."""
    rng = np.random.default_rng(7)
    raw = Raw(server)
    try:
        sent_signed = 0
        for i in range(60):
            junk = [rng.bytes(int(rng.integers(0, 64))) for _ in range(int(rng.integers(1, 5)))]
            if i % 2:
                raw.sock.send_multipart(junk)  # unsigned junk: dropped
                continue
            header = {"protocol": "1.0", "type": str(rng.choice(["submit", "fetch", "x"])), "id": f"g{i}"}
            if rng.random() < 0.5:
                header["buffers"] = [{"width": int(rng.integers(-2, 4)), "height": 1, "dtype": "u8"}]
            raw.send_signed(header if i % 4 else junk[0], junk[1:])
            sent_signed += 1
        raw.send_signed(_header("ping"))
        replies = []
        while (reply := raw.recv()) is not None and reply.type != wire.PONG:
            replies.append(reply)
        assert reply is not None and reply.type == wire.PONG
        assert replies and all(r.type == wire.ERROR for r in replies) and len(replies) <= sent_signed
    finally:
        raw.close()
    _still_serving(server)


def test_a_taken_port_is_a_clear_error(server, tmp_path):
    port = int(server.endpoint.rsplit(":", 1)[1])
    other = Server(
        ServerConfig(port=port, connection_file=tmp_path / "other.json", report_models=False),
        registry(),
        models_factory=None,
    )
    with pytest.raises(ConfigError, match="--port"):
        other.start()
    assert not (tmp_path / "other.json").exists()
    _still_serving(server)


def test_an_idle_server_sleeps_in_its_poll_after_a_wake_up(tmp_path, monkeypatch):
    """The socket thread wakes on a byte from the workers' socketpair and must read it: a wake-up left unread
    keeps the poll returning at once, and the idle server spun a whole core (day 7: 100 % of one CPU while
    idle; a 600 px erase ran ~0.7 s slower through the server than in-process)."""
    polls = [0]
    real_poll = zmq.Poller.poll

    def counting_poll(self, timeout=None):
        polls[0] += 1
        return real_poll(self, timeout)

    monkeypatch.setattr(zmq.Poller, "poll", counting_poll)
    with running_server(tmp_path) as srv:
        for _ in range(3):
            srv._poke()  # what a worker does for every progress message and result
            time.sleep(0.2)
        before = polls[0]
        time.sleep(1.0)
        # idle: one poll per 500 ms timeout (a few more on a loaded machine's late wake-ups), not thousands
        assert polls[0] - before <= 10, polls[0] - before


@pytest.mark.parametrize("shm_mode", ["auto", "off"])
def test_a_released_result_holds_no_pixels_in_the_backend(tmp_path, monkeypatch, shm_mode):
    """Once the client has the result and released it, the backend keeps none of the op's arrays: before, the job
    record's signed message kept them alive until ``max_records`` later jobs (~100 MiB per 4096^2 erase; RSS grew
    ~97 MiB per job through a real server, measured by speed8). Both paths: shared memory and inline frames."""
    import gc
    import weakref

    from backend import jobs

    made: list[weakref.ref] = []
    encode = jobs.encode_result

    def spy(result, image):
        made.append(weakref.ref(result.image))
        return encode(result, image)

    monkeypatch.setattr(jobs, "encode_result", spy)
    with running_server(tmp_path, max_pixels=512 * 512) as server:
        server.jobs.shm_min_bytes = 1  # small results take the shared-memory path too
        with Client.connect(server.connection_file, shm=shm_mode) as client:
            client.hello()
            client.shm_min_bytes = 1
            image = _image(64, 48)
            for _ in range(3):
                res = client.run("echo", {"invert": True}, image=array_buffer(image), timeout=30)
                assert bytes(res.image.data[:4]) == bytes(255 - image[0, 0, :3]) + bytes(image[0, 0, 3:])
                del res
            jobs_seen = [j["job"] for j in client.jobs()]
            assert wait_until(lambda: all(server.jobs.get(j).state == "released" for j in jobs_seen))
            assert len(made) == 3
            assert wait_until(lambda: gc.collect() >= 0 and all(ref() is None for ref in made))

"""The same-host shared-memory path (SPEC.md section 8): a real server and the real client over real sockets,
with buffers in /dev/shm segments. Leftover checks look only at segments written by this process or the
processes a test starts (other programs of the same user may use the protocol at the same time)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from backend.wire_images import array_buffer
from protocol import shm, wire
from protocol.client import Client, default_token
from protocol.errors import ErrorCode, ProtocolError
from tests.test_server_protocol import Raw, _header, _image, _still_serving
from tests.test_server_support import running_server, wait_until

pytestmark = pytest.mark.skipif(not shm.available(), reason="no POSIX shared memory (/dev/shm) here")
ROOT = Path(__file__).resolve().parents[1]


def _mine() -> list[str]:
    return shm.leftovers({os.getpid()})


@pytest.fixture
def server(tmp_path):
    with running_server(tmp_path, max_pixels=512 * 512) as srv:
        srv.jobs.shm_min_bytes = 1  # tiny test results go through shared memory too
        yield srv
    assert _mine() == []  # a stopped backend leaves nothing behind, stored results included


@pytest.fixture
def client(server):
    c = Client.connect(server.connection_file)
    c.hello()
    c.shm_min_bytes = 1
    yield c
    c.close()


def _stored(server, job: str) -> bool:
    """The job's final message is stored (its state turns done a moment before that)."""
    j = server.jobs.get(job)
    return j.state == "done" and j.final is not None


def _count_inputs(server) -> list[dict]:
    """Record every input location the server maps (to prove the input really went through shm)."""
    seen: list[dict] = []
    original = server._resolve_input

    def spy(location, expected):
        seen.append(dict(location))
        return original(location, expected)

    server._resolve_input = spy
    return seen


# -- capability -------------------------------------------------------------------------------------
def test_hello_advertises_shm_and_the_client_uses_it(server, client):
    info = client.capabilities["shm"]
    assert info["uid"] == os.getuid() and info["boot_id"] == shm.host_identity()["boot_id"]
    assert shm.NAME_RE.match(info["probe"]) and len(info["token"]) == 32 and info["max_bytes"] > 0
    assert client.shm_active
    with Client.connect(server.connection_file, shm="off") as off:
        off.hello()
        assert not off.shm_active


def test_a_forged_probe_token_turns_shm_off(server):
    """Same boot id and uid but a probe we cannot read back (another /dev/shm, e.g. a container): inline."""
    with Client.connect(server.connection_file) as c:
        caps = c.hello()
        assert not c._check_shm({**caps, "shm": {**caps["shm"], "token": "0" * 32}})
        assert not c._check_shm({**caps, "shm": {**caps["shm"], "boot_id": "another-machine"}})
        assert not c._check_shm({**caps, "shm": None})
        assert not c._check_shm({**caps, "shm": {**caps["shm"], "pid_ns": 1}})  # a sandbox sharing /dev/shm
        assert c._check_shm(caps)


def test_a_backend_without_shm_advertises_none_and_works_inline(tmp_path):
    with running_server(tmp_path, shm=False) as srv, Client.connect(srv.connection_file) as c:
        assert c.hello()["shm"] is None and not c.shm_active
        img = _image(h=300, w=300)  # 360 KB: would go through shm if offered
        result = c.run("echo", {}, image=array_buffer(img), timeout=30)
        assert result.image.location is None
        assert np.array_equal(np.frombuffer(result.image.data, np.uint8).reshape(img.shape), img)


# -- round trips ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dtype", "name"), [(np.uint8, "u8"), (np.uint16, "u16"), (np.float16, "f16"), (np.float32, "f32")]
)
def test_round_trip_bit_exact_over_shm(server, client, dtype, name):
    seen = _count_inputs(server)
    img = _image(h=37, w=29, dtype=dtype)
    sel = (_image(h=37, w=29, c=1, dtype=np.uint8, seed=1) > 100).astype(np.uint8) * 255
    for _ in range(3):  # the pooled segments are reused from job to job
        result = client.run("echo", {}, image=array_buffer(img), selection=array_buffer(sel), timeout=30)
        assert [loc["shm"].startswith(shm.CLIENT_PREFIX) for loc in seen[-2:]] == [True, True]
        # image and mask come back in the space the client offered, written there by the backend
        assert result.image.location["shm"] == result.mask.location["shm"]
        assert client._pool.owns(result.image.location["shm"]) and result.image.dtype == name
        assert np.array_equal(np.frombuffer(result.image.data, img.dtype).reshape(img.shape), img)
        assert np.array_equal(np.frombuffer(result.mask.data, np.uint8).reshape(sel.shape[:2]), sel[:, :, 0])
        del result
    assert len(client._pool.slots) == 2 and server.jobs.shm_bytes == 0
    client.close()
    assert _mine() == [server._probe.name]  # the client's pool is gone, only the backend's probe is left


def test_a_held_result_is_never_overwritten(server, client):
    """The pool reuses a segment only once no result view read from it is alive."""
    first_img, second_img = _image(h=30, w=30, seed=1), _image(h=30, w=30, seed=2)
    first = client.run("echo", {}, image=array_buffer(first_img), timeout=30)
    second = client.run("echo", {}, image=array_buffer(second_img), timeout=30)
    assert first.image.location["shm"] != second.image.location["shm"]
    assert np.array_equal(np.frombuffer(first.image.data, np.uint8).reshape(first_img.shape), first_img)
    for _ in range(4):  # more jobs than the pool holds while two results are kept: inline when full
        client.run("echo", {}, image=array_buffer(_image(h=30, w=30, seed=3)), timeout=30)
    assert np.array_equal(np.frombuffer(first.image.data, np.uint8).reshape(first_img.shape), first_img)
    assert np.array_equal(np.frombuffer(second.image.data, np.uint8).reshape(second_img.shape), second_img)


def test_results_that_do_not_fit_the_offer_come_in_a_backend_segment(server, client):
    img = _image(h=30, w=30)
    result = client.run("candidates", {}, image=array_buffer(img), timeout=30)  # 3 images > image + mask
    names = {b.location["shm"] for b in result.buffers}
    assert len(names) == 1 and next(iter(names)).startswith(shm.SERVER_PREFIX)
    for b in result.buffers:
        assert np.array_equal(np.frombuffer(b.data, np.uint8).reshape(img.shape), img)
    assert wait_until(lambda: server.jobs.shm_bytes == 0)  # released: the backend unlinked it
    assert not shm.exists(next(iter(names)))


def test_padded_rows_and_bgra_over_shm(server, client):
    img = _image(h=20, w=10)
    padded = np.zeros((20, 10 * 4 + 24), np.uint8)
    padded[:, :40] = img.reshape(20, 40)
    buf = wire.Buffer(memoryview(padded).cast("B"), 10, 20, 4, "u8", "BGRA", stride=64)
    result = client.run("echo", {}, image=buf, timeout=30)
    assert result.image.order == "BGRA" and result.image.location is not None
    back = np.frombuffer(result.image.data, np.uint8).reshape(20, result.image.stride)[:, :40]
    assert np.array_equal(back, padded[:, :40])
    assert result.meta["first_pixel"] == [int(v) for v in img[0, 0, [2, 1, 0, 3]]]


def test_a_big_layer_uses_shm_with_default_thresholds(tmp_path):
    with running_server(tmp_path) as srv, Client.connect(srv.connection_file) as c:
        c.hello()
        seen = _count_inputs(srv)
        img = _image(h=512, w=512)
        small = _image(h=8, w=8, c=1, seed=3)  # under shm.MIN_BYTES: stays a frame
        result = c.run("echo", {}, image=array_buffer(img), selection=array_buffer(small), timeout=30)
        assert len(seen) == 1 and result.image.location is not None
        assert np.array_equal(np.frombuffer(result.image.data, np.uint8).reshape(img.shape), img)


def test_a_remote_looking_client_works_inline(server):
    with Client.connect(server.connection_file, shm="off") as c:
        c.hello()
        seen = _count_inputs(server)
        img = _image(h=300, w=300)
        result = c.run("echo", {}, image=array_buffer(img), timeout=30)
        assert seen == [] and result.image.location is None
        assert np.array_equal(np.frombuffer(result.image.data, np.uint8).reshape(img.shape), img)


# -- bad descriptors --------------------------------------------------------------------------------
def _submit_located(raw: Raw, location: dict, width=4, height=3, stride=16, frames=()) -> ProtocolError:
    desc = {"role": "image", "width": width, "height": height, "channels": 4, "dtype": "u8", "order": "RGBA"}
    desc |= {"stride": stride, "x": 0, "y": 0, "nbytes": stride * height, "location": location}
    raw.send_signed(_header("submit", job=wire.new_id(), op="echo", buffers=[desc], content={}), frames)
    reply = raw.recv()
    assert reply is not None and reply.type == wire.ERROR, reply
    return ProtocolError(ErrorCode(reply.content["code"]), reply.content["message"])


@pytest.fixture
def raw(server):
    r = Raw(server)
    yield r
    r.close()


@pytest.fixture
def segment():
    seg = shm.Segment.create(48, shm.CLIENT_PREFIX)
    seg.write(0, bytes(range(48)))
    seg.close()
    yield seg
    seg.unlink()


def test_out_of_bounds_and_wrong_sizes_are_bad_buffer(server, raw, segment):
    cases = [
        {"shm": segment.name, "offset": 8, "size": 48},  # past the end
        {"shm": segment.name, "offset": 0, "size": 47},  # not stride x height
        {"shm": segment.name, "offset": -1, "size": 48},
        {"shm": segment.name, "offset": 0, "size": "48"},
        {"shm": segment.name, "offset": 0, "size": 48, "extra": 1},
        "not an object",
    ]
    for loc in cases:
        err = _submit_located(raw, loc)
        assert err.code == ErrorCode.BAD_BUFFER, loc
    assert _submit_located(raw, {"shm": segment.name, "offset": 0, "size": 48}, frames=[b"x"]).code == (
        ErrorCode.BAD_BUFFER  # a frame nobody describes
    )
    assert segment.name in shm.leftovers()  # refused inputs are not unlinked by the server
    _still_serving(server)


def test_names_outside_our_scheme_and_missing_segments_are_bad_buffer(server, raw):
    for name in (
        "../../etc/passwd",
        "le-c1-xyz",
        f"{shm.SERVER_PREFIX}1-{'0' * 32}",
        f"le-c{os.getpid()}-{'a' * 32}",
    ):
        err = _submit_located(raw, {"shm": name, "offset": 0, "size": 48})
        assert err.code == ErrorCode.BAD_BUFFER, name
    missing = _submit_located(raw, {"shm": f"le-c{os.getpid()}-{'b' * 32}", "offset": 0, "size": 48})
    assert "does not exist" in missing.message
    _still_serving(server)


def test_a_segment_readable_by_others_is_refused(server, raw, segment):
    os.chmod(shm.SHM_DIR / segment.name, 0o644)
    err = _submit_located(raw, {"shm": segment.name, "offset": 0, "size": 48})
    assert err.code == ErrorCode.BAD_BUFFER and "0644" in err.message
    os.chmod(shm.SHM_DIR / segment.name, 0o600)  # the same segment, private again: accepted and consumed
    raw.send_signed(
        _header(
            "submit",
            job=wire.new_id(),
            op="echo",
            content={},
            buffers=[
                {
                    "role": "image",
                    "width": 4,
                    "height": 3,
                    "channels": 4,
                    "dtype": "u8",
                    "order": "RGBA",
                    "stride": 16,
                    "location": {"shm": segment.name, "offset": 0, "size": 48},
                }
            ],
        )
    )
    assert raw.recv().type == wire.ACCEPTED
    assert shm.exists(segment.name)  # the client owns its segments: the backend never unlinks them


def test_a_symlink_is_not_followed(server, raw, tmp_path):
    target = tmp_path / "pixels"
    target.write_bytes(bytes(48))
    name = f"le-c{os.getpid()}-{'c' * 32}"
    os.symlink(target, shm.SHM_DIR / name)
    try:
        assert _submit_located(raw, {"shm": name, "offset": 0, "size": 48}).code == ErrorCode.BAD_BUFFER
    finally:
        os.unlink(shm.SHM_DIR / name)


def test_a_location_where_shm_is_not_accepted_is_bad_buffer(segment):
    buf = wire.Buffer(bytes(48), 4, 3, location={"shm": segment.name, "offset": 0, "size": 48})
    frames = wire.encode(wire.Message(wire.RESULT, buffers=[buf]), b"k" * 64)
    assert len(frames) == 3  # the located buffer takes no frame
    with pytest.raises(ProtocolError) as exc:
        wire.decode(frames, b"k" * 64)
    assert exc.value.code == ErrorCode.BAD_BUFFER


# -- lifecycle: nothing left behind ---------------------------------------------------------------
def test_no_leftovers_after_errors_and_cancels(server, client):
    img = array_buffer(_image(h=16, w=16))
    with pytest.raises(ProtocolError) as exc:
        client.run("boom", {}, image=img, timeout=30)
    assert exc.value.code == ErrorCode.INTERNAL
    with pytest.raises(ProtocolError) as exc:
        client.run("nosuchop", {}, image=img, timeout=30)  # refused before a job exists
    assert exc.value.code == ErrorCode.UNKNOWN_OP
    job = client.submit("steps", {"steps": 2000, "delay": 0.01}, image=img)
    client.cancel(job)
    with pytest.raises(ProtocolError) as exc:
        client.wait(job, timeout=30)
    assert exc.value.code == ErrorCode.CANCELLED
    queued_behind = client.submit("steps", {"steps": 200, "delay": 0.01}, image=img)
    queued = client.submit("echo", {}, image=img)
    client.cancel(queued)
    client.cancel(queued_behind)
    for j in (queued, queued_behind):
        with pytest.raises(ProtocolError):
            client.wait(j, timeout=30)
    assert server.jobs.shm_bytes == 0 and len(client._pool.slots) <= 4
    client.close()
    assert _mine() == [server._probe.name]


def test_close_right_after_submit_then_fetch(server):
    img = _image(h=40, w=40)
    first = Client.connect(server.connection_file)
    first.hello()
    first.shm_min_bytes = 1
    job = first.submit("echo", {}, image=array_buffer(img))
    first.close()  # waits for the submit's answer, so its input is mapped before the pool is unlinked
    assert wait_until(lambda: _stored(server, job))
    assert _mine() == [server._probe.name] or server.jobs.shm_bytes > 0
    with Client.connect(server.connection_file) as second:
        # written into the first client's (now gone) segment, or into the backend's own: fetched either way
        result = second.fetch(job, timeout=30)
        assert np.array_equal(np.frombuffer(result.image.data, np.uint8).reshape(img.shape), img)
    assert wait_until(lambda: server.jobs.shm_bytes == 0 and _mine() == [server._probe.name])


def test_fetch_by_another_client_reads_the_offered_segment(server):
    img = _image(h=40, w=40)
    first = Client.connect(server.connection_file)
    first.hello()
    first.shm_min_bytes = 1
    job = first.submit("steps", {"steps": 3, "delay": 0.01}, image=array_buffer(img))
    assert wait_until(lambda: _stored(server, job))
    assert server.jobs.get(job).offered_result is not None  # written into first's pool
    with Client.connect(server.connection_file) as second:
        result = second.fetch(job, timeout=30)
        assert result.image.location["shm"].startswith(shm.CLIENT_PREFIX)
        assert np.array_equal(np.frombuffer(result.image.data, np.uint8).reshape(img.shape), img)
    first.close()


def test_eviction_unlinks_result_segments(tmp_path):
    img = _image(h=64, w=64)  # 16 KiB per result
    quota = {"max_result_bytes_per_client": 40_000}  # one client here: its quota is the whole store
    with running_server(tmp_path, max_result_bytes=40_000, **quota) as srv:
        srv.jobs.shm_min_bytes = 1
        raw = Raw(srv)
        jobs = []
        for _ in range(4):  # results requested in shm and never released
            jobs.append(wire.new_id())
            raw.send_signed(
                _header(
                    "submit",
                    job=jobs[-1],
                    op="echo",
                    content={"shm_results": True},
                    buffers=[array_buffer(img).descriptor()],
                ),
                [memoryview(img).cast("B")],
            )
        assert wait_until(lambda: all(_stored(srv, j) or srv.jobs.get(j).state == "expired" for j in jobs))
        states = [srv.jobs.get(j).state for j in jobs]
        live = [srv.jobs.get(j).segment for j in jobs if srv.jobs.get(j).segment is not None]
        assert states.count("done") == len(live) == 2 and srv.jobs.shm_bytes == 2 * shm.aligned(img.nbytes)
        assert sorted([*(s.name for s in live), srv._probe.name]) == _mine()
        raw.close()
    assert _mine() == []


def test_shm_budget_spent_sends_results_inline(tmp_path):
    img = _image(h=64, w=64)
    with running_server(tmp_path, max_shm_bytes=10_000) as srv, Client.connect(srv.connection_file) as c:
        srv.jobs.shm_min_bytes = 1
        c.hello()
        result = c.run("echo", {}, image=array_buffer(img), timeout=30)
        assert result.image.location is None
        assert np.array_equal(np.frombuffer(result.image.data, np.uint8).reshape(img.shape), img)


_KILLED_CLIENT = """
import sys, time
import numpy as np
from protocol import shm
from protocol.client import Client
from backend.wire_images import array_buffer
c = Client.connect(sys.argv[1])
c.hello()
c.shm_min_bytes = 1
img = np.full((64, 64, 4), 7, np.uint8)
job = c.submit("steps", {"steps": 5, "delay": 0.01}, image=array_buffer(img))
orphan = shm.Segment.create(4096, shm.CLIENT_PREFIX)  # an input written, never sent: the client dies first
print(job, orphan.name, flush=True)
time.sleep(60)
"""


def test_a_killed_client_leaves_nothing_after_server_cleanup(server):
    # the child owns its job by this process's token, so the fetch below may see it (whatever ran before)
    env = dict(os.environ, PYTHONPATH=str(ROOT), LAYEREDIT_CLIENT_TOKEN=default_token())
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_KILLED_CLIENT), str(server.connection_file)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        job, orphan = proc.stdout.readline().split()
        assert wait_until(lambda: _stored(server, job))
        pool = shm.leftovers({proc.pid})
        assert orphan in pool and len(pool) == 3  # its input, the result space (written), the orphan
        assert server.jobs.get(job).offered_result is not None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    live = shm.Segment.create(4096, shm.CLIENT_PREFIX)  # a live writer's segment, as old as the sweep allows
    try:
        swept = server.sweep_shm(max_age_s=0)
        assert live.name not in swept and shm.exists(live.name)
    finally:
        live.close()
        live.unlink()
    assert set(pool) <= set(swept)  # everything the dead client had
    # (the sweep may also take another dead writer's segment: an earlier test's killed backend, say)
    assert shm.leftovers({proc.pid}) == []
    with Client.connect(server.connection_file) as c:  # its result is still there, now sent inline
        result = c.fetch(job, timeout=30)
        assert result.image.location is None and bytes(result.image.data) == bytes([7]) * (64 * 64 * 4)


def test_a_result_in_a_closed_clients_segment_is_resent_inline(server):
    img = _image(h=40, w=40)
    first = Client.connect(server.connection_file)
    first.hello()
    first.shm_min_bytes = 1
    job = first.submit("echo", {}, image=array_buffer(img))
    assert wait_until(lambda: _stored(server, job))
    assert server.jobs.get(job).offered_result is not None
    first.close()  # its pool, holding the unread result, is unlinked
    with Client.connect(server.connection_file) as second:
        result = second.fetch(job, timeout=30)
        assert result.image.location is None
        assert np.array_equal(np.frombuffer(result.image.data, np.uint8).reshape(img.shape), img)


def test_a_crashed_backends_segments_are_swept_at_the_next_start(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [f"{shm.SERVER_PREFIX}{dead.pid}-{'d' * 32}", f"{shm.CLIENT_PREFIX}{dead.pid}-{'e' * 32}"]
    for name in stale:
        fd = os.open(shm.SHM_DIR / name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.close(fd)
        past = time.time() - 60
        os.utime(shm.SHM_DIR / name, (past, past))
    with running_server(tmp_path):
        assert shm.leftovers({dead.pid}) == []


def test_capabilities_json_is_plain(server, client):
    json.dumps(client.capabilities["shm"])  # a host in another language reads it as plain JSON


def test_idle_pool_segments_are_given_back(server, client):
    client.run("echo", {}, image=array_buffer(_image(h=30, w=30)), timeout=30)
    assert len(client._pool.slots) == 2
    client._pool.keep_idle_s = 0.0
    client.pump()  # a host's timer calls this every ~250 ms
    assert client._pool.slots == [] and _mine() == [server._probe.name]


def test_a_full_dev_shm_falls_back_to_inline(server, client, monkeypatch):
    def full(fd, offset, size):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    seen = _count_inputs(server)
    img = _image(h=30, w=30)
    result = client.run("echo", {}, image=array_buffer(img), timeout=30)
    assert seen == [] and result.image.location is None  # nothing could be reserved on either side
    assert np.array_equal(np.frombuffer(result.image.data, np.uint8).reshape(img.shape), img)


_EXITING_CLIENT = """
import sys
import numpy as np
from protocol.client import Client
from backend.wire_images import array_buffer
c = Client.connect(sys.argv[1])
c.hello()
c.shm_min_bytes = 1
result = c.run("echo", {}, image=array_buffer(np.full((64, 64, 4), 9, np.uint8)), timeout=30)
assert result.image.location is not None
print(len(c._pool.slots), flush=True)
"""  # exits without close(), like a GIMP plug-in process


def test_a_client_process_that_exits_without_close_leaves_nothing(server):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_EXITING_CLIENT), str(server.connection_file)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == "2"  # it had a pool of two segments
    assert shm.leftovers({proc.pid}) == []  # unlinked at exit, no sweep needed

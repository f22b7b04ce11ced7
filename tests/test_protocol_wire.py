"""Wire format: encode/decode, signing and verification, buffer descriptors, header fuzzing."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import wire
from protocol.errors import ErrorCode, ProtocolError
from protocol.wire import Buffer, Message

KEY = b"0123456789abcdef" * 4


def _rgba(w: int = 3, h: int = 2) -> Buffer:
    return Buffer(bytes(range(w * h * 4)), w, h, 4, "u8", "RGBA", x=10, y=-4)


def test_roundtrip_keeps_header_fields_and_buffers():
    padded = Buffer(bytes(2 * 8), 1, 2, 1, "f32", "gray", stride=8, role="selection")  # 4 bytes pad per row
    msg = Message(wire.SUBMIT, job="j1", parent="p1", op="erase", params={"a": 1}, buffers=[_rgba(), padded])
    frames = wire.encode(msg, KEY)
    assert frames[0] == wire.DELIMITER and len(frames) == 5
    out = wire.decode(frames, KEY)
    assert (out.type, out.id, out.job, out.parent, out.op, out.params) == (
        wire.SUBMIT,
        msg.id,
        "j1",
        "p1",
        "erase",
        {"a": 1},
    )
    img, sel = out.buffers
    assert (img.width, img.height, img.channels, img.dtype, img.order, img.x, img.y, img.role) == (
        3,
        2,
        4,
        "u8",
        "RGBA",
        10,
        -4,
        "image",
    )
    assert bytes(img.data) == bytes(range(24))
    assert (sel.stride, sel.dtype, sel.role) == (8, "f32", "selection")
    assert out.buffer("selection") is sel and out.buffer("mask") is None


def test_buffers_travel_without_copies():
    data = bytearray(16)
    frames = wire.encode(Message(wire.RESULT, buffers=[Buffer(data, 2, 2)]), KEY)
    assert frames[3] is data  # the caller's object itself goes to zmq (send_multipart copy=False)


def test_header_is_plain_json_with_descriptors():
    frames = wire.encode(Message(wire.SUBMIT, op="x", buffers=[_rgba()]), KEY)
    header = json.loads(frames[2])
    assert header["protocol"] == wire.PROTOCOL_VERSION
    assert header["buffers"][0] == {
        "role": "image",
        "width": 3,
        "height": 2,
        "channels": 4,
        "dtype": "u8",
        "order": "RGBA",
        "stride": 12,
        "x": 10,
        "y": -4,
        "nbytes": 24,
    }


@pytest.mark.parametrize("part", [1, 2, 3])
def test_any_tampering_breaks_the_signature(part):
    frames = [bytes(f) for f in wire.encode(Message(wire.SUBMIT, op="x", buffers=[_rgba()]), KEY)]
    tampered = bytearray(frames[part])
    tampered[-2] ^= 1
    frames[part] = bytes(tampered)
    with pytest.raises(wire.SignatureError):
        wire.decode(frames, KEY)


def test_wrong_key_missing_signature_and_short_messages_are_rejected():
    frames = wire.encode(Message(wire.PING), KEY)
    with pytest.raises(wire.SignatureError):
        wire.decode(frames, b"another key")
    with pytest.raises(wire.SignatureError):
        wire.decode([frames[0], b"", frames[2]], KEY)
    with pytest.raises(wire.SignatureError):
        wire.decode(frames[:2], KEY)
    with pytest.raises(wire.SignatureError):
        wire.decode([b"nope", *frames[1:]], KEY)


def test_signature_covers_frame_boundaries():
    """Moving bytes from one buffer to the next must not keep the signature valid."""
    header = b'{"h":1}'
    assert wire.sign(KEY, header, [b"ab", b"c"]) != wire.sign(KEY, header, [b"a", b"bc"])


def test_big_buffers_hash_in_chunks_and_every_chunk_counts():
    big = bytearray(3 * wire.CHUNK + 5)
    d1 = wire.buffer_digest(big)
    big[-1] = 1  # last, partial chunk
    d2 = wire.buffer_digest(big)
    big[wire.CHUNK] = 1  # second chunk
    d3 = wire.buffer_digest(big)
    assert len({d1, d2, d3}) == 3
    assert wire.buffer_digest(bytes(big)) == d3


def test_frame_count_mismatch_is_bad_buffer():
    frames = wire.encode(Message(wire.SUBMIT, op="x", buffers=[_rgba(), _rgba()]), KEY)
    # a sender that signed what it sent, but sent one buffer less than described
    truncated = frames[:-1]
    truncated[1] = wire.sign(KEY, truncated[2], truncated[3:])
    with pytest.raises(ProtocolError) as exc:
        wire.decode(truncated, KEY)
    assert exc.value.code == ErrorCode.BAD_BUFFER


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"data": bytes(23)}, ErrorCode.BAD_BUFFER),  # one byte short
        ({"data": bytes(25)}, ErrorCode.BAD_BUFFER),
        ({"dtype": "u32"}, ErrorCode.UNSUPPORTED_FORMAT),
        ({"order": "CMYK"}, ErrorCode.UNSUPPORTED_FORMAT),
        ({"order": "RGB"}, ErrorCode.BAD_BUFFER),  # 3 channels named, 4 declared
        ({"stride": 4}, ErrorCode.BAD_BUFFER),  # shorter than a row
        ({"width": 0, "data": b""}, ErrorCode.BAD_BUFFER),
    ],
)
def test_buffer_descriptor_errors(kwargs, code):
    base = {"data": bytes(24), "width": 3, "height": 2, "channels": 4, "dtype": "u8", "order": "RGBA"}
    with pytest.raises(ProtocolError) as exc:
        Buffer(**{**base, **kwargs})
    assert exc.value.code == code


def test_channels_imply_the_default_order_and_stride():
    assert Buffer(bytes(6), 3, 2, 1).order == "gray"
    assert Buffer(bytes(18), 3, 2, 3).order == "RGB"
    assert Buffer(bytes(48), 3, 2, 4, "f16").stride == 24


def test_decode_header_errors():
    with pytest.raises(ProtocolError) as exc:
        wire.decode_header(b"\xff not json")
    assert exc.value.code == ErrorCode.MALFORMED
    with pytest.raises(ProtocolError) as exc:
        wire.decode_header(b'{"protocol": "2.0", "type": "hello", "id": "x"}')
    assert exc.value.code == ErrorCode.BAD_VERSION
    with pytest.raises(ProtocolError) as exc:
        wire.decode_header(b'{"protocol": "1.0", "type": 5, "id": "x"}')
    assert exc.value.code == ErrorCode.MALFORMED
    header = wire.decode_header(
        b'{"protocol": "1.3", "type": "hello", "id": "x"}'
    )  # minor versions are compatible
    assert header["buffers"] == [] and header["content"] == {} and header["job"] is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
header_like = st.fixed_dictionaries(
    {},
    optional={
        "protocol": st.sampled_from(["1.0", "1.9", "2.0", "", "x"]) | json_values,
        "type": st.sampled_from(sorted(wire.CLIENT_TYPES)) | json_values,
        "id": st.text(max_size=8) | json_values,
        "job": st.none() | json_values,
        "parent": st.none() | json_values,
        "op": st.none() | json_values,
        "params": st.none() | json_values,
        "content": json_values,
        "buffers": st.lists(json_values, max_size=3) | json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_decode_header_bytes(raw):
    """Arbitrary bytes: either a well-typed header or a ProtocolError with a stable code, nothing else."""
    try:
        header = wire.decode_header(raw)
    except ProtocolError as exc:
        assert exc.code in (ErrorCode.MALFORMED, ErrorCode.BAD_VERSION)
    else:
        assert isinstance(header["type"], str) and isinstance(header["buffers"], list)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header_like, st.lists(st.binary(max_size=64), max_size=3))
def test_fuzz_signed_messages_decode_or_fail_cleanly(header, buffers):
    """Validly signed but arbitrary headers and buffers: a Message or a ProtocolError, never a crash."""
    raw = json.dumps(header).encode()
    frames = [wire.DELIMITER, wire.sign(KEY, raw, buffers), raw, *buffers]
    try:
        msg = wire.decode(frames, KEY)
    except ProtocolError as exc:
        assert exc.code in set(ErrorCode)
    else:
        assert len(msg.buffers) == len(buffers)
        for b in msg.buffers:
            assert b.nbytes == b.stride * b.height


def test_a_host_selects_the_snapped_object_not_the_repainted_region():
    from protocol.client import Result

    def mask(value: int) -> Buffer:
        return Buffer(bytes([value] * 4), 2, 2, 1, "u8", "gray", role="mask")

    region, obj = mask(255), mask(128)
    both = Message(
        wire.RESULT, job="j", content={"meta": {"masks": ["region", "object"]}}, buffers=[region, obj]
    )
    result = Result.from_message(both)
    assert result.mask is region and result.object_mask is obj and result.selection_mask is obj
    assert result.named_masks() == {"region": region, "object": obj}
    one = Result.from_message(Message(wire.RESULT, job="j", content={"meta": {}}, buffers=[region]))
    assert one.object_mask is None and one.selection_mask is region  # snap: its one mask is the object
    assert one.named_masks() == {"mask": region}
    none = Result.from_message(Message(wire.RESULT, job="j", content={"meta": {}}, buffers=[]))
    assert none.selection_mask is None and none.named_masks() == {}

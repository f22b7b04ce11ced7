"""Wire format: ZeroMQ multipart frames, a JSON header, raw pixel buffers, an HMAC-SHA256 signature.

Layout of one message (after any ROUTER identity frames)::

    [b"<LAYEREDIT>", signature (64 hex ASCII bytes), header (UTF-8 JSON), buffer 0, buffer 1, ...]

Pixels travel as raw frames described in the header (never base64, never PNG) so a 4096x4096 layer costs
one memcpy into the socket. The signature covers the header and every buffer; see ``sign`` for the exact
recipe, which hashes big buffers in parallel 4 MiB chunks so signing does not dominate the round trip.
Standard library only (plus pyzmq frames when given): this module is imported inside Krita and GIMP.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .errors import ErrorCode, ProtocolError

PROTOCOL_VERSION = "1.0"
PROTOCOL_MAJOR = 1
DELIMITER = b"<LAYEREDIT>"
CHUNK = 4 << 20  # buffer digests hash 4 MiB chunks (in parallel for big buffers)
MAX_HEADER_BYTES = 1 << 20
MAX_BUFFERS = 16
MAX_ID_CHARS = 128  # message and job ids

# Sample type -> bytes per sample. All multi-byte samples are little-endian.
SAMPLE_BYTES = {"u8": 1, "u16": 2, "f16": 2, "f32": 4}
# Channel order -> channel count.
ORDER_CHANNELS = {"RGBA": 4, "BGRA": 4, "RGB": 3, "gray": 1}
DEFAULT_ORDER = {1: "gray", 3: "RGB", 4: "RGBA"}
ROLES = ("image", "selection", "mask", "candidate", "preview")

# Message types. Client -> server:
HELLO, SUBMIT, CANCEL, STATUS, LIST, FETCH, RELEASE, PING, SHUTDOWN = (
    "hello",
    "submit",
    "cancel",
    "status",
    "list",
    "fetch",
    "release",
    "ping",
    "shutdown",
)
# Server -> client:
CAPABILITIES, ACCEPTED, PROGRESS, RESULT, ERROR, JOB_STATUS, JOBS, PONG, BYE = (
    "capabilities",
    "accepted",
    "progress",
    "result",
    "error",
    "job_status",
    "jobs",
    "pong",
    "bye",
)
CLIENT_TYPES = frozenset({HELLO, SUBMIT, CANCEL, STATUS, LIST, FETCH, RELEASE, PING, SHUTDOWN})
SERVER_TYPES = frozenset({CAPABILITIES, ACCEPTED, PROGRESS, RESULT, ERROR, JOB_STATUS, JOBS, PONG, BYE})


class SignatureError(Exception):
    """The signature is missing or wrong: the message is dropped (logged), never answered or executed."""


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Buffer:
    """A pixel buffer and its description. ``data`` is bytes/memoryview/bytearray (or a zmq Frame's
    buffer); it is sent and received without copies. ``stride`` is bytes per row (0: tightly packed).
    ``x``, ``y`` place the buffer's top-left corner in document coordinates."""

    data: Any
    width: int
    height: int
    channels: int = 4
    dtype: str = "u8"
    order: str | None = None
    stride: int = 0
    x: int = 0
    y: int = 0
    role: str = "image"
    # Same-host shared memory instead of a frame: {"shm": NAME, "offset": N, "size": N} (SPEC.md section 8).
    location: dict | None = None

    def __post_init__(self) -> None:
        if self.order is None:
            self.order = DEFAULT_ORDER.get(self.channels, "")
        if not self.stride:
            self.stride = self.row_bytes
        self.validate()

    @property
    def row_bytes(self) -> int:
        return self.width * self.channels * SAMPLE_BYTES.get(self.dtype, 1)

    @property
    def nbytes(self) -> int:
        return memoryview(self.data).nbytes

    def validate(self) -> None:
        """Check the description against itself and the data length (``bad_buffer`` / ``unsupported_format``)."""
        if self.dtype not in SAMPLE_BYTES:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_FORMAT,
                f"Sample type {self.dtype!r} is not supported; use one of {', '.join(SAMPLE_BYTES)}.",
            )
        if self.order not in ORDER_CHANNELS:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_FORMAT,
                f"Channel order {self.order!r} is not supported; use one of {', '.join(ORDER_CHANNELS)}.",
            )
        if ORDER_CHANNELS[self.order] != self.channels:
            raise ProtocolError(
                ErrorCode.BAD_BUFFER,
                f"Channel order {self.order} has {ORDER_CHANNELS[self.order]} channels, not {self.channels}.",
            )
        for name in ("width", "height", "stride", "x", "y"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ProtocolError(ErrorCode.BAD_BUFFER, f"Buffer {name} must be an integer, got {value!r}.")
        if self.width <= 0 or self.height <= 0:
            raise ProtocolError(ErrorCode.BAD_BUFFER, f"Buffer size {self.width}x{self.height} is empty.")
        if self.stride < self.row_bytes:
            raise ProtocolError(
                ErrorCode.BAD_BUFFER,
                f"Row stride {self.stride} is shorter than a row ({self.row_bytes} bytes).",
            )
        if self.nbytes != self.stride * self.height:
            raise ProtocolError(
                ErrorCode.BAD_BUFFER,
                f"{self.role} buffer has {self.nbytes} bytes; {self.width}x{self.height} with stride "
                f"{self.stride} needs {self.stride * self.height}. Send whole rows, stride x height bytes.",
                {"role": self.role},
            )

    def descriptor(self) -> dict:
        desc = {
            "role": self.role,
            "width": self.width,
            "height": self.height,
            "channels": self.channels,
            "dtype": self.dtype,
            "order": self.order,
            "stride": self.stride,
            "x": self.x,
            "y": self.y,
            "nbytes": self.nbytes,
        }
        if self.location is not None:
            desc["location"] = dict(self.location)
        return desc

    @classmethod
    def from_descriptor(cls, desc: Any, data: Any) -> Buffer:
        """Rebuild a buffer from its header entry and frame; any inconsistency is a ``bad_buffer`` error."""
        if not isinstance(desc, dict):
            raise ProtocolError(ErrorCode.BAD_BUFFER, "Each buffer descriptor must be a JSON object.")
        try:
            kwargs = {k: desc[k] for k in ("width", "height", "channels", "dtype", "order", "stride")}
        except KeyError as exc:
            raise ProtocolError(ErrorCode.BAD_BUFFER, f"Buffer descriptor lacks {exc.args[0]!r}.") from None
        for k in ("dtype", "order"):
            if not isinstance(kwargs[k], str):
                raise ProtocolError(ErrorCode.UNSUPPORTED_FORMAT, f"Buffer {k} must be a string.")
        if not isinstance(kwargs["channels"], int) or isinstance(kwargs["channels"], bool):
            raise ProtocolError(ErrorCode.BAD_BUFFER, "Buffer channels must be an integer.")
        role = desc.get("role", "image")
        if role not in ROLES:  # an unknown role is refused, never ignored
            raise ProtocolError(
                ErrorCode.BAD_BUFFER, f"Buffer role {role!r} is not one of {', '.join(ROLES)}."
            )
        stride = kwargs.pop("stride")
        if not isinstance(stride, int) or isinstance(stride, bool) or stride <= 0:
            raise ProtocolError(
                ErrorCode.BAD_BUFFER, "Buffer stride must be a positive integer (bytes per row)."
            )
        location = desc.get("location")
        return cls(
            data=data,
            stride=stride,
            x=desc.get("x", 0),
            y=desc.get("y", 0),
            role=role,
            location=dict(location) if isinstance(location, dict) else None,
            **kwargs,
        )


@dataclass
class Message:
    """One protocol message. ``content`` carries the type-specific fields (see SPEC.md)."""

    type: str
    id: str = field(default_factory=new_id)
    job: str | None = None
    parent: str | None = None
    op: str | None = None
    params: dict | None = None
    content: dict = field(default_factory=dict)
    buffers: list[Buffer] = field(default_factory=list)

    def header(self) -> dict:
        return {
            "protocol": PROTOCOL_VERSION,
            "type": self.type,
            "id": self.id,
            "job": self.job,
            "parent": self.parent,
            "op": self.op,
            "params": self.params,
            "content": self.content,
            "buffers": [b.descriptor() for b in self.buffers],
        }

    def buffer(self, role: str) -> Buffer | None:
        return next((b for b in self.buffers if b.role == role), None)


def _view(frame: Any) -> memoryview:
    """bytes, memoryview or a zmq.Frame (copy=False) -> memoryview, without copying."""
    buf = getattr(frame, "buffer", frame)
    view = memoryview(buf)
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


_pool: ThreadPoolExecutor | None = None


def _chunk_digest(view: memoryview) -> bytes:
    return hashlib.sha256(view).digest()


def buffer_digest(data: Any) -> bytes:
    """SHA-256 over the concatenated SHA-256 digests of the buffer's 4 MiB chunks (hashlib releases the GIL,
    so chunks of big buffers are hashed on two threads). An empty buffer hashes to SHA-256 of nothing."""
    global _pool
    view = _view(data)
    chunks = [view[i : i + CHUNK] for i in range(0, view.nbytes, CHUNK)]
    if len(chunks) > 2:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="layeredit-hash")
        digests = list(_pool.map(_chunk_digest, chunks))
    else:
        digests = [_chunk_digest(c) for c in chunks]
    return hashlib.sha256(b"".join(digests)).digest()


def sign(key: bytes, header: bytes, buffers: Sequence[Any]) -> bytes:
    """HMAC-SHA256(key, header || buffer_digest(b0) || buffer_digest(b1) ...) as 64 lowercase hex bytes.
    The header already states each buffer's length, so the concatenation is unambiguous."""
    mac = hmac.new(key, header, hashlib.sha256)
    for b in buffers:
        mac.update(buffer_digest(b))
    return mac.hexdigest().encode("ascii")


def encode(msg: Message, key: bytes) -> list[Any]:
    """Message -> frames ready for ``send_multipart(frames, copy=False)``; buffers are not copied."""
    header = json.dumps(msg.header(), separators=(",", ":"), allow_nan=False).encode("utf-8")
    datas = [b.data for b in msg.buffers if b.location is None]  # shm buffers travel by name, not as frames
    return [DELIMITER, sign(key, header, datas), header, *datas]


def split_identities(frames: Sequence[Any]) -> tuple[list[bytes], list[Any]]:
    """ROUTER side: [identity..., DELIMITER, ...] -> (identities, frames from the delimiter on)."""
    for i, f in enumerate(frames[:8]):  # identities come first; never scan pixel frames
        view = _view(f)
        if view.nbytes == len(DELIMITER) and bytes(view) == DELIMITER:
            return [bytes(_view(x)) for x in frames[:i]], list(frames[i:])
    raise ProtocolError(ErrorCode.MALFORMED, "No message delimiter frame.")


def verify(frames: Sequence[Any], key: bytes) -> None:
    """Raise SignatureError unless ``frames`` ([DELIMITER, sig, header, buffers...]) carry a valid signature."""
    if len(frames) < 3 or bytes(_view(frames[0])) != DELIMITER:
        raise SignatureError("message too short or lacks the delimiter")
    sig = bytes(_view(frames[1]))
    if len(sig) != 64 or sig.strip(b"0123456789abcdef"):  # not even shaped like one: no hashing needed
        raise SignatureError("bad signature")
    header = _view(frames[2])
    if header.nbytes > MAX_HEADER_BYTES or len(frames) - 3 > MAX_BUFFERS:
        raise SignatureError("header or buffer count over the limit: not even checked")
    expected = sign(key, header, frames[3:])
    if not hmac.compare_digest(sig, expected):
        raise SignatureError("bad signature")


def header_ids(raw: Any) -> tuple[str | None, str | None]:
    """(``id``, ``job``) of a header when they are readable strings, else None: an error about a header that
    is refused (``bad_version``, ``malformed``) still names the request it answers."""
    try:
        header = json.loads(bytes(_view(raw)).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError, TypeError):
        return None, None
    if not isinstance(header, dict):
        return None, None
    ids = (header.get("id"), header.get("job"))
    return tuple(v if isinstance(v, str) else None for v in ids)  # type: ignore[return-value]


def decode_header(raw: bytes | memoryview) -> dict:
    """Parse and type-check a header; raise ProtocolError(MALFORMED / BAD_VERSION) saying what is wrong."""
    try:
        header = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError(ErrorCode.MALFORMED, "Header is not valid UTF-8 JSON.") from None
    if not isinstance(header, dict):
        raise ProtocolError(ErrorCode.MALFORMED, "Header must be a JSON object.")
    version = header.get("protocol")
    if not isinstance(version, str):
        raise ProtocolError(ErrorCode.MALFORMED, "Header lacks the 'protocol' version string.")
    major = version.split(".", 1)[0]
    if major != str(PROTOCOL_MAJOR):
        raise ProtocolError(
            ErrorCode.BAD_VERSION,
            f"Protocol {version} is not supported (this side speaks {PROTOCOL_VERSION}); update the plugin "
            "and the backend together.",
        )
    checks: dict[str, tuple[type, ...]] = {
        "type": (str,),
        "id": (str,),
        "job": (str, type(None)),
        "parent": (str, type(None)),
        "op": (str, type(None)),
        "params": (dict, type(None)),
        "content": (dict,),
        "buffers": (list,),
    }
    header.setdefault("content", {})
    header.setdefault("buffers", [])
    for name in ("job", "parent", "op", "params"):
        header.setdefault(name, None)
    for name, types in checks.items():
        if name not in header:
            raise ProtocolError(ErrorCode.MALFORMED, f"Header lacks {name!r}.")
        if not isinstance(header[name], types):
            raise ProtocolError(ErrorCode.MALFORMED, f"Header field {name!r} has the wrong type.")
    if not 1 <= len(header["id"]) <= MAX_ID_CHARS:
        raise ProtocolError(ErrorCode.MALFORMED, f"A message id must be 1 to {MAX_ID_CHARS} characters.")
    if len(header["buffers"]) > MAX_BUFFERS:
        raise ProtocolError(ErrorCode.MALFORMED, f"At most {MAX_BUFFERS} buffers per message.")
    return header


Resolve = Callable[[Any, int], Any]  # (a descriptor's location, stride x height) -> the buffer's bytes


def _expected_bytes(desc: Any) -> int:
    """stride x height of a descriptor that names a location (what the segment slice must hold)."""
    stride, height = (desc.get(k) for k in ("stride", "height"))
    for name, value in (("stride", stride), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ProtocolError(ErrorCode.BAD_BUFFER, f"Buffer {name} must be a positive integer.")
    return stride * height


def _is_located(desc: Any) -> bool:
    return isinstance(desc, dict) and desc.get("location") is not None


def decode(frames: Sequence[Any], key: bytes | None, resolve: Resolve | None = None) -> Message:
    """[DELIMITER, sig, header, buffers...] -> Message. Verifies first (SignatureError), then the header and
    each buffer against its descriptor (ProtocolError with a stable code). Buffers stay zero-copy views.
    ``key=None`` skips the check, for a caller that has just called ``verify`` itself. Descriptors with a
    ``location`` take no frame; ``resolve`` maps them (None: such a message is BAD_BUFFER here)."""
    if key is not None:
        verify(frames, key)
    header = decode_header(_view(frames[2]))
    frame_views = [_view(f) for f in frames[3:]]
    descs = header["buffers"]
    inline = sum(1 for d in descs if not _is_located(d))
    if inline != len(frame_views):
        raise ProtocolError(
            ErrorCode.BAD_BUFFER,
            f"Header describes {inline} inline buffers but {len(frame_views)} frames arrived.",
            {"msg_id": header["id"]},
        )
    datas: list[Any] = []
    it = iter(frame_views)
    try:
        for d in descs:
            if not _is_located(d):
                datas.append(next(it))
            elif resolve is None:
                raise ProtocolError(
                    ErrorCode.BAD_BUFFER,
                    "This side does not accept shared-memory buffers; send them inline as frames.",
                )
            else:
                datas.append(resolve(d["location"], _expected_bytes(d)))
    except ProtocolError as exc:
        exc.details.setdefault("msg_id", header["id"])
        raise
    msg = Message(
        type=header["type"],
        id=header["id"],
        job=header["job"],
        parent=header["parent"],
        op=header["op"],
        params=header["params"],
        content=header["content"],
    )
    try:
        msg.buffers = [Buffer.from_descriptor(d, data) for d, data in zip(descs, datas, strict=True)]
    except ProtocolError as exc:
        exc.details.setdefault("msg_id", header["id"])
        raise
    return msg


def error_message(exc: ProtocolError, *, parent: str | None = None, job: str | None = None) -> Message:
    return Message(ERROR, job=job, parent=parent, content=exc.to_json())


def hexdump(frames: Sequence[Any]) -> str:
    """A byte-by-byte listing of a message's frames (SPEC.md's example is generated with this)."""
    names = ["delimiter", "signature (hex HMAC-SHA256)", "header (UTF-8 JSON)"]
    lines = []
    for i, frame in enumerate(frames):
        data = bytes(_view(frame))
        name = names[i] if i < len(names) else f"buffer {i - 3}"
        lines.append(f"frame {i}: {name}, {len(data)} bytes")
        for off in range(0, len(data), 16):
            row = data[off : off + 16]
            text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
            lines.append(f"  {off:04x}  {row.hex(' '):<47}  |{text}|")
    return "\n".join(lines)


def example() -> tuple[bytes, list[Any]]:
    """The fixed example message of SPEC.md: (key, frames)."""
    key = b"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
    image = Buffer(bytes([255, 0, 0, 255, 0, 0, 255, 128]), 2, 1, 4, "u8", "RGBA", x=10, y=20)
    selection = Buffer(bytes([255, 0]), 2, 1, 1, "u8", "gray", x=10, y=20, role="selection")
    msg = Message(
        SUBMIT,
        id="msg-0001",
        job="job-0001",
        op="erase",
        params={"snap": True},
        buffers=[image, selection],
    )
    return key, encode(msg, key)

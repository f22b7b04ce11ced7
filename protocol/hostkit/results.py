"""What one job sends and what comes back, as both hosts need it: the buffers to submit, and the result's
buffers checked against the region that was sent before anything is written into the user's document."""

from __future__ import annotations

from protocol.errors import ErrorCode, ProtocolError
from protocol.hostkit.region import Rect
from protocol.wire import Buffer

UPDATE_BOTH = "Update the plug-in and the backend together (python3 install.py)."


def job_buffers(
    region: Rect,
    image: bytes,
    sample: str,
    order: str,
    selection: bytes | None = None,
    mask_sample: str = "u8",
) -> tuple[Buffer, Buffer | None]:
    """The image (``region``-sized, in the host's own sample type and channel order: the backend answers in
    the same) and the selection over the same rectangle (one gray channel; None: no selection), placed at the
    region's corner in document coordinates."""
    r = region
    buf = Buffer(image, r.w, r.h, len(order), sample, order, x=r.x, y=r.y, role="image")
    if selection is None:
        return buf, None
    return buf, Buffer(selection, r.w, r.h, 1, mask_sample, "gray", x=r.x, y=r.y, role="selection")


def packed(buf: Buffer) -> bytes:
    """The buffer's rows without stride padding (what a host's set-pixels call takes)."""
    data = memoryview(buf.data).cast("B")
    if buf.stride == buf.row_bytes:
        return bytes(data)
    return b"".join(bytes(data[y * buf.stride : y * buf.stride + buf.row_bytes]) for y in range(buf.height))


def result_image(buf: Buffer | None, region: Rect, sample: str, order: str) -> bytes:
    """A result image's pixels, packed; ``bad_buffer`` unless it covers ``region`` in the format that was sent
    (then nothing is written: a wrong-sized layer would land shifted or scaled in the document)."""
    return _checked(buf, (region.w, region.h, sample, order), "image", "nothing changed")


def result_mask(buf: Buffer | None, region: Rect) -> bytes:
    """A returned mask (the snapped object, to become the selection), packed; ``bad_buffer`` unless it is
    8-bit gray over ``region``."""
    return _checked(buf, (region.w, region.h, "u8", "gray"), "mask", "the selection is unchanged")


def _checked(buf: Buffer | None, want: tuple, what: str, outcome: str) -> bytes:
    got = None if buf is None else (buf.width, buf.height, buf.dtype, buf.order)
    if got != want:
        raise ProtocolError(
            ErrorCode.BAD_BUFFER,
            f"The backend returned the {what} {got}, expected {want}; {outcome}. {UPDATE_BOTH}",
        )
    return packed(buf)

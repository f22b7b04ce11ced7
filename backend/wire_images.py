"""numpy <-> protocol buffers, on the backend side only (hosts may lack numpy).

Decoding honours the row stride and sample type, turns BGRA into RGBA, and aligns the host's selection (in
document coordinates, any size or offset) to the image's rectangle. Encoding writes results back in the
host's own format: same sample type, same channel order, same origin. Views are used wherever no
conversion is needed, so an RGBA8 round trip copies nothing here.
"""

from __future__ import annotations

import numpy as np

from protocol.errors import ErrorCode, ProtocolError
from protocol.wire import Buffer

NP_DTYPES: dict[str, np.dtype] = {
    "u8": np.dtype(np.uint8),
    "u16": np.dtype("<u2"),
    "f16": np.dtype("<f2"),
    "f32": np.dtype("<f4"),
}
_BGR = [2, 1, 0]


def buffer_array(buf: Buffer) -> np.ndarray:
    """The buffer as an HxWxC array in its own channel order (a read-only view when possible)."""
    dtype = NP_DTYPES[buf.dtype]
    raw = np.frombuffer(buf.data, dtype=np.uint8).reshape(buf.height, buf.stride)
    rows = raw[:, : buf.row_bytes]
    if not rows.flags.c_contiguous:
        rows = np.ascontiguousarray(rows)
    return rows.view(dtype).reshape(buf.height, buf.width, buf.channels)


def decode_image(buf: Buffer) -> np.ndarray:
    """HxWxC in RGB(A) or gray order with the host's sample type, native byte order."""
    arr = buffer_array(buf)
    if buf.order == "BGRA":
        arr = arr[:, :, [2, 1, 0, 3]]
    if not arr.dtype.isnative:  # big-endian machines: the wire is little-endian
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def to_unit_float(arr: np.ndarray) -> np.ndarray:
    """u8/255, u16/65535, floats clipped to [0, 1] (NaN -> 0); float32, never a view of ``arr``."""
    if arr.dtype == np.uint8:  # one pass, exact division (255 -> 1.0 exactly)
        return np.divide(arr, np.float32(255), dtype=np.float32)
    if arr.dtype == np.uint16:
        return np.divide(arr, np.float32(65535), dtype=np.float32)
    # the clip and the cast in one pass, then NaN -> 0: the same bytes as clip(nan_to_num(x)) (-0.0 kept,
    # +-inf -> 1 / 0) without its copies and three classification passes (a 4096x4096 f32 selection: ~60 -> 15 ms)
    out = np.clip(arr, np.float32(0), np.float32(1), dtype=np.float32)
    np.copyto(out, np.float32(0), where=np.isnan(out))
    return out


def decode_selection(sel: Buffer, image: Buffer | None) -> np.ndarray:
    """The selection as float32 HxW in [0, 1] on the image's rectangle: zero where the host's selection
    did not reach, cropped where it reaches beyond. Without an image, the selection's own rectangle."""
    if sel.channels != 1:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"The selection must be one gray channel, got {sel.channels} ({sel.order}); send the selection mask.",
        )
    values = to_unit_float(buffer_array(sel)[:, :, 0])
    if image is None or (sel.x, sel.y, sel.width, sel.height) == (
        image.x,
        image.y,
        image.width,
        image.height,
    ):
        return values
    out = np.zeros((image.height, image.width), np.float32)
    x0, y0 = max(sel.x, image.x), max(sel.y, image.y)
    x1, y1 = min(sel.x + sel.width, image.x + image.width), min(sel.y + sel.height, image.y + image.height)
    if x1 > x0 and y1 > y0:
        out[y0 - image.y : y1 - image.y, x0 - image.x : x1 - image.x] = values[
            y0 - sel.y : y1 - sel.y, x0 - sel.x : x1 - sel.x
        ]
    return out


def encode_image(arr: np.ndarray, like: Buffer, role: str = "image") -> Buffer:
    """An op's image (RGB(A)/gray, the host's sample type) back into the host's format and origin."""
    want = NP_DTYPES[like.dtype]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != like.channels or arr.dtype.name != want.name:
        raise ProtocolError(
            ErrorCode.INTERNAL,
            f"The op returned an image of shape {arr.shape} and type {arr.dtype}; expected "
            f"{like.channels} channels of {want.name} (a bug in the op).",
        )
    if like.order == "BGRA":
        arr = arr[:, :, [2, 1, 0, 3]]
    arr = np.ascontiguousarray(arr, dtype=want)
    h, w = arr.shape[:2]
    return Buffer(
        memoryview(arr).cast("B"), w, h, like.channels, like.dtype, like.order, x=like.x, y=like.y, role=role
    )


def encode_mask(mask: np.ndarray, like: Buffer | None, role: str = "mask") -> Buffer:
    """A mask as a gray u8 buffer placed at ``like``'s origin."""
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    if mask.dtype != np.uint8:
        mask = np.clip(np.rint(to_unit_float(mask) * 255), 0, 255).astype(np.uint8)
    mask = np.ascontiguousarray(mask)
    h, w = mask.shape
    x, y = (like.x, like.y) if like is not None else (0, 0)
    return Buffer(memoryview(mask).cast("B"), w, h, 1, "u8", "gray", x=x, y=y, role=role)


def encode_preview(arr: np.ndarray) -> Buffer:
    """A small progress preview as u8 RGB(A)/gray (whatever the op's sample type)."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(to_unit_float(arr) * 255), 0, 255).astype(np.uint8)
    arr = np.ascontiguousarray(arr)
    h, w, c = arr.shape
    if c not in (1, 3, 4):
        arr, c = np.ascontiguousarray(arr[:, :, :3]), 3
    return Buffer(memoryview(arr).cast("B"), w, h, c, "u8", role="preview")


def array_buffer(
    arr: np.ndarray, order: str | None = None, x: int = 0, y: int = 0, role: str = "image"
) -> Buffer:
    """Wrap an HxWxC / HxW array (uint8, uint16, float16, float32) as a buffer (used by the CLI and tests)."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    names = {v.name: k for k, v in NP_DTYPES.items()}
    if arr.dtype.name not in names:
        raise ProtocolError(ErrorCode.UNSUPPORTED_FORMAT, f"Sample type {arr.dtype} is not supported.")
    arr = np.ascontiguousarray(arr, dtype=NP_DTYPES[names[arr.dtype.name]])
    h, w, c = arr.shape
    return Buffer(memoryview(arr).cast("B"), w, h, c, names[arr.dtype.name], order, x=x, y=y, role=role)

"""Decoding a host's float selection (GIMP's float images send "Y float"): NaN reads as 0, values clip to
[0, 1], the result is float32 in its own memory (the host's buffer, maybe shared memory, is never written)."""

from __future__ import annotations

import numpy as np
import pytest

from backend.wire_images import decode_selection, to_unit_float
from protocol.wire import Buffer

ODD = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 0.25, 1.0, 1.0000001, 0.99999994, 7.0, -3.0, 3e38]


def _reference(values: np.ndarray) -> np.ndarray:
    """What the backend has always made of float samples (day 1's three-step form)."""
    with np.errstate(over="ignore"):
        return np.clip(np.nan_to_num(values.astype(np.float32)), 0.0, 1.0)


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_a_float_selection_decodes_to_the_reference_bytes_and_leaves_the_buffer_alone(dtype):
    np_dtype = np.dtype("<f4") if dtype == "f32" else np.dtype("<f2")
    rng = np.random.default_rng(2)
    h, w = 9, 13
    with np.errstate(over="ignore"):
        values = rng.normal(0.5, 1.0, (h, w)).astype(np_dtype)
        values.flat[: len(ODD)] = np.array(ODD, np.float64).astype(np_dtype)
    stride = w * np_dtype.itemsize + 6  # padded rows, as a host may send them
    raw = bytearray(h * stride)
    for y in range(h):
        raw[y * stride : y * stride + w * np_dtype.itemsize] = values[y].tobytes()
    sent = bytes(raw)
    buf = Buffer(raw, w, h, 1, dtype, "gray", stride=stride, role="selection")
    out = decode_selection(buf, None)
    assert out.dtype == np.float32 and out.shape == (h, w)
    assert out.tobytes() == _reference(values).tobytes()  # -0.0 kept, NaN -> +0.0, +-inf -> 1 / 0
    assert bytes(raw) == sent
    assert not np.shares_memory(out, np.frombuffer(raw, np.uint8))


def test_to_unit_float_copies_even_in_range_float32():
    values = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    out = to_unit_float(values)
    assert out.tobytes() == values.tobytes() and not np.shares_memory(out, values)

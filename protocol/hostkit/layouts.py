"""Pixel layouts: how a host hands out pixels, as the protocol names sample types and channel orders."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.wire import SAMPLE_BYTES  # one table: the wire's


@dataclass(frozen=True)
class PixelLayout:
    """How a host hands out pixels: sample type, channel count and channel order (as the protocol names them)."""

    sample: str  # "u8" | "u16" | "f16" | "f32"
    order: str  # "BGRA", "RGBA", "GA", ...

    @property
    def channels(self) -> int:
        return len(self.order)

    @property
    def bytes_per_sample(self) -> int:
        return SAMPLE_BYTES[self.sample]

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * self.bytes_per_sample

    def nbytes(self, width: int, height: int) -> int:
        return width * height * self.bytes_per_pixel

"""Pixel layouts: how a host hands out pixels, as the protocol names sample types and channel orders."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import ErrorCode, ProtocolError


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


SAMPLE_BYTES = {"u8": 1, "u16": 2, "f16": 2, "f32": 4}
_KRITA_DEPTHS = {"U8": "u8", "U16": "u16", "F16": "f16", "F32": "f32"}


def krita_layout(color_model: str, depth: str) -> PixelLayout:
    """Krita's Node.pixelData layout. Integer RGB depths are stored BGRA (KoBgrU8/U16 traits), float depths RGBA;
    sending the host's order as-is lets the backend reorder with numpy instead of Python loops here."""
    sample = _KRITA_DEPTHS.get(depth)
    if sample is None:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"Colour depth {depth} is not supported; use Image > Convert Image Color Space to 8/16-bit integer "
            "or 16/32-bit float.",
        )
    if color_model == "RGBA":
        return PixelLayout(sample, "BGRA" if sample in ("u8", "u16") else "RGBA")
    # Grey+alpha has no wire order (the protocol carries gray, RGB, RGBA, BGRA): converting is one click.
    raise ProtocolError(
        ErrorCode.UNSUPPORTED_FORMAT,
        f"Colour model {color_model} is not supported; convert the image to RGB/Alpha "
        "(Image > Convert Image Color Space) and run again.",
    )

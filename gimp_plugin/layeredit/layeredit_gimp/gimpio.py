"""Reading a drawable + the selection through GEGL, and writing the result as a new layer.

Pixels are read and written in one babl format chosen from the image precision: the component type follows
the precision (u8, u16, half, float; u32 and double travel as float) and the transfer curve follows it too
("R'G'B'A" for non-linear, "RGBA" for linear, "R~G~B~A" for perceptual). Reading and writing in the image's
own curve is what keeps untouched pixels bit-identical in the new layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.errors import ErrorCode, ProtocolError
from protocol.hostkit import Mode, Rect, plan_region, selection_to_send

_COMPONENT = {  # GIMP precision component -> (babl type, wire sample, bytes per sample)
    "u8": ("u8", "u8", 1),
    "u16": ("u16", "u16", 2),
    "u32": ("float", "f32", 4),
    "half": ("half", "f16", 2),
    "float": ("float", "f32", 4),
    "double": ("float", "f32", 4),
}
_CURVE = {"linear": "RGBA", "non-linear": "R'G'B'A", "perceptual": "R~G~B~A"}


@dataclass(frozen=True)
class PixelFormat:
    """How one image's pixels travel: babl names for GEGL and the protocol's sample type."""

    babl: str  # e.g. "R'G'B'A u8"
    sample: str  # protocol sample type: u8, u16, f16, f32
    bytes_per_sample: int
    mask_babl: str  # selection channel format: "Y u8" or "Y float"
    mask_sample: str
    channel_babl: str = ""  # a new channel's format: "Y' u8" in 8-bit non-linear images (GIMP's own choice)

    @property
    def bytes_per_pixel(self) -> int:
        return 4 * self.bytes_per_sample


def pixel_format(precision_nick: str) -> PixelFormat:
    """PixelFormat for a Gimp.Precision nick such as "u8-non-linear" or "float-linear"."""
    component, _, curve = precision_nick.partition("-")
    if component not in _COMPONENT or curve not in _CURVE:
        raise ValueError(f"unsupported GIMP precision {precision_nick!r}")
    babl_type, sample, size = _COMPONENT[component]
    if sample == "u8":
        # The selection is linear "Y u8"; a channel GIMP makes in an 8-bit non-linear image is "Y' u8", and
        # select_item copies its stored values as they are (checked in GIMP 3.0.4): a mask written to it as
        # "Y u8" would come out brightened (54 -> 127) in the selection, so it is written as "Y' u8".
        channel = "Y' u8" if curve == "non-linear" else "Y u8"
        return PixelFormat(f"{_CURVE[curve]} {babl_type}", sample, size, "Y u8", "u8", channel)
    return PixelFormat(f"{_CURVE[curve]} {babl_type}", sample, size, "Y float", "f32", "Y float")


@dataclass
class Source:
    """What one job sends: the drawable's pixels over ``region`` (image coordinates, RGBA in ``fmt``) and the
    selection over the same rectangle (None: no selection touches the layer)."""

    layer: Any
    region: Rect
    fmt: PixelFormat
    pixels: bytes
    selection: bytes | None


def drawable_offsets(drawable: Any) -> tuple[int, int]:
    """get_offsets() returns (ok, x, y) in GIMP 3.0; accept a plain (x, y) too."""
    offsets = tuple(drawable.get_offsets())
    return int(offsets[-2]), int(offsets[-1])


def selection_rect(gimp: Any, image: Any) -> Rect | None:
    """Bounds of a non-empty selection in image coordinates, else None."""
    _ok, non_empty, x0, y0, x1, y1 = gimp.Selection.bounds(image)
    return Rect.from_corners(x0, y0, x1, y1) if non_empty else None


def read_source(
    gimp: Any, gegl: Any, image: Any, drawable: Any, mode: Mode, params: Mapping[str, Any] | None = None
) -> Source:
    """Read the region ``hostkit.plan_region`` picks (the selection plus what the op reads with ``params``,
    clipped to the layer and the canvas; the whole visible layer without a selection) and the selection over it.

    Raises ProtocolError(no_selection) when the mode needs a selection that is missing or misses the layer.
    """
    if not drawable.is_layer():
        raise ProtocolError(
            ErrorCode.MISSING_INPUT,
            "Pick a layer (not a layer mask or channel) in the Layers dock and run again.",
        )
    fmt = pixel_format(image.get_precision().value_nick)
    x, y = drawable_offsets(drawable)
    layer_rect = Rect(x, y, drawable.get_width(), drawable.get_height())
    canvas = Rect(0, 0, image.get_width(), image.get_height())
    plan = plan_region(mode, layer_rect, canvas, selection_rect(gimp, image), params=params)
    r = plan.region
    local = gegl.Rectangle.new(r.x - x, r.y - y, r.w, r.h)  # drawable buffers use layer coordinates
    pixels = bytes(drawable.get_buffer().get(local, 1.0, fmt.babl, gegl.AbyssPolicy.CLAMP))
    mask = None
    if plan.selection is not None:  # the selection channel lives in image coordinates
        sel_buffer = image.get_selection().get_buffer()
        area = gegl.Rectangle.new(r.x, r.y, r.w, r.h)
        mask = bytes(sel_buffer.get(area, 1.0, fmt.mask_babl, gegl.AbyssPolicy.NONE))
    return Source(drawable, r, fmt, pixels, selection_to_send(mode, mask))


def write_result(
    gimp: Any,
    gegl: Any,
    image: Any,
    source: Source,
    pixels: bytes,
    name: str,
    mask: bytes | None = None,
    extra: list[tuple[str, bytes]] | tuple = (),
) -> list[Any]:
    """Add the result as a new layer over ``source.region``, right above the source, in one undo group;
    ``extra`` (name, pixels) results (e.g. Imagic's other eta values) go below it, still above the source.

    ``mask`` (over the same region) optionally replaces the selection, in the same undo group.
    The source layer is only read, never written, and stays the selected layer. Returns the new layers, top
    first.
    """
    r = source.region
    results = [(name, pixels), *extra]
    expected = r.w * r.h * source.fmt.bytes_per_pixel
    for _name, data in results:
        if len(data) != expected:
            raise ValueError(f"result has {len(data)} bytes, expected {expected}")
    layers = []
    image.undo_group_start()
    try:
        for layer_name, data in results:  # each lands right above the source, so below the previous one
            layer = gimp.Layer.new(
                image, layer_name, r.w, r.h, gimp.ImageType.RGBA_IMAGE, 100.0, gimp.LayerMode.NORMAL
            )
            image.insert_layer(layer, source.layer.get_parent(), image.get_item_position(source.layer))
            layers.append(layer)
            layer.set_offsets(r.x, r.y)
            buffer = layer.get_buffer()
            buffer.set(gegl.Rectangle.new(0, 0, r.w, r.h), source.fmt.babl, data)
            buffer.flush()
            layer.update(0, 0, r.w, r.h)
        if mask is not None:
            _select_mask(gimp, gegl, image, source, *mask_in_format(mask, source.fmt.channel_babl))
        # GIMP selects an inserted layer; keep the source selected (as the Krita plugin does) so a second
        # Run reads the source again instead of the result.
        image.set_selected_layers([source.layer])
    except BaseException:
        for layer in layers:  # a failure half-way must not leave half a result behind
            image.remove_layer(layer)
        if layers:
            image.set_selected_layers([source.layer])
        raise
    finally:
        image.undo_group_end()
    return layers


def replace_selection(gimp: Any, gegl: Any, image: Any, source: Source, mask: bytes) -> None:
    """Select object: the 8-bit ``mask`` over ``source.region`` becomes the selection, in one undo group (Edit >
    Undo brings the rough selection back). No layer is added, no pixel changes; the selected layer stays."""
    r = source.region
    if len(mask) != r.w * r.h:
        raise ValueError(f"mask has {len(mask)} bytes, expected {r.w}x{r.h}")
    data, babl = mask_in_format(mask, source.fmt.channel_babl)
    image.undo_group_start()
    try:
        _select_mask(gimp, gegl, image, source, data, babl)
    finally:
        image.undo_group_end()


def mask_in_format(mask: bytes, babl: str) -> tuple[bytes, str]:
    """An 8-bit mask in a new channel's own format (8-bit formats as is, "Y float" as 0..1 floats), so GEGL
    stores the values unconverted and the selection made from the channel holds exactly the mask."""
    if babl != "Y float":
        return bytes(mask), babl
    from array import array

    scale = [v / 255.0 for v in range(256)]
    return array("f", [scale[v] for v in mask]).tobytes(), babl


def _select_mask(gimp: Any, gegl: Any, image: Any, source: Source, mask: bytes, mask_babl: str) -> None:
    """Replace the selection through a temporary channel, which keeps the change undoable."""
    channel = gimp.Channel.new(
        image, "layeredit mask", image.get_width(), image.get_height(), 100.0, gegl.Color.new("black")
    )
    image.insert_channel(channel, None, 0)
    buffer = channel.get_buffer()
    r = source.region
    buffer.set(gegl.Rectangle.new(r.x, r.y, r.w, r.h), mask_babl, mask)
    buffer.flush()
    image.select_item(gimp.ChannelOps.REPLACE, channel)
    image.remove_channel(channel)

"""A small stand-in for GIMP 3's ``Gimp`` and ``Gegl`` modules: enough to run the plug-in's adapter logic
(layers with offsets, the selection channel, GEGL buffers in one babl format, undo groups) without GIMP.

Buffers hold raw bytes in one babl format and refuse reads/writes in another: the plug-in must ask for the
format that matches the image precision, as it does in the real GIMP (where a mismatch would convert).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from types import SimpleNamespace

_SAMPLE = {"u8": 1, "u16": 2, "half": 2, "float": 4}


def format_bpp(fmt: str) -> int:
    model, sample = fmt.split(" ")
    channels = 1 if model.rstrip("'~") == "Y" else 4
    return channels * _SAMPLE[sample]


@dataclass
class Rectangle:
    x: int
    y: int
    width: int
    height: int

    @classmethod
    def new(cls, x, y, w, h):
        return cls(x, y, w, h)


class AbyssPolicy(Enum):
    NONE = 0
    CLAMP = 1


class Buffer:
    """Pixels at integer coordinates over (x, y, w, h); one babl format."""

    def __init__(self, x: int, y: int, w: int, h: int, fmt: str):
        self.extent = (x, y, w, h)
        self.fmt = fmt
        self.bpp = format_bpp(fmt)
        self.data = bytearray(w * h * self.bpp)
        self.flushed = 0

    def _check(self, fmt: str) -> None:
        if fmt != self.fmt:
            raise AssertionError(f"format {fmt!r} requested from a {self.fmt!r} buffer")

    def get(self, rect: Rectangle, scale: float, fmt: str, abyss: AbyssPolicy) -> bytes:
        self._check(fmt)
        ex, ey, ew, eh = self.extent
        out = bytearray()
        for y in range(rect.y, rect.y + rect.height):
            for x in range(rect.x, rect.x + rect.width):
                inside = ex <= x < ex + ew and ey <= y < ey + eh
                if not inside and abyss == AbyssPolicy.NONE:
                    out += bytes(self.bpp)
                    continue
                cx, cy = min(max(x, ex), ex + ew - 1), min(max(y, ey), ey + eh - 1)
                i = ((cy - ey) * ew + (cx - ex)) * self.bpp
                out += self.data[i : i + self.bpp]
        return bytes(out)

    def set(self, rect: Rectangle, fmt: str, data: bytes) -> None:
        self._check(fmt)
        ex, ey, ew, eh = self.extent
        assert len(data) == rect.width * rect.height * self.bpp
        for row in range(rect.height):
            for col in range(rect.width):
                x, y = rect.x + col, rect.y + row
                if ex <= x < ex + ew and ey <= y < ey + eh:
                    i = ((y - ey) * ew + (x - ex)) * self.bpp
                    j = (row * rect.width + col) * self.bpp
                    self.data[i : i + self.bpp] = data[j : j + self.bpp]

    def flush(self) -> None:
        self.flushed += 1


class Precision:
    def __init__(self, nick: str):
        self.value_nick = nick


class Item:
    def __init__(self, image, name, width, height):
        self.image, self.name, self.width, self.height = image, name, width, height
        self.x = self.y = 0
        self.parent = None

    def get_name(self):
        return self.name

    def get_width(self):
        return self.width

    def get_height(self):
        return self.height

    def get_offsets(self):
        return (True, self.x, self.y)

    def set_offsets(self, x, y):
        self.x, self.y = x, y

    def get_parent(self):
        return self.parent

    def update(self, *rect):
        pass


class Layer(Item):
    def __init__(self, image, name, width, height, fmt):
        super().__init__(image, name, width, height)
        self.buffer = Buffer(0, 0, width, height, fmt)

    @classmethod
    def new(cls, image, name, width, height, image_type, opacity, mode):
        assert image_type == "RGBA_IMAGE"
        return cls(image, name, width, height, image.pixel_babl)

    def is_layer(self):
        return True

    def get_buffer(self):
        return self.buffer


class Channel(Item):
    def __init__(self, image, name, width, height, fmt):
        super().__init__(image, name, width, height)
        self.buffer = Buffer(0, 0, width, height, fmt)

    @classmethod
    def new(cls, image, name, width, height, opacity, color):
        return cls(image, name, width, height, image.channel_babl)

    def is_layer(self):
        return False

    def get_buffer(self):
        return self.buffer


@dataclass
class Image:
    width: int
    height: int
    precision: str = "u8-non-linear"
    layers: list = field(default_factory=list)
    channels: list = field(default_factory=list)
    undo_depth: int = 0
    undo_groups: int = 0
    selection_bounds: tuple | None = None  # set by select_rectangle / select_item
    selected: list = field(default_factory=list)  # the selected (active) layers
    log: list = field(default_factory=list)

    def __post_init__(self):
        curve = {"linear": "RGBA", "non-linear": "R'G'B'A", "perceptual": "R~G~B~A"}
        comp, _, trc = self.precision.partition("-")
        babl_type = {"u8": "u8", "u16": "u16", "half": "half"}.get(comp, "float")
        self.pixel_babl = f"{curve[trc]} {babl_type}"
        self.mask_babl = "Y u8" if comp == "u8" else "Y float"
        # as GIMP 3.0.4: the selection is linear, a new channel of an 8-bit non-linear image is "Y' u8", and
        # select_item copies the channel's stored values as they are
        self.channel_babl = "Y' u8" if self.precision == "u8-non-linear" else self.mask_babl
        self.selection = Channel(self, "selection", self.width, self.height, self.mask_babl)

    def get_width(self):
        return self.width

    def get_height(self):
        return self.height

    def get_precision(self):
        return Precision(self.precision)

    def get_selection(self):
        return self.selection

    def get_layers(self):
        return list(self.layers)

    def get_item_position(self, item):
        return self.layers.index(item)

    def insert_layer(self, layer, parent, position):
        self._need_group()
        self.layers.insert(position, layer)
        self.selected = [layer]  # as GIMP 3 does: the inserted layer becomes the selected one
        self.log.append(("insert_layer", layer.name, position))

    def get_selected_layers(self):
        return list(self.selected)

    def set_selected_layers(self, layers):
        self.selected = list(layers)

    def remove_layer(self, layer):
        self._need_group()
        self.layers.remove(layer)
        self.selected = [x for x in self.selected if x is not layer]

    def insert_channel(self, channel, parent, position):
        self._need_group()
        self.channels.insert(position, channel)

    def remove_channel(self, channel):
        self._need_group()
        self.channels.remove(channel)

    def select_rectangle(self, op, x, y, w, h):
        one = b"\xff" if self.mask_babl == "Y u8" else bytes.fromhex("0000803f")
        self.selection.buffer.data[:] = bytes(len(self.selection.buffer.data))
        self.selection.buffer.set(Rectangle(x, y, w, h), self.mask_babl, one * (w * h))
        self.selection_bounds = (x, y, x + w, y + h)

    def select_item(self, op, channel):
        self._need_group()
        self.selection.buffer.data[:] = channel.buffer.data
        self.log.append(("select_item", channel.name))

    def undo_group_start(self):
        self.undo_depth += 1
        self.undo_groups += 1

    def undo_group_end(self):
        assert self.undo_depth > 0
        self.undo_depth -= 1

    def _need_group(self):
        assert self.undo_depth > 0, "image changed outside an undo group"


class Selection:
    @staticmethod
    def bounds(image):
        b = image.selection_bounds
        if b is None:
            return (True, False, 0, 0, image.width, image.height)
        return (True, True, *b)


def make_modules():
    """(Gimp, Gegl) stand-ins; ``Gimp.progress_calls`` records the progress bar."""
    calls: list = []
    gimp = SimpleNamespace(
        Layer=Layer,
        Channel=Channel,
        Selection=Selection,
        ImageType=SimpleNamespace(RGBA_IMAGE="RGBA_IMAGE"),
        LayerMode=SimpleNamespace(NORMAL="NORMAL"),
        ChannelOps=SimpleNamespace(REPLACE="REPLACE"),
        progress_calls=calls,
        progress_init=lambda text: calls.append(("init", text)),
        progress_set_text=lambda text: calls.append(("text", text)),
        progress_update=lambda f: calls.append(("update", f)),
        progress_end=lambda: calls.append(("end",)),
    )
    gegl = SimpleNamespace(
        Rectangle=Rectangle,
        AbyssPolicy=AbyssPolicy,
        Color=SimpleNamespace(new=lambda name: name),
    )
    return gimp, gegl


class Config:
    """A procedure config: get_property by PDB argument name."""

    def __init__(self, **values):
        self.values = {k.replace("_", "-"): v for k, v in values.items()}

    def get_property(self, name):
        return self.values[name]


class RecordingProcedure:
    """Records add_*_argument calls (name -> (kind, args))."""

    def __init__(self):
        self.args: dict[str, tuple] = {}

    def __getattr__(self, attr):
        if attr.startswith("add_") and attr.endswith("_argument"):
            kind = attr[4:-9]
            return lambda name, *rest: self.args.__setitem__(name, (kind, rest))
        raise AttributeError(attr)

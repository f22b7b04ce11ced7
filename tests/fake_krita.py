"""A small stand-in for Krita's ``krita`` scripting module, enough for the plugin's document I/O and controller.

It models what the real-Krita runs showed (tests/hosts/krita, /work/shared/host-recipes/krita): pixelData in the
host layout (U8/U16 BGRA, F16/F32 RGBA), coordinates in document space with layers allowed to extend past the
canvas, exact bounds of a layer's non-empty pixels, a 1-byte-per-pixel selection, nodes inserted above a sibling,
Document == comparing the underlying document, a newly added node becoming the active one, and a closed
document dropping out of ``documents()``.
Install it with ``install()``: it puts itself in ``sys.modules['krita']``.
"""

from __future__ import annotations

import sys
import types
import uuid
from dataclasses import dataclass

BPP = {("RGBA", "U8"): 4, ("RGBA", "U16"): 8, ("RGBA", "F16"): 8, ("RGBA", "F32"): 16, ("GRAYA", "U8"): 2}


@dataclass
class QRect:
    _x: int
    _y: int
    _w: int
    _h: int

    def x(self) -> int:
        return self._x

    def y(self) -> int:
        return self._y

    def width(self) -> int:
        return self._w

    def height(self) -> int:
        return self._h


class _Plane:
    """Sparse pixels keyed by document coordinates; a pixel of all-zero bytes is empty (transparent)."""

    def __init__(self, bpp: int):
        self.bpp = bpp
        self.px: dict[tuple[int, int], bytes] = {}

    def read(self, x: int, y: int, w: int, h: int) -> bytes:
        empty = bytes(self.bpp)
        return b"".join(self.px.get((x + i, y + j), empty) for j in range(h) for i in range(w))

    def write(self, data: bytes, x: int, y: int, w: int, h: int) -> bool:
        if len(data) != w * h * self.bpp:
            return False
        b = self.bpp
        for j in range(h):
            for i in range(w):
                k = (j * w + i) * b
                p = bytes(data[k : k + b])
                if any(p):
                    self.px[(x + i, y + j)] = p
                else:
                    self.px.pop((x + i, y + j), None)
        return True

    def bounds(self) -> QRect:
        if not self.px:
            return QRect(0, 0, 0, 0)
        xs = [p[0] for p in self.px]
        ys = [p[1] for p in self.px]
        return QRect(min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1)


class Selection:
    def __init__(self) -> None:
        self.plane = _Plane(1)

    def select(self, x: int, y: int, w: int, h: int, value: int) -> None:
        self.plane.write(bytes([value]) * (w * h), x, y, w, h)

    def setPixelData(self, data: bytes, x: int, y: int, w: int, h: int) -> None:  # noqa: N802
        self.plane.write(bytes(data), x, y, w, h)

    def pixelData(self, x: int, y: int, w: int, h: int) -> bytes:  # noqa: N802
        return self.plane.read(x, y, w, h)

    def x(self) -> int:
        return self.plane.bounds().x()

    def y(self) -> int:
        return self.plane.bounds().y()

    def width(self) -> int:
        return self.plane.bounds().width()

    def height(self) -> int:
        return self.plane.bounds().height()


class Node:
    def __init__(self, doc: Document, name: str, kind: str):
        self.doc, self._name, self.kind = doc, name, kind
        self.plane = _Plane(doc.bpp)
        self.children: list[Node] = []
        self.parent: Node | None = None
        self.uid = uuid.uuid4()
        self.opacity = 255
        self.writes = 0  # setPixelData calls: the source layer must never be written by the plugin

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and other.uid == self.uid

    __hash__ = object.__hash__

    def name(self) -> str:
        return self._name

    def type(self) -> str:
        return self.kind

    def uniqueId(self):  # noqa: N802
        return self.uid

    def colorModel(self) -> str:  # noqa: N802
        return self.doc.model

    def colorDepth(self) -> str:  # noqa: N802
        return self.doc.depth

    def bounds(self) -> QRect:
        return self.plane.bounds()

    def pixelData(self, x: int, y: int, w: int, h: int) -> bytes:  # noqa: N802
        return self.plane.read(x, y, w, h)

    def setPixelData(self, data: bytes, x: int, y: int, w: int, h: int) -> bool:  # noqa: N802
        self.writes += 1
        return self.plane.write(bytes(data), x, y, w, h)

    def parentNode(self) -> Node | None:  # noqa: N802
        return self.parent

    def childNodes(self) -> list[Node]:  # noqa: N802
        return list(self.children)

    def addChildNode(self, child: Node, above: Node | None) -> bool:  # noqa: N802
        """Like Krita with a window: the added node becomes the active one, at once, or (``doc.posted`` not
        None) when ``doc.deliver()`` runs, as real Krita does from an event its image thread posts."""
        child.parent = self
        if self.doc.posted is None:
            self.doc._active = child
        else:
            self.doc.posted.append(child)
        if above is None:
            self.children.append(child)
        else:
            self.children.insert(self.children.index(above) + 1, child)
        return True

    def setOpacity(self, value: int) -> None:  # noqa: N802
        self.opacity = value


class Document:
    def __init__(self, app: Krita, w: int, h: int, model: str = "RGBA", depth: str = "U8"):
        self.app, self.w, self.h, self.model, self.depth = app, w, h, model, depth
        self.bpp = BPP[(model, depth)]
        self.root = Node(self, "root", "grouplayer")
        self._selection: Selection | None = None
        self._active: Node | None = None
        self.posted: list[Node] | None = None  # a list: activations of added nodes wait for deliver()
        self.closed = False
        self.key = uuid.uuid4()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Document) and other.key == self.key and not self.closed

    __hash__ = object.__hash__

    def colorModel(self) -> str:  # noqa: N802
        return self.model

    def colorDepth(self) -> str:  # noqa: N802
        return self.depth

    def bounds(self) -> QRect:
        return QRect(0, 0, self.w, self.h)

    def rootNode(self) -> Node | None:  # noqa: N802
        return None if self.closed else self.root

    def topLevelNodes(self) -> list[Node]:  # noqa: N802
        return self.root.childNodes()

    def createNode(self, name: str, kind: str) -> Node:  # noqa: N802
        return Node(self, name, kind)

    def activeNode(self) -> Node | None:  # noqa: N802
        return self._active

    def setActiveNode(self, node: Node) -> None:  # noqa: N802
        self._active = node

    def deliver(self, count: int | None = None) -> None:
        """Krita's posted activations of added nodes arrive (the first ``count``, or all), in order."""
        assert self.posted is not None
        take = len(self.posted) if count is None else count
        for node in self.posted[:take]:
            self._active = node
        del self.posted[:take]

    def nodeByUniqueID(self, uid) -> Node | None:  # noqa: N802
        stack = list(self.root.children)
        while stack:
            n = stack.pop()
            if n.uid == uid:
                return n
            stack.extend(n.children)
        return None

    def selection(self) -> Selection | None:
        return self._selection

    def setSelection(self, sel: Selection | None) -> None:  # noqa: N802
        self._selection = sel

    def pixelData(self, x: int, y: int, w: int, h: int) -> bytes:  # noqa: N802
        """The projection, simplified: per pixel, the topmost layer with a non-empty pixel wins."""
        out = bytearray()
        layers = list(reversed(self.topLevelNodes()))
        empty = bytes(self.bpp)
        for j in range(h):
            for i in range(w):
                p = next((n.plane.px[(x + i, y + j)] for n in layers if (x + i, y + j) in n.plane.px), empty)
                out += p
        return bytes(out)

    def refreshProjection(self) -> None:  # noqa: N802
        pass

    def waitForDone(self) -> None:  # noqa: N802
        pass

    def close(self) -> bool:
        self.closed = True
        self.app.docs = [d for d in self.app.docs if d is not self]
        return True


class Krita:
    _instance: Krita | None = None

    def __init__(self) -> None:
        self.docs: list[Document] = []
        self.active: Document | None = None

    @classmethod
    def instance(cls) -> Krita:
        if cls._instance is None:
            cls._instance = Krita()
        return cls._instance

    def createDocument(self, w, h, name, model, depth, profile="", res=72.0) -> Document:  # noqa: N802
        doc = Document(self, w, h, model, depth)
        self.docs.append(doc)
        return doc

    def documents(self) -> list[Document]:
        return list(self.docs)

    def activeDocument(self) -> Document | None:  # noqa: N802
        return self.active

    def setActiveDocument(self, doc: Document) -> None:  # noqa: N802
        self.active = doc


def install() -> types.ModuleType:
    """Register this module as ``krita`` (the plugin imports ``from krita import Selection``)."""
    mod = sys.modules[__name__]
    sys.modules["krita"] = mod
    return mod

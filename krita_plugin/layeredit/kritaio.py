"""Krita document I/O: read the pixels and selection to send, write the result as a new layer.

Only Krita's scripting API is used here (Document, Node, Selection), duck-typed so tests drive it with a fake
``krita`` module. The host-neutral maths (which rectangle, the buffers, the names) lives in ``protocol.hostkit``; Krita's
own byte layout (``krita_layout``) is here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.errors import ErrorCode, ProtocolError
from protocol.hostkit import (
    Mode,
    PixelLayout,
    Rect,
    RegionPlan,
    job_buffers,
    outline_rects,
    plan_region,
    selection_to_send,
)
from protocol.wire import Buffer

SOURCE_LAYER = "layer"
SOURCE_VISIBLE = "visible"
_DEPTHS = {"U8": "u8", "U16": "u16", "F16": "f16", "F32": "f32"}


def krita_layout(color_model: str, depth: str) -> PixelLayout:
    """Krita's Node.pixelData layout. Integer RGB depths are stored BGRA (KoBgrU8/U16 traits), float depths RGBA;
    sending the host's order as-is lets the backend reorder with numpy instead of Python loops here."""
    sample = _DEPTHS.get(depth)
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


@dataclass
class SourcePixels:
    """What one job reads from Krita, and where its answer goes back."""

    layout: PixelLayout
    plan: RegionPlan
    image: bytes
    selection: bytes | None  # 8-bit, region-sized; None without a selection

    def buffers(self) -> tuple[Buffer, Buffer | None]:
        """The image and selection buffers to submit, in Krita's own layout (the result comes back in it)."""
        return job_buffers(
            self.plan.region, self.image, self.layout.sample, self.layout.order, self.selection
        )


def qrect(r: Any) -> Rect:
    return Rect(int(r.x()), int(r.y()), int(r.width()), int(r.height()))


def selection_rect(doc: Any) -> Rect | None:
    """The document's selection bounds, or None when nothing is selected."""
    sel = doc.selection()
    if sel is None:
        return None
    rect = Rect(int(sel.x()), int(sel.y()), int(sel.width()), int(sel.height()))
    return None if rect.empty else rect


def read_source(
    doc: Any, node: Any, mode: Mode, source: str = SOURCE_LAYER, params: Mapping[str, Any] | None = None
) -> SourcePixels:
    """Read the active layer (or the visible image) around the selection, in Krita's own byte layout; as far
    around it as the op reads with the job's ``params`` (its margin and grow), so the edit is the CLI's."""
    if doc is None:
        raise ProtocolError(ErrorCode.MISSING_INPUT, "Open an image first.")
    layout = krita_layout(doc.colorModel(), doc.colorDepth())
    canvas = qrect(doc.bounds())
    if source == SOURCE_VISIBLE:
        extent = canvas
    else:
        if node is None or node.type() != "paintlayer":
            kind = "nothing" if node is None else f"a {node.type()}"
            raise ProtocolError(
                ErrorCode.MISSING_INPUT,
                f"The active layer is {kind}; pick a paint layer, or choose 'Visible image' as the source.",
            )
        if node.colorModel() != doc.colorModel() or node.colorDepth() != doc.colorDepth():
            layout = krita_layout(node.colorModel(), node.colorDepth())
        extent = qrect(node.bounds())
    sel_rect = selection_rect(doc)
    plan = plan_region(mode, extent, canvas, sel_rect, params=params)
    r = plan.region
    if source == SOURCE_VISIBLE:
        doc.refreshProjection()
        doc.waitForDone()
        image = bytes(doc.pixelData(r.x, r.y, r.w, r.h))
    else:
        image = bytes(node.pixelData(r.x, r.y, r.w, r.h))
    if len(image) != layout.nbytes(r.w, r.h):
        raise ProtocolError(
            ErrorCode.BAD_BUFFER,
            f"Krita returned {len(image)} bytes for a {r.w}x{r.h} {layout.order} region.",
        )
    selection = None
    if plan.selection is not None:
        selection = selection_to_send(mode, bytes(doc.selection().pixelData(r.x, r.y, r.w, r.h)))
    return SourcePixels(layout, plan, image, selection)


def document_alive(app: Any, doc: Any) -> bool:
    """A closed document drops out of Krita's list (Document == compares the underlying document)."""
    try:
        return any(d == doc for d in app.documents()) and doc.rootNode() is not None
    except RuntimeError:  # the wrapped C++ object is gone
        return False


def node_alive(doc: Any, node: Any) -> bool:
    if node is None:
        return False
    try:
        uid = node.uniqueId()
        return doc.nodeByUniqueID(uid) is not None
    except (RuntimeError, AttributeError):
        return False


def layer_names(doc: Any) -> list[str]:
    """The names result layers must not repeat (``hostkit.result_names`` numbers a repeat)."""
    return [n.name() for n in doc.topLevelNodes()]


def add_result_layer(
    doc: Any, source: Any, name: str, data: bytes | memoryview, region: Rect, *, opacity: int = 255
) -> Any:
    """Create a NEW paint layer called ``name`` above ``source`` (or on top of the stack for the visible image)
    and fill it.
    Adding a layer is undoable in Krita; setPixelData on an existing layer is not, so the source is never
    written."""
    layer = doc.createNode(name, "paintlayer")
    if source is not None and node_alive(doc, source):
        parent = source.parentNode() or doc.rootNode()
        parent.addChildNode(layer, source)
    else:
        doc.rootNode().addChildNode(layer, None)
    layer.setPixelData(bytes(data), region.x, region.y, region.w, region.h)
    if opacity != 255:
        layer.setOpacity(opacity)
    doc.refreshProjection()
    return layer


def same_node(a: Any, b: Any) -> bool:
    """The same layer (Python wrappers of one Krita node are distinct objects: compare the node's id)."""
    try:
        return a is not None and b is not None and a.uniqueId() == b.uniqueId()
    except (RuntimeError, AttributeError):
        return False


def active_node(doc: Any) -> Any:
    try:
        return doc.activeNode()
    except RuntimeError:  # the wrapped document is gone
        return None


def reactivate(app: Any, doc: Any, node: Any) -> None:
    """Make ``node`` the active layer again. Krita activates each newly added layer itself, through an event
    the image thread posts some time after ``addChildNode`` returns (not ordered with a QTimer posted then), so
    the controller calls this once that activation is seen (``Controller._restore_source``); keeping the source
    active means another try (a new prompt, a new eta) starts from the same pixels rather than from the last
    result."""
    if node is not None and document_alive(app, doc) and node_alive(doc, node):
        doc.setActiveNode(node)


def set_selection(doc: Any, mask: bytes | memoryview, region: Rect) -> None:
    """Make the snapped mask the document's selection (8-bit, region-sized), with its marching ants.

    Krita 5.1's ``Selection.setPixelData`` leaves the selection's outline cache "valid and empty", so the view
    draws no ants (the selection is there: Show Global Selection Mask shows it). ``Selection.select(rect)``
    adds its rectangle to that cache, so the outline is built from rectangles covering exactly the selected
    pixels (``hostkit.outline_rects``), then the exact values (soft edges) are written over them.
    ``Document.setSelection`` is not undoable in Krita's API."""
    from krita import Selection

    data = bytes(mask)
    sel = Selection()
    for x, y, w, h in outline_rects(data, region.w, region.h):
        sel.select(region.x + x, region.y + y, w, h, 255)
    sel.setPixelData(data, region.x, region.y, region.w, region.h)
    doc.setSelection(sel)

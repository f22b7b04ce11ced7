"""Krita document I/O: read the pixels and selection to send, write the result as a new layer.

Only Krita's scripting API is used here (Document, Node, Selection), duck-typed so tests drive it with a fake
``krita`` module. The maths (which rectangle, which byte layout) lives in ``protocol.hostkit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.errors import ErrorCode, ProtocolError
from protocol.hostkit import (
    Mode,
    PixelLayout,
    Rect,
    RegionPlan,
    krita_layout,
    mask_coverage,
    outline_rects,
    plan_region,
)
from protocol.wire import Buffer

SOURCE_LAYER = "layer"
SOURCE_VISIBLE = "visible"


@dataclass
class SourcePixels:
    """What one job reads from Krita, and where its answer goes back."""

    layout: PixelLayout
    plan: RegionPlan
    image: bytes
    selection: bytes | None  # 8-bit, region-sized; None without a selection

    def image_buffer(self) -> Buffer:
        r = self.plan.region
        return Buffer(
            self.image,
            r.w,
            r.h,
            channels=self.layout.channels,
            dtype=self.layout.sample,
            order=self.layout.order,
            x=r.x,
            y=r.y,
        )

    def selection_buffer(self) -> Buffer | None:
        if self.selection is None:
            return None
        r = self.plan.region
        return Buffer(
            self.selection, r.w, r.h, channels=1, dtype="u8", order="gray", x=r.x, y=r.y, role="selection"
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


def read_source(doc: Any, node: Any, mode: Mode, source: str = SOURCE_LAYER) -> SourcePixels:
    """Read the active layer (or the visible image) around the selection, in Krita's own byte layout."""
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
    plan = plan_region(mode, extent, canvas, sel_rect)
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
        selection = bytes(doc.selection().pixelData(r.x, r.y, r.w, r.h))
        if mask_coverage(selection) == 0:
            if mode.needs_selection:
                raise ProtocolError(
                    ErrorCode.NO_SELECTION, "The selection is empty on this layer: select again."
                )
            selection = None
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


def add_result_layer(
    doc: Any, source: Any, name: str, data: bytes | memoryview, region: Rect, *, opacity: int = 255
) -> Any:
    """Create a NEW paint layer above ``source`` (or on top of the stack for the visible image) and fill it.
    Adding a layer is undoable in Krita; setPixelData on an existing layer is not, so the source is never
    written."""
    existing = [n.name() for n in doc.topLevelNodes()]
    from protocol.hostkit import unique_name

    layer = doc.createNode(unique_name(name, existing), "paintlayer")
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


def reactivate(app: Any, doc: Any, node: Any) -> None:
    """Make ``node`` the active layer again. Krita activates a newly added layer (after the event loop runs,
    so call this deferred); keeping the source active means another try (a new prompt, a new eta) starts
    from the same pixels rather than from the last result."""
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

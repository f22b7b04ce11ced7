"""Modes: what the user picks in a host, and which backend op runs it."""

from __future__ import annotations

from dataclasses import dataclass, replace

from protocol.errors import ErrorCode, ProtocolError

LAYER, SELECTION = "layer", "selection"  # what a mode's result becomes in the host


@dataclass(frozen=True)
class Mode:
    label: str  # shown in the UI and used in layer names
    op: str  # backend op name
    # False: without a selection the whole layer is the input. The backend's schema says it too (``hello``,
    # schemas.json): hosts use ``with_schema``; this value serves only where no schema is known yet.
    needs_selection: bool
    has_prompt: bool
    has_negative: bool
    output: str = LAYER  # LAYER: new layer(s) above the source; SELECTION: the result replaces the selection
    snaps: bool = (
        False  # returns the snapped object's mask: hosts offer "select the snapped object afterwards"
    )

    @property
    def makes_layer(self) -> bool:
        return self.output == LAYER

    def with_schema(self, needs_selection: bool | None) -> Mode:
        """This mode as the backend's op schema describes it (``Form.needs_selection``); None: as built in."""
        if needs_selection is None or needs_selection == self.needs_selection:
            return self
        return replace(self, needs_selection=needs_selection)


# The order both hosts show them in: the Krita docker's Mode list and GIMP's Filters > AI Edit menu.
MODES: tuple[Mode, ...] = (
    Mode("Erase", "erase", needs_selection=True, has_prompt=False, has_negative=False, snaps=True),
    Mode("Replace", "replace", needs_selection=True, has_prompt=True, has_negative=True, snaps=True),
    Mode("Imagic", "imagic", needs_selection=False, has_prompt=True, has_negative=True),
    # The snap op as a smart selection tool (like Photoshop's Object Selection): rough selection in, the
    # selection snapped to the object out; no pixels change and no layer is added.
    Mode(
        "Select object", "snap", needs_selection=True, has_prompt=False, has_negative=False, output=SELECTION
    ),
)


def mode_by_label(label: str) -> Mode:
    for m in MODES:
        if m.label.lower() == label.lower() or m.op == label.lower():
            return m
    raise ProtocolError(
        ErrorCode.UNKNOWN_OP, f"Unknown mode {label!r}; pick one of {', '.join(m.label for m in MODES)}."
    )


def no_selection_message(mode: Mode) -> str:
    """What to tell the user when a mode needs a selection and there is none (stable wording for tests)."""
    what = {"erase": "remove", "snap": "select"}.get(mode.op, "replace")
    return (
        f"{mode.label} needs a selection: select roughly around the object you want to {what} "
        "(any selection tool; it is snapped to the object's edge), then press Run."
    )

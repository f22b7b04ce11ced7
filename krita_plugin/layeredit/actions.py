"""Krita actions (Tools > Scripts; a shortcut can be given to each in Settings > Configure Krita > Keyboard
Shortcuts): Select object runs the snap op on the current selection without switching the docker's mode."""

from __future__ import annotations

from typing import Any

from krita import Extension

SELECT_OBJECT = "layeredit_select_object"


class LayerEditActions(Extension):
    def setup(self) -> None:
        pass

    def createActions(self, window: Any) -> None:  # noqa: N802 - Krita's API name
        action = window.createAction(SELECT_OBJECT, "Select Object (LayerEdit)", "tools/scripts")
        action.setToolTip("Snap the current rough selection to the object inside it (no new layer)")
        action.triggered.connect(select_object)


def select_object() -> bool:
    """The docker of the active window does the work (it holds the backend connection)."""
    from .docker import INSTANCES

    docker = next((d for d in INSTANCES if d.isVisible()), INSTANCES[0] if INSTANCES else None)
    return docker.select_object() if docker is not None else False

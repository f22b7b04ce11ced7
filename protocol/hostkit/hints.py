"""Telling the user what to install, with a command they can paste."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path

from protocol.hostkit.forms import Field, Form

_INSTALL_PY = re.compile(r"(?<![\w/.~-])python3? install\.py\b")


def install_py(project_root: str | os.PathLike | None) -> str:
    """``python3 /abs/path/install.py`` when the plugin's config knows the project folder, else the relative form."""
    if not project_root:
        return "python3 install.py"
    path = str(Path(project_root) / "install.py")
    if os.name == "nt":  # cmd.exe quotes with double quotes only
        return f'python "{path}"' if " " in path else f"python {path}"
    return f"python3 {shlex.quote(path)}"


def with_project_path(text: str, project_root: str | os.PathLike | None) -> str:
    """Make every ``python3 install.py ...`` in a message name the project's install.py by its absolute path
    (the user reads the message in Krita or GIMP, whose working folder is not the project). ``project_root``
    None (unknown, or a remote backend, whose messages are about another machine): the text is unchanged."""
    if not project_root:
        return text
    return _INSTALL_PY.sub(lambda _m: install_py(project_root), text)


def installed_presets(hello: dict | None) -> dict[str, bool] | None:
    """Model preset -> installed, as the backend's ``hello`` advertises it; None from a backend that does not
    say (then hosts show no install hints rather than wrong ones)."""
    presets = (hello or {}).get("presets")
    if not isinstance(presets, dict):
        return None
    return {str(k): bool(v) for k, v in presets.items()}


def model_hint(
    field: Field, presets: Mapping[str, bool] | None, project_root: str | os.PathLike | None = None
) -> str:
    """What to show next to a choice field some of whose choices need a model (erase's fill: learned or
    diffusion fillers) when none of those models is installed: what better quality needs and the one command
    that installs the recommended model (the first such choice in the op's order). '' when there is nothing
    to say: no such choices, one of them installed, or a backend that does not report presets."""
    if not field.needs or presets is None:
        return ""
    if any(presets.get(preset, False) for _choice, preset in field.needs):
        return ""
    names = [choice for choice, _preset in field.needs]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    preset = field.needs[0][1]
    return (
        f"Better {field.label.lower()} quality needs a model ({listed}); none is installed. "
        f"Install one with: {install_py(project_root)} --models {preset}"
    )


def model_hints(
    form: Form | None, presets: Mapping[str, bool] | None, project_root: str | os.PathLike | None = None
) -> dict[str, str]:
    """field name -> hint (``model_hint``) for every field of ``form`` that has one."""
    if form is None:
        return {}
    hints = {f.name: model_hint(f, presets, project_root) for f in form.fields}
    return {name: text for name, text in hints.items() if text}

"""What an artist reads: the connection line (where the backend runs, on what) and stage names in plain words."""

from __future__ import annotations

from collections.abc import Iterable


def device_words(devices: Iterable[str]) -> str:
    """'CPU', 'GPU', 'Apple GPU' (several: joined) from the device names a hello lists (cpu, cuda:0, mps);
    "" when none is known yet."""
    words: list[str] = []
    for d in devices:
        d = str(d).lower()
        if d == "auto":  # not resolved yet (a backend started with --no-model-report): say nothing
            continue
        word = "GPU" if d.startswith("cuda") else "Apple GPU" if d.startswith("mps") else d.upper()
        if word not in words:
            words.append(word)
    return " + ".join(words)


def backend_status(hello: dict, endpoint: str, remote_name: str | None = None) -> tuple[str, str]:
    """(line, tooltip) for a connected backend: "Backend: running on this computer (CPU)"."""
    where = f"remote {remote_name}" if remote_name is not None else "this computer"
    devices = [str(d) for d in hello.get("devices") or []]
    hardware = device_words(devices)
    line = f"Backend: running on {where}" + (f" ({hardware})" if hardware else "")
    tip = (
        f"LayerEdit backend {hello.get('backend_version') or '?'} at {endpoint}; "
        f"devices: {', '.join(devices) or '?'}"
    )
    return line, tip


def no_backend_status(reason: str, remote: bool) -> tuple[str, str]:
    """(line, tooltip) when nothing answers. Locally Connect starts the backend, so say that rather than a
    shell command; the technical reason goes in the tooltip."""
    if remote:
        return f"Backend: not reachable. {reason}", reason
    return "Backend: not running. Press Connect to start it on this computer.", reason


# ----------------------------------------------------------------------------------------------------------
# Stage names: the backend reports internal words (snap, fill, composite, denoise, ...); artists see these.

STAGE_WORDS: dict[str, str] = {
    "snap": "Finding the object",
    "fill": "Filling",
    "composite": "Blending",
    "denoise": "Painting",
    "embedding": "Learning the text",
    "finetune": "Learning the image",
    "generate": "Rendering",
}


def stage_words(stage: str) -> str:
    """The plain words for a backend stage; a stage this table does not know is shown as sent (a newer
    backend's stage, a test op's)."""
    return STAGE_WORDS.get(stage, stage)

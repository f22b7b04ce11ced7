"""SPEC.md's byte-by-byte example is generated from the code; this test keeps it true.

Regenerate after a wire change: LAYEREDIT_UPDATE_SPEC=1 .venv/bin/python -m pytest tests/test_protocol_spec.py
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from protocol import wire

SPEC = Path(__file__).resolve().parents[1] / "protocol" / "SPEC.md"
BEGIN, END = "<!-- example:begin -->", "<!-- example:end -->"


def example_block() -> str:
    key, frames = wire.example()
    digests = [wire.buffer_digest(b) for b in frames[3:]]
    mac = hmac.new(key, frames[2], hashlib.sha256)
    for d in digests:
        mac.update(d)
    lines = [
        "```text",
        f'key (the connection file\'s "key" string, used as its ASCII bytes): {key.decode()}',
        "",
        wire.hexdump(frames),
        "",
        *(f"buffer_digest(buffer {i}) = {d.hex()}" for i, d in enumerate(digests)),
        f"HMAC-SHA256(key, header || digest 0 || digest 1) = {mac.hexdigest()}  (= frame 1)",
        "```",
    ]
    return "\n".join(lines)


def test_spec_example_matches_the_code():
    text = SPEC.read_text("utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    block = "\n" + example_block() + "\n"
    if os.environ.get("LAYEREDIT_UPDATE_SPEC"):
        SPEC.write_text(text[:start] + block + text[end:], "utf-8")
        text = SPEC.read_text("utf-8")
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    assert text[start:end] == block, "SPEC.md's example is stale: regenerate it (see this module's docstring)"


def test_example_signature_verifies_and_decodes():
    key, frames = wire.example()
    msg = wire.decode(frames, key)
    assert (
        msg.type == wire.SUBMIT
        and msg.op == "erase"
        and [b.role for b in msg.buffers] == ["image", "selection"]
    )
    assert (
        frames[1]
        == hmac.new(key, frames[2] + b"".join(wire.buffer_digest(b) for b in frames[3:]), hashlib.sha256)
        .hexdigest()
        .encode()
    )

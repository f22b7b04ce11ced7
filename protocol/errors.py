"""Stable, machine-readable error codes shared by the backend, the clients and the host plugins.

A code never changes meaning once released: hosts branch on it (e.g. offer to install a model on
``model_missing``), so add new codes rather than reusing old ones. The human message that travels
with a code says what to do; the code says what happened.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # Transport and message shape
    MALFORMED = "malformed"  # header is not valid JSON / missing fields / wrong types
    BAD_VERSION = "bad_version"  # protocol major version not supported
    BAD_BUFFER = "bad_buffer"  # buffer frame missing, wrong length, bad descriptor
    TOO_LARGE = "too_large"  # image over the pixel limit or message over the size limit
    UNSUPPORTED_FORMAT = "unsupported_format"  # sample type / channel order not handled
    # Requests
    UNKNOWN_TYPE = "unknown_type"  # message type the server does not know
    UNKNOWN_OP = "unknown_op"
    UNKNOWN_PARAM = "unknown_param"
    BAD_PARAM = "bad_param"  # wrong type, out of range, not a valid choice
    MISSING_INPUT = "missing_input"  # e.g. an op that needs an image got none
    NO_SELECTION = "no_selection"  # op needs a selection and it is empty
    UNKNOWN_JOB = "unknown_job"  # cancel/fetch/status of a job id not known (or not yours)
    NOT_ALLOWED = "not_allowed"  # a remote key revoked since it connected
    FORBIDDEN = "forbidden"  # only the local owner may do this (shutdown from a remote key or off loopback)
    QUEUE_FULL = "queue_full"
    QUOTA_EXCEEDED = "quota_exceeded"  # this client has too many jobs waiting or results stored
    # Running
    MODEL_MISSING = "model_missing"  # weights not installed: message names the install command
    MODEL_BROKEN = "model_broken"  # weights present but corrupt / partial
    OUT_OF_MEMORY = "out_of_memory"
    CANCELLED = "cancelled"
    RESULT_EXPIRED = "result_expired"  # finished result evicted before it was fetched
    INTERNAL = "internal"  # a bug: the message carries the exception text
    # Client side only (never sent by the server)
    TIMEOUT = "timeout"
    BACKEND_GONE = "backend_gone"  # the backend stopped answering (killed, crashed)
    NO_BACKEND = "no_backend"  # no connection file / nothing listening
    BAD_CONNECTION = "bad_connection"  # a connection string/file that cannot work (damaged, half a key)


class ProtocolError(Exception):
    """An error with a stable code. Raised on either side; sent over the wire as an ``error`` message."""

    def __init__(self, code: ErrorCode | str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.details = details or {}

    def __str__(self) -> str:
        return f"[{self.code.value}] {self.message}"

    def to_json(self) -> dict:
        out = {"code": self.code.value, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out

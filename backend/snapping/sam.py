"""SAM (Segment Anything via transformers) prompted from a rough selection: the quality snapper.

SAM wants clicks or a box, not a painted mask (its ``mask_input`` expects its own low-res logits; a binary mask
there works badly), so a selection becomes prompts: its bounding box, positive points at the maxima of its
distance transform (deep inside it), negative points just outside its dilation. Of SAM's three candidates the
one that agrees best with the selection wins; one refinement pass feeds SAM its own low-res logits back. The
image embedding (the expensive part) is cached per image hash, so re-snapping the same layer is cheap.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from typing import Any

import cv2
import numpy as np

from backend.imaging import bbox


def positive_points(seed: np.ndarray, count: int = 3) -> list[tuple[float, float]]:
    """Up to ``count`` well-separated (x, y) points deep inside ``seed`` (maxima of its distance transform)."""
    dist = cv2.distanceTransform(seed.astype(np.uint8), cv2.DIST_L2, 5)
    points: list[tuple[float, float]] = []
    work = dist.copy()
    for _ in range(count):
        y, x = np.unravel_index(int(np.argmax(work)), work.shape)
        if work[y, x] <= 0 or (points and work[y, x] < 0.35 * dist.max()):
            break
        points.append((float(x), float(y)))
        r = max(2, int(dist[y, x]))
        cv2.circle(work, (int(x), int(y)), 2 * r, 0, -1)  # suppress the neighbourhood: next peak elsewhere
    return points


def negative_points(seed: np.ndarray, gap: int, count: int = 4) -> list[tuple[float, float]]:
    """Up to ``count`` (x, y) points outside ``seed`` dilated by ``gap`` px, spread around its box."""
    h, w = seed.shape
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1, 2 * gap + 1))
    grown = cv2.dilate(seed.astype(np.uint8), kernel) > 0
    box = bbox(seed)
    if box is None:
        return []
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    points = []
    outside = np.argwhere(~grown)  # (y, x)
    if outside.size == 0:
        return []
    for ang in np.linspace(0, 2 * np.pi, count, endpoint=False) + np.pi / 4:
        # the outside pixel nearest to the ray's hit just beyond the box, in this direction
        tx = cx + np.cos(ang) * ((box[2] - box[0]) / 2 + gap * 1.5)
        ty = cy + np.sin(ang) * ((box[3] - box[1]) / 2 + gap * 1.5)
        d = (outside[:, 1] - tx) ** 2 + (outside[:, 0] - ty) ** 2
        y, x = outside[int(np.argmin(d))]
        points.append((float(x), float(y)))
    return list(dict.fromkeys(points))


_SHARED: weakref.WeakKeyDictionary[Any, SamSegmenter] = weakref.WeakKeyDictionary()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


class SamSegmenter:
    """Wraps a transformers ``SamModel`` + ``SamProcessor`` (injected: tests pass a tiny random one)."""

    def __init__(self, model: Any, processor: Any, *, device: str | None = None, cache_size: int = 4):
        import torch

        self.model = model.eval()
        self.processor = processor
        self.device = device or str(next(model.parameters()).device)
        self.model.to(self.device)
        self._torch = torch
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self.cache_size = cache_size
        self.embed_calls = 0  # how often the image encoder really ran (the cache's effect is testable)

    @classmethod
    def shared(cls, model: Any, processor: Any) -> SamSegmenter:
        """One segmenter per loaded model object, so the embedding cache survives from one job to the next."""
        seg = _SHARED.get(model)
        if seg is None or seg.processor is not processor:
            seg = cls(model, processor)
            _SHARED[model] = seg
        return seg

    @classmethod
    def from_pretrained(cls, path: str, *, device: str | None = None) -> SamSegmenter:
        """Load a local SAM folder (model + processor files); never downloads."""
        from transformers import SamModel, SamProcessor

        model = SamModel.from_pretrained(path, local_files_only=True)
        processor = SamProcessor.from_pretrained(path, local_files_only=True)
        return cls(model, processor, device=device)

    def _embedding(self, rgb: np.ndarray, pixel_values: Any) -> Any:
        key = hashlib.blake2b(rgb.tobytes(), digest_size=16, key=str(rgb.shape).encode()).hexdigest()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        with self._torch.no_grad():
            emb = self.model.get_image_embeddings(pixel_values.to(self.device, self.model.dtype))
        self.embed_calls += 1
        self._cache[key] = emb
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return emb

    def __call__(self, rgb: np.ndarray, seed: np.ndarray, *, gap: int = 8) -> np.ndarray:
        """Object probability (float32 HxW in [0, 1]) for HxWx3 uint8 ``rgb`` and bool selection ``seed``."""
        box = bbox(seed)
        if box is None:
            return np.zeros(seed.shape, np.float32)
        pos = positive_points(seed)
        neg = negative_points(seed, gap)
        points = [list(p) for p in pos + neg]
        labels = [1] * len(pos) + [0] * len(neg)
        inputs = self.processor(
            images=rgb,
            input_boxes=[[[float(v) for v in box]]],
            input_points=[[points]],
            input_labels=[[labels]],
            return_tensors="pt",
        )
        emb = self._embedding(rgb, inputs["pixel_values"])
        prompt = {k: inputs[k].to(self.device) for k in ("input_points", "input_labels", "input_boxes")}
        prompt["input_points"] = prompt["input_points"].to(self.model.dtype)
        prompt["input_boxes"] = prompt["input_boxes"].to(self.model.dtype)
        with self._torch.no_grad():
            out = self.model(image_embeddings=emb, multimask_output=True, **prompt)
        probs = self._post(out.pred_masks, inputs)  # (3, H, W)
        scores = [_iou(p > 0.5, seed) for p in probs]
        best = int(np.argmax(scores))
        with self._torch.no_grad():  # one refinement with SAM's own low-res logits
            logits = out.pred_masks[:, 0, best : best + 1]
            out2 = self.model(image_embeddings=emb, input_masks=logits, multimask_output=False, **prompt)
        refined = self._post(out2.pred_masks, inputs)[0]
        # keep the refinement only if it still agrees with the selection as well as the pick did
        return refined if _iou(refined > 0.5, seed) >= scores[best] - 0.05 else probs[best]

    def _post(self, pred_masks: Any, inputs: Any) -> np.ndarray:
        masks = self.processor.post_process_masks(
            pred_masks.float().cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"], binarize=False
        )[0][0]
        return self._torch.sigmoid(masks).numpy().astype(np.float32)

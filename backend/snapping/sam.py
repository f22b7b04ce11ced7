"""Segment-anything models prompted from a rough selection: the quality snapper for users with weights.

Three transformers model families share one prompting scheme (``SamSegmenter``):
- ``sam``: the original SAM (``SamModel`` + ``SamProcessor``; preset ``sam`` = ViT-B);
- ``sam-hq``: SAM-HQ (``SamHQModel`` + ``SamHQProcessor``): SAM's encoder plus a high-quality output token fed
  with early ViT features, trained for fine boundaries and thin structures;
- ``sam2``: SAM 2 / 2.1 (``Sam2Model``): a hierarchical (Hiera) encoder whose multi-scale features feed the mask
  decoder. transformers' ``Sam2Processor`` needs torchvision, which this backend does not install, so
  ``Sam2Prompts`` below does the same preprocessing (resize to the model's square input, ImageNet mean/std,
  coordinates scaled per axis, bilinear upsampling of the logits) from the checkpoint's own preprocessor config.

SAM wants clicks or a box, not a painted mask (its ``mask_input`` expects its own low-res logits; a binary mask
there works badly), so a selection becomes prompts: its bounding box, positive points at the maxima of its
distance transform (deep inside it), negative points just outside its dilation. Of the model's candidates the
one that agrees best with the selection wins; one refinement pass feeds the model its own low-res logits back.
The image embedding (the expensive part) is cached per image hash, so re-snapping the same layer is cheap.
``segment`` also returns what decided (each candidate's agreement and predicted IoU, the refinement, the cache),
which the snap's meta carries so that a bad snap can be diagnosed from a user's log.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from backend.imaging import bbox

# transformers ``model_type`` -> our family name (the one the meta and the docs use)
FAMILIES = {"sam": "sam", "sam_hq": "sam-hq", "sam2": "sam2"}


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


def model_family(model: Any) -> str:
    """``sam``, ``sam-hq`` or ``sam2`` from the model's config; ValueError for anything else."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(
            f"unsupported segment-anything model type {model_type!r}; supported: {', '.join(FAMILIES)}"
        )
    return FAMILIES[model_type]


@dataclass
class Sam2Prompts:
    """SAM 2's preprocessing without torchvision: what ``Sam2Processor`` does for one image and one prompt.

    The image is resized (PIL bilinear, antialiased like torchvision's) to the model's square input, rescaled and
    normalised; point and box coordinates are scaled per axis to that square; the decoder's low-res logits are
    upsampled bilinearly straight to the original size. Values come from the checkpoint's preprocessor config.
    """

    height: int = 1024
    width: int = 1024
    rescale_factor: float = 1 / 255
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Sam2Prompts:
        """Read ``preprocessor_config.json`` (or the image-processor part of ``processor_config.json``)."""
        folder = Path(path)
        cfg: dict[str, Any] = {}
        if (folder / "preprocessor_config.json").is_file():
            cfg = json.loads((folder / "preprocessor_config.json").read_text())
        elif (folder / "processor_config.json").is_file():
            cfg = json.loads((folder / "processor_config.json").read_text()).get("image_processor", {})
        size = cfg.get("size") or {}
        return cls(
            height=int(size.get("height", cls.height)),
            width=int(size.get("width", cls.width)),
            rescale_factor=float(cfg.get("rescale_factor", cls.rescale_factor)),
            image_mean=tuple(cfg.get("image_mean", cls.image_mean)),
            image_std=tuple(cfg.get("image_std", cls.image_std)),
        )

    def pixel_values(self, rgb: np.ndarray) -> Any:
        """(1, 3, height, width) float32 tensor for HxWx3 uint8 ``rgb``."""
        import torch
        from PIL import Image

        resized = np.asarray(
            Image.fromarray(rgb).resize((self.width, self.height), Image.Resampling.BILINEAR)
        )
        values = resized.astype(np.float32) * self.rescale_factor
        values = (values - np.float32(self.image_mean)) / np.float32(self.image_std)
        return torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1)))[None]

    def scale(self, xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """(..., 2) pixel coordinates in an image of ``shape`` (h, w) -> the model's input square."""
        out = np.asarray(xy, np.float32).copy()
        out[..., 0] *= self.width / shape[1]
        out[..., 1] *= self.height / shape[0]
        return out


_SHARED: weakref.WeakKeyDictionary[Any, SamSegmenter] = weakref.WeakKeyDictionary()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


class SamSegmenter:
    """Wraps a loaded model + its processor (injected: tests pass tiny random ones). ``name`` is what the meta
    calls it (the preset name when ModelManager loaded it); the family comes from the model's config."""

    def __init__(
        self, model: Any, processor: Any, *, device: str | None = None, cache_size: int = 4, name: str = ""
    ):
        import torch

        self.family = model_family(model)
        self.model = model.eval()
        self.processor = processor
        self.name = name or self.family
        self.device = device or str(next(model.parameters()).device)
        self.model.to(self.device)
        self._torch = torch
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.cache_size = cache_size
        self.embed_calls = 0  # how often the image encoder really ran (the cache's effect is testable)

    @classmethod
    def shared(cls, model: Any, processor: Any, *, name: str = "") -> SamSegmenter:
        """One segmenter per loaded model object, so the embedding cache survives from one job to the next."""
        seg = _SHARED.get(model)
        if seg is None or seg.processor is not processor:
            seg = cls(model, processor, name=name)
            _SHARED[model] = seg
        if name:
            seg.name = name
        return seg

    @classmethod
    def from_pretrained(cls, path: str, *, device: str | None = None) -> SamSegmenter:
        """Load a local model folder of any supported family (never downloads)."""
        model, processor = load_local(Path(path))
        return cls(model, processor, device=device)

    # ---- the model's view of one image and one prompt ------------------------------------------------------
    def _prepare(
        self, rgb: np.ndarray, box: tuple[int, int, int, int], points: list[list[float]], labels: list[int]
    ) -> tuple[Any, dict[str, Any], Any]:
        """(pixel_values, prompt tensors on the device, post): post(pred_masks of shape (1, 1, N, h, w)) is the
        (N, H, W) logits at the image's size."""
        torch = self._torch
        dtype = self.model.dtype
        if self.family == "sam2":
            prep: Sam2Prompts = self.processor
            shape = rgb.shape[:2]
            prompt = {
                "input_points": torch.from_numpy(prep.scale(np.array(points, np.float32), shape))[None, None],
                "input_labels": torch.tensor(labels, dtype=torch.int64)[None, None],
                "input_boxes": torch.from_numpy(
                    prep.scale(np.array(box, np.float32).reshape(2, 2), shape)
                ).reshape(1, 1, 4),
            }

            def post(pred: Any) -> np.ndarray:
                low = pred[:, 0].float().cpu()  # (1, candidates, h, w)
                up = torch.nn.functional.interpolate(low, shape, mode="bilinear", align_corners=False)
                return up[0].numpy()

            pixel_values = prep.pixel_values(rgb)
        else:
            inputs = self.processor(
                images=rgb,
                input_boxes=[[[float(v) for v in box]]],
                input_points=[[points]],
                input_labels=[[labels]],
                return_tensors="pt",
            )
            prompt = {k: inputs[k] for k in ("input_points", "input_labels", "input_boxes")}

            def post(pred: Any) -> np.ndarray:
                masks = self.processor.post_process_masks(
                    pred.float().cpu(),
                    inputs["original_sizes"],
                    inputs["reshaped_input_sizes"],
                    binarize=False,
                )
                return masks[0][0].numpy()

            pixel_values = inputs["pixel_values"]
        prompt = {k: v.to(self.device) for k, v in prompt.items()}
        prompt["input_points"] = prompt["input_points"].to(dtype)
        prompt["input_boxes"] = prompt["input_boxes"].to(dtype)
        return pixel_values, prompt, post

    def _embedding(self, rgb: np.ndarray, pixel_values: Any) -> tuple[dict[str, Any], bool]:
        """The image's embedding as forward() keyword arguments, and whether it came from the cache."""
        key = hashlib.blake2b(rgb.tobytes(), digest_size=16, key=str(rgb.shape).encode()).hexdigest()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key], True
        pixel_values = pixel_values.to(self.device, self.model.dtype)
        with self._torch.no_grad():
            if self.family == "sam-hq":
                # its HQ token also reads the encoder's early global-attention features
                out = self.model.vision_encoder(pixel_values=pixel_values)
                kwargs = {
                    "image_embeddings": out.last_hidden_state,
                    "intermediate_embeddings": out.intermediate_embeddings,
                }
            else:
                kwargs = {"image_embeddings": self.model.get_image_embeddings(pixel_values)}
        self.embed_calls += 1
        self._cache[key] = kwargs
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return kwargs, False

    # ---- prompting --------------------------------------------------------------------------------------------
    def segment(
        self, rgb: np.ndarray, seed: np.ndarray, *, gap: int = 8
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """(object probability float32 HxW in [0, 1], what decided it) for HxWx3 uint8 ``rgb``, bool ``seed``."""
        info: dict[str, Any] = {"name": self.name, "family": self.family}
        box = bbox(seed)
        if box is None:
            return np.zeros(seed.shape, np.float32), {**info, "empty_selection": True}
        pos = positive_points(seed)
        neg = negative_points(seed, gap)
        points = [list(p) for p in pos + neg]
        labels = [1] * len(pos) + [0] * len(neg)
        pixel_values, prompt, post = self._prepare(rgb, box, points, labels)
        emb, cached = self._embedding(rgb, pixel_values)
        with self._torch.no_grad():
            out = self.model(**emb, multimask_output=True, **prompt)
        logits = post(out.pred_masks)  # (candidates, H, W)
        probs = 1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))
        scores = [_iou(p > 0.5, seed) for p in probs]
        best = int(np.argmax(scores))
        predicted = out.iou_scores[0, 0].float().cpu().tolist()
        with self._torch.no_grad():  # one refinement with the model's own low-res logits
            low_res = out.pred_masks[:, 0, best : best + 1]
            out2 = self.model(**emb, input_masks=low_res, multimask_output=False, **prompt)
        refined_logits = post(out2.pred_masks)[0]
        refined = (1.0 / (1.0 + np.exp(-np.clip(refined_logits, -30, 30)))).astype(np.float32)
        refined_score = _iou(refined > 0.5, seed)
        # keep the refinement only if it still agrees with the selection as well as the pick did
        keep = refined_score >= scores[best] - 0.05
        info.update(
            prompt={"box": [int(v) for v in box], "positive": len(pos), "negative": len(neg)},
            candidates=[
                {"agreement": round(s, 3), "predicted_iou": round(float(q), 3)}
                for s, q in zip(scores, predicted, strict=False)
            ],
            picked=best,
            refined=bool(keep),
            refined_agreement=round(refined_score, 3),
            embedding="cached" if cached else "computed",
        )
        object_score = getattr(out, "object_score_logits", None)
        if (
            object_score is not None
        ):  # SAM 2: its own belief that there is an object at all (logit; < 0: none)
            info["object_score"] = round(float(object_score.flatten()[0]), 3)
        return (refined if keep else probs[best].astype(np.float32)), info

    def __call__(self, rgb: np.ndarray, seed: np.ndarray, *, gap: int = 8) -> np.ndarray:
        """Object probability only (float32 HxW in [0, 1]); ``segment`` also says what decided it."""
        return self.segment(rgb, seed, gap=gap)[0]


def load_local(folder: Path) -> tuple[Any, Any]:
    """(model, processor) from a local transformers folder of a supported family, chosen by its config.json's
    ``model_type``; offline only. Raises FileNotFoundError / ValueError for folders that are not one."""
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{folder} has no config.json")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type == "sam":
        from transformers import SamModel, SamProcessor

        return (
            SamModel.from_pretrained(str(folder), local_files_only=True),
            SamProcessor.from_pretrained(str(folder), local_files_only=True),
        )
    if model_type == "sam_hq":
        from transformers import SamHQModel, SamHQProcessor

        return (
            SamHQModel.from_pretrained(str(folder), local_files_only=True),
            SamHQProcessor.from_pretrained(str(folder), local_files_only=True),
        )
    if model_type == "sam2":
        from transformers import Sam2Model

        return Sam2Model.from_pretrained(str(folder), local_files_only=True), Sam2Prompts.from_pretrained(
            folder
        )
    hint = (
        " EdgeTAM is not supported (its image encoder needs timm and torchvision); use sam2.1-tiny on a CPU."
        if model_type == "edgetam"
        else ""
    )
    raise ValueError(
        f"{folder} holds a {model_type!r} model; snapping supports {', '.join(repr(t) for t in FAMILIES)}.{hint}"
    )

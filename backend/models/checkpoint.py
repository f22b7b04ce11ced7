"""Single-file checkpoints (A1111 / ComfyUI .safetensors or .ckpt): what architecture is inside.

from_single_file needs the diffusers configs of the matching architecture; offline they must come from a
local folder. Sniffing the keys (from the safetensors header, without reading the weights) picks which.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from protocol.errors import ErrorCode

from .locate import model_error

# architecture -> (label, preset with its configs only, preset with full weights of the same shape): what a
# single-file checkpoint can be (SD 2.x checkpoints are refused by ``sniff_architecture``)
ARCHITECTURES = {
    "sd15": ("Stable Diffusion 1.x", "sd15-config", "sd15"),
    "sd15-inpaint": ("Stable Diffusion 1.x inpainting", "sd15-inpaint-config", "sd15-inpaint"),
    "sdxl": ("SDXL", "sdxl-config", None),
    "sdxl-inpaint": ("SDXL inpainting", "sdxl-inpaint-config", "sdxl-inpaint"),
}
# what a diffusers folder can be, besides those: SD 2.x folders load (text-to-image, inpainting)
FOLDER_ARCHITECTURES = {
    **{arch: label for arch, (label, _, _) in ARCHITECTURES.items()},
    "sd2": "Stable Diffusion 2.x",
    "sd2-inpaint": "Stable Diffusion 2.x inpainting",
}
FAMILIES = ("sd15", "sd2", "sdxl")  # an architecture's family is its key without "-inpaint"
_UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
_SD2_TEXT_DIM = (
    1024  # the UNet's cross-attention width: 768 in SD 1.x (CLIP ViT-L), 1024 in SD 2.x (OpenCLIP ViT-H)
)


def family(arch: str) -> str:
    """ "sd15", "sd2" or "sdxl": what decides which LoRAs, text encoders and latent space a model takes."""
    return arch.removesuffix("-inpaint")


def folder_architecture(folder: Path) -> str:
    """One of FOLDER_ARCHITECTURES' keys for a diffusers pipeline folder, from its JSON files only (no weights
    are read). A folder without the files it would need reads as SD 1.x (loading it says more)."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        index = {}
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
    except (OSError, ValueError):
        unet = {}
    return _classify("text_encoder_2" in index, unet)


def pipeline_architecture(pipe: Any) -> str:
    """The same answer for a loaded diffusers pipeline, by the same rule, for code that is handed a pipeline
    rather than a model reference (a pipeline's latent preview); ops ask ``ModelManager.architecture``."""
    config = getattr(getattr(pipe, "unet", None), "config", None) or {}
    return _classify(getattr(pipe, "text_encoder_2", None) is not None, dict(config))


def _classify(second_text_encoder: bool, unet: dict) -> str:
    """SDXL has a second text encoder, inpainting UNets take 9 input channels (image, mask and masked image
    latents), SD 2.x cross-attends to 1024-wide text states."""
    if second_text_encoder:
        base = "sdxl"
    elif unet.get("cross_attention_dim") == _SD2_TEXT_DIM:
        base = "sd2"
    else:
        base = "sd15"
    return f"{base}-inpaint" if unet.get("in_channels") == 9 else base


def read_safetensors_header(path: Path) -> dict:
    """The JSON header (names, dtypes, shapes) of a .safetensors file; MODEL_BROKEN if it is not one."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length <= 0 or length > 100 * 1024 * 1024:
                raise ValueError(f"header length {length}")
            header = json.loads(f.read(length))
        size = path.stat().st_size
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + length + end > size:
            raise ValueError(f"file is {size} bytes, its header needs {8 + length + end}")
        return header
    except (OSError, ValueError, struct.error, KeyError, TypeError) as exc:
        raise model_error(
            ErrorCode.MODEL_BROKEN,
            f"{path} is damaged or incomplete ({exc}); download or copy it again.",
            model=str(path),
        ) from exc


def checkpoint_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor names -> shapes, reading as little as possible."""
    if path.suffix == ".safetensors":
        header = read_safetensors_header(path)
        return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise model_error(
            ErrorCode.MODEL_BROKEN,
            f"{path} could not be read as a checkpoint ({type(exc).__name__}: {exc}); "
            "it may be damaged, or a pickle with code in it (use its .safetensors version).",
            model=str(path),
        ) from exc
    state = data.get("state_dict", data) if isinstance(data, dict) else {}
    return {k: list(v.shape) for k, v in state.items() if hasattr(v, "shape")}


def sniff_architecture(path: Path) -> str:
    """One of ARCHITECTURES' keys, or BAD_PARAM for checkpoints this backend does not load."""
    shapes = checkpoint_shapes(path)
    unet_in = shapes.get(_UNET_IN)
    if unet_in is None:
        raise model_error(
            ErrorCode.BAD_PARAM,
            f"{path.name} is not a Stable Diffusion checkpoint (no UNet weights in it; a LoRA, VAE or "
            "embedding file?). Choose a full SD 1.5 or SDXL checkpoint.",
            param="model",
        )
    inpaint = len(unet_in) == 4 and unet_in[1] == 9
    if any(k.startswith("conditioner.embedders.1.") for k in shapes):
        return "sdxl-inpaint" if inpaint else "sdxl"
    if any(k.startswith("cond_stage_model.model.") for k in shapes):
        raise model_error(
            ErrorCode.BAD_PARAM,
            f"{path.name} looks like a Stable Diffusion 2.x checkpoint, which this backend does not load; "
            "use an SD 1.5 or SDXL checkpoint.",
            param="model",
        )
    return "sd15-inpaint" if inpaint else "sd15"

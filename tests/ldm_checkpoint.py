"""Write a diffusers SD pipeline as one original-layout (A1111 / ComfyUI style) .safetensors checkpoint.

Test support only: it lets the single-file loading path be tested offline with a tiny checkpoint whose weights
are known. The key layout follows the original latent-diffusion naming (``model.diffusion_model.input_blocks...``,
``first_stage_model.encoder.down...``, ``cond_stage_model.transformer.text_model...``).
"""

from __future__ import annotations

from pathlib import Path

import torch

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(rest: str, table: dict[str, str]) -> str:
    for new, old in table.items():
        if rest == new or rest.startswith(new + "."):
            return old + rest[len(new) :]
    return rest


def unet_to_ldm(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel keys -> ``model.diffusion_model.*``."""
    lpb = layers_per_block
    out: dict[str, torch.Tensor] = {}
    n_up = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("up_blocks."))
    for key, value in state.items():
        p = key.split(".")
        if key.startswith("time_embedding.linear_1"):
            new = "time_embed.0" + key[len("time_embedding.linear_1") :]
        elif key.startswith("time_embedding.linear_2"):
            new = "time_embed.2" + key[len("time_embedding.linear_2") :]
        elif key.startswith("conv_in."):
            new = "input_blocks.0.0." + p[-1]
        elif key.startswith("conv_norm_out."):
            new = "out.0." + p[-1]
        elif key.startswith("conv_out."):
            new = "out.2." + p[-1]
        elif p[0] == "down_blocks":
            level, kind, j, rest = int(p[1]), p[2], int(p[3]), ".".join(p[4:])
            if kind == "downsamplers":
                new = f"input_blocks.{1 + level * (lpb + 1) + lpb}.0.op.{'.'.join(p[5:])}"
            else:
                idx = 1 + level * (lpb + 1) + j
                sub = 0 if kind == "resnets" else 1
                new = f"input_blocks.{idx}.{sub}.{_rename(rest, _RESNET) if kind == 'resnets' else rest}"
        elif p[0] == "mid_block":
            kind, j, rest = p[1], int(p[2]), ".".join(p[3:])
            if kind == "resnets":
                new = f"middle_block.{0 if j == 0 else 2}.{_rename(rest, _RESNET)}"
            else:
                new = f"middle_block.1.{rest}"
        elif p[0] == "up_blocks":
            level, kind, j = int(p[1]), p[2], int(p[3])
            if kind == "upsamplers":
                idx = level * (lpb + 1) + lpb
                has_attn = any(k.startswith(f"up_blocks.{level}.attentions.") for k in state)
                new = f"output_blocks.{idx}.{2 if has_attn else 1}.conv.{p[-1]}"
            else:
                idx = level * (lpb + 1) + j
                rest = ".".join(p[4:])
                sub = 0 if kind == "resnets" else 1
                new = f"output_blocks.{idx}.{sub}.{_rename(rest, _RESNET) if kind == 'resnets' else rest}"
            assert level < n_up
        else:
            raise KeyError(key)
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> ``first_stage_model.*`` (attention as 1x1 convs, as LDM stores them)."""
    out: dict[str, torch.Tensor] = {}
    n_up = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("decoder.up_blocks."))
    for key, value in state.items():
        p = key.split(".")
        side = p[0]
        if side in ("quant_conv", "post_quant_conv"):
            new = key
        elif p[1] in ("conv_in", "conv_out", "conv_norm_out"):
            new = f"{side}.{'norm_out' if p[1] == 'conv_norm_out' else p[1]}.{p[-1]}"
        elif p[1] == "mid_block":
            if p[2] == "resnets":
                new = f"{side}.mid.block_{int(p[3]) + 1}.{_rename('.'.join(p[4:]), _VAE_RESNET)}"
            else:
                new = f"{side}.mid.attn_1.{_rename('.'.join(p[4:]), _VAE_ATTN)}"
                if value.ndim == 2:
                    value = value[:, :, None, None]
        elif p[1] == "down_blocks":
            i = int(p[2])
            if p[3] == "downsamplers":
                new = f"{side}.down.{i}.downsample.conv.{p[-1]}"
            else:
                new = f"{side}.down.{i}.block.{p[4]}.{_rename('.'.join(p[5:]), _VAE_RESNET)}"
        elif p[1] == "up_blocks":
            i = n_up - 1 - int(p[2])
            if p[3] == "upsamplers":
                new = f"{side}.up.{i}.upsample.conv.{p[-1]}"
            else:
                new = f"{side}.up.{i}.block.{p[4]}.{_rename('.'.join(p[5:]), _VAE_RESNET)}"
        else:
            raise KeyError(key)
        out["first_stage_model." + new] = value
    return out


def save_ldm_checkpoint(pipe, path: Path) -> Path:
    """One .safetensors with the UNet, VAE and CLIP text encoder of ``pipe`` in the original layout."""
    from safetensors.torch import save_file

    state = unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config.layers_per_block)
    state.update(vae_to_ldm(pipe.vae.state_dict()))
    for key, value in pipe.text_encoder.state_dict().items():
        # original checkpoints nest CLIP under text_model. (transformers >= 5.6 flattens it in memory)
        name = key if key.startswith("text_model.") else "text_model." + key
        state["cond_stage_model.transformer." + name] = value
    if "cond_stage_model.transformer.text_model.embeddings.position_ids" not in state:
        n = pipe.text_encoder.config.max_position_embeddings
        state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(n)[None]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return Path(path)

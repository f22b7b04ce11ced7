"""Keep the shared base model bit-identical across an Imagic job, whatever happens inside it.

The UNet, VAE and text encoder come from the ModelManager and serve every later job (Erase & Replace too), so
Imagic may only change them temporarily. ``ModelGuard`` records what a job touches (requires_grad flags,
train/eval modes, gradient checkpointing, and for a full fine-tune the weights themselves) and puts it all back in
its ``__exit__``; LoRA adapters are removed there too. The exit runs on success, cancel, error and out-of-memory.
"""

from __future__ import annotations

import torch
from torch import nn

ADAPTER = "imagic"
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def lora_config(rank: int, targets: tuple[str, ...] = LORA_TARGETS) -> dict:
    """JSON-able description of the adapter (stored with cached weights so they can be applied again)."""
    return {"r": int(rank), "lora_alpha": int(rank), "target_modules": list(targets)}


def add_lora(
    unet: nn.Module, config: dict, weights: dict[str, torch.Tensor] | None = None, *, seed: int = 0
) -> list[nn.Parameter]:
    """Inject the adapter into ``unet`` (optionally loading ``weights``); returns the adapter's parameters.

    peft initialises LoRA A from the global RNG: it is seeded here (and the global state put back) so the same
    tuning settings give the same adapter, and a job never shifts other code's random stream."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import set_peft_model_state_dict

    cfg = LoraConfig(init_lora_weights="gaussian", **config)
    device = next(unet.parameters()).device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(int(seed))
        inject_adapter_in_model(cfg, unet, adapter_name=ADAPTER)
    if weights is not None:
        result = set_peft_model_state_dict(unet, weights, adapter_name=ADAPTER)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(f"cached LoRA weights do not fit this UNet ({len(unexpected)} unexpected keys)")
    return [p for n, p in unet.named_parameters() if f".{ADAPTER}." in n and "lora_" in n]


def lora_weights(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors as detached CPU copies (what the cache stores)."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def remove_lora(model: nn.Module) -> int:
    """Replace every peft-wrapped layer by its original base layer; returns how many were unwrapped."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, module in sorted(wrapped, key=lambda nm: -nm[0].count(".")):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    return len(wrapped)


class ModelGuard:
    """Context manager around one job. ``backup_weights()`` (full fine-tune) keeps a CPU copy of the UNet's
    tensors and dtype, restored bit for bit on exit."""

    def __init__(self, unet: nn.Module, *others: nn.Module):
        self.unet = unet
        self.models = (unet, *others)
        self._grad: list[dict[str, bool]] = []
        self._training: list[dict[str, bool]] = []
        self._had_peft_config = hasattr(unet, "peft_config")
        self._checkpointing = bool(getattr(unet, "is_gradient_checkpointing", False))
        self._backup: dict[str, torch.Tensor] | None = None
        self._dtype: torch.dtype | None = None

    def __enter__(self) -> ModelGuard:
        for m in self.models:
            self._grad.append({n: p.requires_grad for n, p in m.named_parameters()})
            self._training.append({n: mod.training for n, mod in m.named_modules()})
        return self

    def backup_weights(self) -> None:
        """Copy the UNet's parameters and buffers to CPU before a full fine-tune changes them in place."""
        self._dtype = next(self.unet.parameters()).dtype
        self._backup = {k: v.detach().to("cpu", copy=True) for k, v in self.unet.state_dict().items()}

    def __exit__(self, *exc) -> None:
        remove_lora(self.unet)
        if not self._had_peft_config and hasattr(self.unet, "peft_config"):
            del self.unet.peft_config
        if self._backup is not None:
            self._restore_weights()
        if hasattr(self.unet, "enable_gradient_checkpointing"):
            if self._checkpointing:
                self.unet.enable_gradient_checkpointing()
            else:
                self.unet.disable_gradient_checkpointing()
        for m, grads, modes in zip(self.models, self._grad, self._training, strict=True):
            for n, p in m.named_parameters():
                p.grad = None
                p.requires_grad_(grads.get(n, p.requires_grad))
            for n, mod in m.named_modules():
                mod.training = modes.get(n, mod.training)

    def _restore_weights(self) -> None:
        assert self._backup is not None and self._dtype is not None
        self.unet.to(dtype=self._dtype)
        with torch.no_grad():
            for k, v in self.unet.state_dict(keep_vars=True).items():
                v.copy_(self._backup[k].to(v.device))
        self._backup = None

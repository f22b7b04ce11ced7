"""Keep the shared base model bit-identical across an Imagic job, whatever happens inside it.

The UNet, VAE and text encoder come from the ModelManager and serve every later job (Erase & Replace too), so
Imagic may only change them temporarily. ``ModelGuard`` records what a job touches (requires_grad flags,
train/eval modes, gradient checkpointing, and for a full fine-tune the weights themselves) and puts it all back in
its ``__exit__``; LoRA adapters are removed there too. The exit runs on success, cancel, error and out-of-memory.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import struct
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger("layeredit.imagic")

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
    """Context manager around one job. ``backup_weights()`` (full fine-tune) records the UNet's tensors and
    dtype, restored bit for bit on exit.

    The record is a safetensors file written straight from the live tensors (``BaseSnapshot``), not a second copy
    in RAM: a full SD-1.5 fine-tune already holds weights, gradients and Adam moments (~14 GB on a CPU), and an
    in-memory backup added 3.4 GB on top of the community pipeline's peak. The file is written once per loaded
    model and reused by later jobs when the tensors are unchanged (same objects and version counters, and equal
    to the file when read back). Only when it cannot be written (read-only or full disk) does the guard fall
    back to a RAM copy."""

    def __init__(self, unet: nn.Module, *others: nn.Module, spill_dir: str | os.PathLike | None = None):
        self.unet = unet
        self.models = (unet, *others)
        self.spill_dir = spill_dir
        self._grad: list[dict[str, bool]] = []
        self._training: list[dict[str, bool]] = []
        self._had_peft_config = hasattr(unet, "peft_config")
        self._checkpointing = bool(getattr(unet, "is_gradient_checkpointing", False))
        self._backup: dict[str, torch.Tensor] | None = None
        self._snapshot: BaseSnapshot | None = None
        self._dtype: torch.dtype | None = None
        self._hooks: list = []  # forward-hook handles of attached adapters

    def __enter__(self) -> ModelGuard:
        for m in self.models:
            self._grad.append({n: p.requires_grad for n, p in m.named_parameters()})
            self._training.append({n: mod.training for n, mod in m.named_modules()})
        return self

    @property
    def snapshot(self) -> BaseSnapshot | None:
        """The on-disk record of the base UNet (None before ``backup_weights`` or with the RAM fallback)."""
        return self._snapshot

    def backup_weights(self) -> str:
        """Record the UNet's parameters and buffers before a full fine-tune changes them in place; returns where
        (``"disk"``, or ``"ram"`` when the spill file could not be written)."""
        if self._snapshot is not None or self._backup is not None:
            return "disk" if self._snapshot is not None else "ram"
        self._dtype = next(self.unet.parameters()).dtype
        try:
            self._snapshot = BaseSnapshot.of(self.unet, self.spill_dir)
            return "disk"
        except OSError as exc:
            log.warning("imagic: cannot write the base-model record (%s); keeping it in RAM instead", exc)
            self._backup = {k: v.detach().to("cpu", copy=True) for k, v in self.unet.state_dict().items()}
            return "ram"

    def attach_lora(self, config: dict, weights: dict[str, torch.Tensor]) -> int:
        """Sample with the adapter as forward hooks: each targeted layer's output gets ``(alpha / r) * B(A x)``
        added. The modules themselves are not touched, so removing the hooks on exit restores them exactly, with
        no copy of any weight; and no peft wrapper is injected (peft's injection was about half of a cache hit on
        the tiny test model, profiled). Folding the adapter into new weights was tried first: it held 374 MB of
        merged weights on SD-1.5 while sampling (+0.35 GiB peak RSS measured) for no per-step gain (a per-step
        probe showed no LoRA cost), and an LCM-LoRA covers most of the UNet. Returns how many layers it adapts."""
        scale = float(config.get("lora_alpha", config["r"])) / float(config["r"])
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in weights.items():
            for part in ("lora_A", "lora_B"):
                marker = f".{part}."
                if marker in key:
                    pairs.setdefault(key.split(marker)[0], {})[part] = value
        return self.attach_deltas((p, ab["lora_A"], ab["lora_B"], scale) for p, ab in pairs.items())

    def attach_deltas(self, deltas) -> int:
        """Hook low-rank deltas ``(module path, A, B, scale)`` onto the UNet's Linear and Conv2d layers (see
        ``attach_lora``); paths this UNet lacks and shapes that do not fit are skipped. Returns how many."""
        n = 0
        for path, a, b, scale in deltas:
            try:
                module = self.unet.get_submodule(path)
            except AttributeError:
                continue
            w = getattr(module, "weight", None)
            conv = isinstance(module, nn.Conv2d)
            if w is None or not (conv or isinstance(module, nn.Linear)) or (conv and module.groups != 1):
                continue
            a = a.detach().to(w.device, w.dtype)
            b = b.detach().to(w.device, w.dtype)
            if conv:
                a = (
                    a.reshape(a.shape[0], w.shape[1], *w.shape[2:])
                    if a.numel() == a.shape[0] * w[0].numel()
                    else a
                )
                b = b.reshape(b.shape[0], b.shape[1], 1, 1)
                if a.shape[1:] != w.shape[1:] or b.shape[0] != w.shape[0]:
                    continue
            elif a.dim() != 2 or a.shape[1] != w.shape[1] or b.shape[0] != w.shape[0]:
                continue
            self._hooks.append(module.register_forward_hook(_low_rank_hook(a, b, float(scale), conv)))
            n += 1
        return n

    def _detach_hooks(self) -> None:
        for handle in reversed(self._hooks):
            handle.remove()
        self._hooks.clear()

    def __exit__(self, *exc) -> None:
        self._detach_hooks()
        remove_lora(self.unet)
        if not self._had_peft_config and hasattr(self.unet, "peft_config"):
            del self.unet.peft_config
        if self._snapshot is not None or self._backup is not None:
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
        assert self._dtype is not None
        self.unet.to(dtype=self._dtype)
        if self._snapshot is not None:
            self._snapshot.restore(self.unet)
        else:
            assert self._backup is not None
            with torch.no_grad():
                for k, v in self.unet.state_dict(keep_vars=True).items():
                    v.copy_(self._backup[k].to(v.device))
        self._backup = self._snapshot = None


def _low_rank_hook(a: torch.Tensor, b: torch.Tensor, scale: float, conv: bool):
    """A forward hook adding ``scale * B(A x)`` to a Linear's or a Conv2d's output."""
    import torch.nn.functional as F

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        if conv:
            h = F.conv2d(x, a, None, module.stride, module.padding, module.dilation)
            return output + scale * F.conv2d(h, b)
        return output + scale * F.linear(F.linear(x, a), b)

    return hook


class BaseSnapshot:
    """The base UNet's state dict in a safetensors file, written tensor by tensor from the live weights.

    ``of(unet)`` reuses this process's file for the same module while every tensor is the same object at the
    same version counter as when the file was written or last restored (torch bumps ``_version`` on every
    in-place change, so an edit by anyone in between is seen and the file rewritten). Files are removed when
    the process exits; files of processes that are gone are removed by the next writer."""

    _live: dict[int, BaseSnapshot] = {}
    _lock = threading.Lock()

    def __init__(self, path: Path, unet: nn.Module):
        self.path = path
        self._module = weakref.ref(unet)
        self._stamp = _stamp(unet)

    @classmethod
    def of(cls, unet: nn.Module, directory: str | os.PathLike | None = None) -> BaseSnapshot:
        with cls._lock:
            known = cls._live.get(id(unet))
            if known is not None and known._module() is unet and known.path.exists():
                if known._stamp == _stamp(unet) and known.matches(unet):
                    return known
            folder = Path(directory) if directory is not None else Path(tempfile.gettempdir())
            folder = folder / "base-snapshots"
            folder.mkdir(parents=True, exist_ok=True)
            _remove_orphans(folder)
            path = folder / f"unet-{os.getpid()}-{id(unet):x}.safetensors"
            write_safetensors(path, unet.state_dict(), {"format": "layeredit-base-1"})
            if known is not None and known.path != path:
                known.path.unlink(missing_ok=True)
            snap = cls(path, unet)
            cls._live[id(unet)] = snap
            if len(cls._live) == 1:
                atexit.register(cls._remove_all)
            return snap

    def tensors(self):
        """Iterate (name, tensor) from the file, one tensor in memory at a time (plain reads: see
        ``read_safetensors``)."""
        _, items = read_safetensors(self.path)
        yield from items

    def matches(self, unet: nn.Module) -> bool:
        """Whether the file holds exactly the UNet's current values (read back one tensor at a time)."""
        live = unet.state_dict()
        seen = 0
        for k, v in self.tensors():
            if k not in live or not torch.equal(live[k], v.to(live[k].device)):
                return False
            seen += 1
        return seen == len(live)

    def restore(self, unet: nn.Module) -> None:
        """Copy the recorded values back, bit for bit (the caller has put the dtype back first)."""
        live = unet.state_dict(keep_vars=True)
        seen = 0
        with torch.no_grad():
            for k, v in self.tensors():
                live[k].copy_(v.to(live[k].device))
                seen += 1
                del v
        if seen != len(live):
            raise RuntimeError(f"base-model record has {seen} tensors, the UNet {len(live)}")
        self._stamp = _stamp(unet)

    @classmethod
    def _remove_all(cls) -> None:
        for snap in cls._live.values():
            snap.path.unlink(missing_ok=True)
        cls._live.clear()


def _stamp(unet: nn.Module) -> tuple:
    """Identity, version counter, storage and dtype of every tensor: cheap evidence that nothing changed."""
    return tuple(
        (k, id(v), v._version, v.data_ptr(), v.dtype) for k, v in unet.state_dict(keep_vars=True).items()
    )


def _remove_orphans(folder: Path) -> None:
    for p in folder.glob("unet-*.safetensors"):
        try:
            pid = int(p.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists() and sys.platform.startswith("linux"):
            p.unlink(missing_ok=True)


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file streaming each tensor's bytes (safetensors' own ``save_file`` first builds the
    whole file in memory: a 3.4 GB UNet would need 3.4 GB more). Atomic: a temp file renamed into place."""
    header: dict = {"__metadata__": dict(metadata)}
    offset = 0
    items = []
    for name, t in tensors.items():
        t = t.detach()
        if t.device.type != "cpu" or not t.is_contiguous():
            t = t.to("cpu").contiguous()
        n = t.numel() * t.element_size()
        header[name] = {
            "dtype": _ST_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + n],
        }
        items.append(t)
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(head)))
            f.write(head)
            for t in items:
                if t.numel():
                    f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_safetensors(path: Path) -> tuple[dict[str, str], Iterator[tuple[str, torch.Tensor]]]:
    """(metadata, iterator of (name, tensor)) from a safetensors file, read with plain file reads.

    safetensors' ``safe_open`` maps the file: every page it touches counts in the process's resident memory while
    the file is open, and ``get_tensor`` then copies out of it. Restoring a 3.4 GB UNet that way put the file on
    top of the memory a full fine-tune had just freed (peak RSS 17.3 GiB against the community pipeline's 14.4 in
    the bench); a read() into a fresh tensor costs that tensor only. Raises ValueError on a malformed file."""
    f = open(path, "rb")  # noqa: SIM115 (closed by the iterator)
    try:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100 << 20:
            raise ValueError("safetensors header too large")
        header = json.loads(f.read(n))
    except Exception:
        f.close()
        raise
    meta = header.pop("__metadata__", None) or {}
    start = 8 + n
    names = {v: k for k, v in _ST_DTYPES.items()}

    def items() -> Iterator[tuple[str, torch.Tensor]]:
        with f:
            for name, d in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
                dtype = names.get(d["dtype"])
                if dtype is None:
                    raise ValueError(f"unsupported dtype {d['dtype']}")
                t = torch.empty(d["shape"], dtype=dtype)
                lo, hi = d["data_offsets"]
                if hi - lo != t.numel() * t.element_size():
                    raise ValueError(f"{name}: size does not match its shape")
                if t.numel():
                    f.seek(start + lo)
                    if f.readinto(memoryview(t.reshape(-1).view(torch.uint8).numpy())) != hi - lo:
                        raise ValueError(f"{name}: file truncated")
                yield name, t

    return meta, items()


_ST_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}

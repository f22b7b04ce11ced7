"""Cache of tuned Imagic state (e_tgt, e_opt, fine-tuned weights), in memory then on disk, both bounded.

Stages A and B cost minutes; stage C costs seconds. Keying the tuned state by everything that shapes it (image
content, text, tuning settings, model) lets a request that only changes eta or the seed skip A and B, which is what
makes an eta slider in the hosts usable. Entries are plain CPU tensors saved as safetensors; a broken or foreign
file on disk is treated as a miss and removed, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

_WEIGHT_PREFIX = "w."
DEFAULT_DISK_BYTES = 4 << 30  # holds two full-fine-tune deltas of SD-1.5 (1.7 GB each) or ~1000 LoRA entries

log = logging.getLogger("layeredit.imagic")


@dataclass
class TunedState:
    """What stages A and B produce. ``weights`` are LoRA adapter tensors (``mode == "lora"``), a full UNet
    state dict (``mode == "full"``) or empty (``mode == "none"``); ``config`` holds what is needed to apply
    them again (LoRA rank, alpha, target modules)."""

    e_tgt: torch.Tensor
    e_opt: torch.Tensor
    mode: str
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    uncond: torch.Tensor | None = None  # the empty prompt's encoding, so a re-render skips the text encoder

    @property
    def nbytes(self) -> int:
        tensors = [self.e_tgt, self.e_opt, *self.weights.values()]
        tensors += [self.uncond] if self.uncond is not None else []
        return sum(t.numel() * t.element_size() for t in tensors)


def cache_key(**parts) -> str:
    """Stable hex key from JSON-able parts and bytes (bytes are hashed, not embedded)."""
    h = hashlib.sha256()
    for name in sorted(parts):
        value = parts[name]
        h.update(name.encode())
        if isinstance(value, bytes | bytearray | memoryview):
            h.update(hashlib.sha256(value).digest())
        else:
            h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()[:40]


def default_cache_dir(models_dir: str | os.PathLike | None = None) -> Path:
    """$LAYEREDIT_CACHE/imagic; else <models dir>/cache/imagic when the models dir exists and is writable;
    else ~/.cache/layeredit/imagic."""
    env = os.environ.get("LAYEREDIT_CACHE")
    if env:
        return Path(env).expanduser() / "imagic"
    models = Path(models_dir).expanduser() if models_dir else None
    if models is not None and models.is_dir() and os.access(models, os.W_OK):
        return models / "cache" / "imagic"
    return Path.home() / ".cache" / "layeredit" / "imagic"


class TunedStateCache:
    """LRU in memory (``memory_bytes``), then a directory of safetensors files (``disk_bytes``, oldest evicted).

    ``directory=None`` keeps the cache in memory only; a bound of 0 disables that level. An entry larger than a
    level's bound is not stored there (a full fine-tune of SD-1.5 is cached as a 1.7 GB fp16 delta: on disk, not
    in memory). Every write logs the disk level's size against its cap and what was evicted.
    """

    def __init__(
        self,
        directory: str | os.PathLike | None = None,
        *,
        memory_bytes: int = 1 << 30,
        disk_bytes: int = DEFAULT_DISK_BYTES,
    ):
        self.directory = Path(directory) if directory is not None else None
        self.memory_bytes = int(memory_bytes)
        self.disk_bytes = int(disk_bytes)
        self._mem: OrderedDict[str, TunedState] = OrderedDict()
        self._lock = threading.Lock()

    # ---- public API -------------------------------------------------------------------------------------------
    def get(self, key: str) -> TunedState | None:
        with self._lock:
            state = self._mem.get(key)
            if state is not None:
                self._mem.move_to_end(key)
                return state
        state = self._load(key)
        if state is not None:
            self._remember(key, state)
        return state

    def put(self, key: str, state: TunedState) -> None:
        state = _detached_cpu(state)
        self._remember(key, state)
        self._save(key, state)

    def would_keep(self, nbytes: int) -> bool:
        """Whether an entry of ``nbytes`` fits either level (lets callers skip copying what would be dropped)."""
        return nbytes <= self.memory_bytes or (self.directory is not None and nbytes <= self.disk_bytes)

    def clear_memory(self) -> None:
        with self._lock:
            self._mem.clear()

    def __contains__(self, key: str) -> bool:
        return key in self._mem or (self._path(key) is not None and self._path(key).exists())

    # ---- memory level ------------------------------------------------------------------------------------------
    def _remember(self, key: str, state: TunedState) -> None:
        if state.nbytes > self.memory_bytes:
            return
        with self._lock:
            self._mem[key] = state
            self._mem.move_to_end(key)
            while sum(s.nbytes for s in self._mem.values()) > self.memory_bytes:
                self._mem.popitem(last=False)

    # ---- disk level --------------------------------------------------------------------------------------------
    def _path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{key}.safetensors"

    def _save(self, key: str, state: TunedState) -> None:
        path = self._path(key)
        if path is None or state.nbytes > self.disk_bytes:
            return
        from .guard import write_safetensors

        tensors = {"e_tgt": state.e_tgt, "e_opt": state.e_opt}
        if state.uncond is not None:
            tensors["uncond"] = state.uncond
        tensors.update({_WEIGHT_PREFIX + k: v for k, v in state.weights.items()})
        meta = {"mode": state.mode, "config": json.dumps(state.config), "format": "layeredit-imagic-1"}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_safetensors(path, tensors, meta)
        except OSError as exc:  # a full or read-only disk costs the cache, not the job
            log.warning("imagic cache: could not write %s (%s)", path.name, exc)
            return
        evicted, total = self._evict_disk()
        log.info(
            "imagic cache: stored %s (%s, %.1f MB); disk %.2f of %.2f GB in %s%s",
            key[:12],
            state.mode,
            path.stat().st_size / 1e6 if path.exists() else 0.0,
            total / 1e9,
            self.disk_bytes / 1e9,
            self.directory,
            f"; evicted {len(evicted)} least recently used ({', '.join(evicted)})" if evicted else "",
        )

    def disk_usage(self) -> int:
        """Bytes the disk level holds now."""
        if self.directory is None or not self.directory.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.directory.glob("*.safetensors"))

    def _load(self, key: str) -> TunedState | None:
        path = self._path(key)
        if path is None or not path.exists():
            return None
        from .guard import read_safetensors

        try:  # plain reads, not a mapping: a full fine-tune's 1.7 GB delta would be resident twice
            meta, items = read_safetensors(path)
            if meta.get("format") != "layeredit-imagic-1":
                items.close()
                raise ValueError("not an imagic cache entry")
            tensors = dict(items)
            weights = {
                k[len(_WEIGHT_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_WEIGHT_PREFIX)
            }
            state = TunedState(
                tensors["e_tgt"],
                tensors["e_opt"],
                meta["mode"],
                weights,
                json.loads(meta["config"]),
                tensors.get("uncond"),
            )
        except Exception:  # corrupt, truncated or foreign file: drop it and tune again
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # mark as recently used for eviction
        return state

    def _evict_disk(self) -> tuple[list[str], int]:
        """Remove least recently used files until the level fits its cap; returns (evicted keys, bytes left)."""
        assert self.directory is not None
        files = sorted(self.directory.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        evicted = []
        for p in files:
            if total <= self.disk_bytes:
                break
            total -= p.stat().st_size
            p.unlink(missing_ok=True)
            evicted.append(p.stem[:12])
        return evicted, total


def _detached_cpu(state: TunedState) -> TunedState:
    def cpu(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to("cpu", copy=True)

    weights = {k: cpu(v) for k, v in state.weights.items()}
    uncond = cpu(state.uncond) if state.uncond is not None else None
    return TunedState(cpu(state.e_tgt), cpu(state.e_opt), state.mode, weights, dict(state.config), uncond)

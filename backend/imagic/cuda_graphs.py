"""CUDA graphs for the UNet calls of an Imagic request: on a GPU, launches, not arithmetic, set the pace.

Profiled on an H200 (bench/gpu_profile.py, SD-1.5 shapes at 512 px): the GPU was busy 22% of an Imagic request's
wall time; an eager batch-2 UNet forward took 39 ms, the same forward replayed from a CUDA graph 12 ms. A graph
records the kernels of one call once and replays them with one launch, so the per-operator Python and launch
cost goes away. Both helpers here fall back to the eager call when a graph cannot be used (not CUDA, capture
refused), and say why, so a request never fails because of them.

- ``SamplingForward``: no-grad UNet forwards of the denoising loop; a shape is captured the second time it is
  seen (the first eager call is its warm-up), keyed by input shape and context tensor.
- ``graphed_training_forward``: stages A and B's forward + backward through ``torch.cuda.make_graphed_callables``; the
  loss, the noise, the optimiser and the gradient scaler stay eager around it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable

import torch

log = logging.getLogger("layeredit.imagic")

Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def graphs_wanted(device: torch.device) -> tuple[bool, str]:
    """CUDA graphs on CUDA devices unless ``LAYEREDIT_CUDA_GRAPHS=0`` (a switch for diagnosing a driver)."""
    if device.type != "cuda":
        return False, f"off: {device.type} device"
    if os.environ.get("LAYEREDIT_CUDA_GRAPHS", "1") == "0":
        return False, "off: LAYEREDIT_CUDA_GRAPHS=0"
    return True, "on"


@contextlib.contextmanager
def _unet_context(device: torch.device, amp_dtype: torch.dtype | None):
    """Autocast with its cast cache off (cached casts would outlive a captured region) and, on CUDA, attention
    kernels that need no run-time build: torch's cuDNN attention builds an execution plan per new shape, which
    the first request pays for every attention shape of the UNet, forward and backward (the first 512 px
    request's sampling took 4.4 s against 0.7 s for the same call warm, H200). ``LAYEREDIT_SDPA_CUDNN=1`` keeps
    cuDNN attention eligible (to compare)."""
    with contextlib.ExitStack() as stack:
        if amp_dtype is not None:
            stack.enter_context(torch.autocast(device.type, dtype=amp_dtype, cache_enabled=False))
        if device.type == "cuda" and os.environ.get("LAYEREDIT_SDPA_CUDNN") != "1":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
            stack.enter_context(sdpa_kernel(backends))
        yield


class _Captured:
    """One captured no-grad forward with static input buffers."""

    def __init__(
        self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, t: torch.Tensor
    ):
        self.x, self.t = x.clone(), t.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            fn(
                self.x, self.t
            )  # warm-up on a side stream, as the CUDA-graph docs ask (lazy handles, workspaces)
        torch.cuda.current_stream(x.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = fn(self.x, self.t)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.x.copy_(x)
        self.t.copy_(t)
        self.graph.replay()
        return self.out  # overwritten by the next replay: callers use it before then


class SamplingForward:
    """``(x, t, context) -> noise prediction (float32)`` for a no-grad sampling loop, replayed from CUDA graphs
    where possible. ``status`` says what ran ("graphs", or "eager: why")."""

    def __init__(self, unet, amp_dtype: torch.dtype | None, dtype: torch.dtype, device: torch.device):
        self.unet, self.amp_dtype, self.dtype, self.device = unet, amp_dtype, dtype, device
        self.enabled, why = graphs_wanted(device)
        self._why = None if self.enabled else f"eager ({why})"
        self._seen: set[tuple] = set()
        self._graphs: dict[tuple, _Captured] = {}

    @property
    def status(self) -> str:
        if self._why is not None:
            return self._why
        return "graphs" if self._graphs else "eager (no input shape came twice: nothing to replay)"

    def _eager(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        with _unet_context(self.device, self.amp_dtype):
            return self.unet(x.to(self.dtype), t, encoder_hidden_states=context).sample.float()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self._eager(x, t, context)
        key = (tuple(x.shape), x.dtype, id(context), context._version)
        graph = self._graphs.get(key)
        if graph is None and key in self._seen:
            try:
                graph = self._graphs[key] = _Captured(lambda xs, ts: self._eager(xs, ts, context), x, t)
            except Exception as exc:  # noqa: BLE001 - any capture failure: the eager path still gives the result
                self.enabled = False
                self._why = f"eager (capture failed: {type(exc).__name__}: {str(exc)[:160]})"
                log.warning("CUDA graph capture failed, sampling eagerly: %s", exc)
                return self._eager(x, t, context)
        if graph is None:
            self._seen.add(key)
            return self._eager(x, t, context)
        return graph(x, t)


class UNetCall(torch.nn.Module):
    """The UNet as ``(sample, timestep, context) -> prediction``: the tensor-only signature that
    ``make_graphed_callables`` needs (it takes no keyword arguments)."""

    def __init__(self, unet, amp_dtype: torch.dtype | None, dtype: torch.dtype):
        super().__init__()
        self.unet, self.amp_dtype, self.dtype = unet, amp_dtype, dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        with _unet_context(x.device, self.amp_dtype):
            return self.unet(x.to(self.dtype), t, encoder_hidden_states=context.to(self.dtype)).sample


def graphed_training_forward(
    unet, amp_dtype: torch.dtype | None, dtype: torch.dtype, sample: torch.Tensor, context: torch.Tensor
) -> tuple[Forward, str]:
    """A forward for stages A/B whose forward and backward replay CUDA graphs, built for ``sample``'s and
    ``context``'s shapes (and ``context``'s requires_grad, which must stay the same), with the eager forward as
    the fallback. Returns (forward, status)."""
    call = UNetCall(unet, amp_dtype, dtype)
    wanted, why = graphs_wanted(sample.device)
    if not wanted:
        return call, f"eager ({why})"
    t = torch.zeros((1,), dtype=torch.long, device=sample.device)
    try:
        graphed = torch.cuda.make_graphed_callables(
            call, (sample.detach().clone(), t, context.detach().clone().requires_grad_(context.requires_grad))
        )
    except Exception as exc:  # noqa: BLE001 - any capture failure: the eager path still trains
        log.warning("CUDA graph capture failed, tuning eagerly: %s", exc)
        return call, f"eager (capture failed: {type(exc).__name__}: {str(exc)[:160]})"
    return graphed, "graphs"

"""Stand-ins for the learned erase models, built in the test session: ONNX files with the real files' inputs,
outputs, shapes and value conventions (see backend/erase/fill_learned.py), and random or known weights.

They prove the loading and running code (names, layout, ranges, mask polarity, padding, compositing) and
measure its plumbing cost; they are not LaMa or MI-GAN and say nothing about fill quality.

- ``lama``: inputs image [batch,3,512,512] in [0,1] and mask [batch,1,512,512] (1 = fill); output
  [batch,3,512,512] = 255 * (mask * prediction + (1 - mask) * image), as Carve/LaMa-ONNX's export does.
- ``migan``: input [1,4,512,512] = (known - 0.5, RGB in [-1,1] * known); output [1,3,512,512] in [-1,1].

``colour`` (RGB in [0,1]) makes the prediction that flat colour (a fill the tests can check exactly: channel
order, value range, which mask value means hole); without it a small random-weight conv net predicts.
``echo_known`` makes the MI-GAN stand-in return its (decoded) input where known, so the tests can check the
[-1,1] encoding of the image too.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn


class _Net(nn.Module):
    def __init__(self, in_ch: int, width: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(width, 3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class LamaStandIn(nn.Module):
    def __init__(self, colour=None, scale: float = 255.0, width: int = 8, seed: int = 0):
        super().__init__()
        self.net = _Net(4, width, seed)
        self.colour = None if colour is None else torch.tensor(colour, dtype=torch.float32).view(1, 3, 1, 1)
        self.scale = scale

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        masked = image * (1 - mask)
        pred = torch.sigmoid(self.net(torch.cat([masked, mask], dim=1)))
        if self.colour is not None:
            pred = pred * 0 + self.colour
        return (mask * pred + (1 - mask) * image) * self.scale


class MiganStandIn(nn.Module):
    def __init__(self, colour=None, echo_known: bool = False, width: int = 8, seed: int = 0):
        super().__init__()
        self.net = _Net(4, width, seed)
        self.colour = None if colour is None else torch.tensor(colour, dtype=torch.float32).view(1, 3, 1, 1)
        self.echo_known = echo_known

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pred = torch.tanh(self.net(x))
        if self.colour is not None:
            pred = pred * 0 + (self.colour * 2 - 1)
        if self.echo_known:
            known = x[:, :1] + 0.5
            pred = known * x[:, 1:4] + (1 - known) * pred
        return pred


def _export(
    module: nn.Module, args: tuple, path: Path, inputs: list[str], output: str, dynamic: dict
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=inputs,
            output_names=[output],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    return path


def build_lama(
    path: Path,
    colour=None,
    *,
    scale: float = 255.0,
    dynamic_size: bool = False,
    width: int = 8,
    seed: int = 0,
) -> Path:
    """A LaMa-shaped ONNX file at ``path`` (fixed 512x512 like Carve's, or any size with ``dynamic_size``)."""
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    args = (torch.rand(1, 3, 512, 512), torch.zeros(1, 1, 512, 512))
    module = LamaStandIn(colour, scale, width, seed)
    return _export(module, args, path, ["image", "mask"], "output", {"image": axes, "mask": axes})


def build_migan(path: Path, colour=None, *, echo_known: bool = False, width: int = 8, seed: int = 0) -> Path:
    """A MI-GAN-shaped ONNX file at ``path`` (the bare generator: one 4-channel 512x512 input)."""
    args = (torch.rand(1, 4, 512, 512),)
    return _export(MiganStandIn(colour, echo_known, width, seed), args, path, ["input"], "output", {})

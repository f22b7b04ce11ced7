"""Random-weight networks with the layer shapes of the real erase models, for timing their real FLOPs here.

Neither big-lama nor MI-GAN weights can be downloaded on this machine, and a tiny stand-in of the same file
format (tests/learned_models.py) measures only the plumbing. These rebuild each architecture from its published
description (layer types, widths, depths, resolutions), written here from those facts, so a forward pass costs
what the real one costs; the weights are random, so the output is noise.

- ``BigLama``: LaMa's big-lama generator (Suvorov et al. 2022; the big-lama config): 7x7 stem to 64 channels,
  three stride-2 downsamplings to 512, 18 residual blocks of Fast Fourier Convolutions (75 % of the channels in
  the global, spectral branch: 1x1 conv -> real FFT -> 1x1 conv on real and imaginary parts -> inverse FFT),
  three transposed-conv upsamplings, 7x7 head, sigmoid. ~51 M parameters (the ONNX file is 208 MB).
- ``MiGan``: MI-GAN-512 (Sargsyan et al. 2023): an encoder-decoder over 512..4 px whose width is
  min(32768 / resolution, 512), every conv depthwise-separable (3x3 depthwise + 1x1 pointwise), fixed 4x4 blur
  filters for down/upsampling, skip additions at each resolution and an RGB output summed across resolutions.
  ~6-7 M parameters (the ONNX file is 29.5 MB).

Both take and give what the real ONNX files do (see backend/erase/fill_learned.py), so
``export_lama``/``export_migan`` write files the backend's LearnedFiller loads as it would the real ones.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# ---- big-lama -------------------------------------------------------------------------------------------------


def _bn_act(ch: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU(inplace=True))


class _Spectral(nn.Module):
    """Global branch: channels halved by a 1x1 conv, a 1x1 conv in the frequency domain, back to ``out_ch``."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        mid = out_ch // 2
        self.reduce = nn.Sequential(nn.Conv2d(in_ch, mid, 1, bias=False), _bn_act(mid))
        self.freq = nn.Sequential(nn.Conv2d(2 * mid, 2 * mid, 1, bias=False), _bn_act(2 * mid))
        self.expand = nn.Conv2d(mid, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        h, w = x.shape[-2:]
        spec = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
        z = self.freq(torch.cat([spec.real, spec.imag], dim=1))
        re, im = z.chunk(2, dim=1)
        y = torch.fft.irfftn(torch.complex(re, im), s=(h, w), dim=(-2, -1), norm="ortho")
        return self.expand(x + y)


class _FFC(nn.Module):
    """One Fast Fourier Convolution (3x3, reflect padding) on a (local, global) channel split, BN + ReLU."""

    def __init__(self, ch: int, ratio: float = 0.75):
        super().__init__()
        g = int(ch * ratio)
        loc = ch - g
        self.l2l = nn.Conv2d(loc, loc, 3, padding=1, padding_mode="reflect", bias=False)
        self.l2g = nn.Conv2d(loc, g, 3, padding=1, padding_mode="reflect", bias=False)
        self.g2l = nn.Conv2d(g, loc, 3, padding=1, padding_mode="reflect", bias=False)
        self.g2g = _Spectral(g, g)
        self.act_l, self.act_g = _bn_act(loc), _bn_act(g)

    def forward(self, xl: torch.Tensor, xg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.act_l(self.l2l(xl) + self.g2l(xg)), self.act_g(self.l2g(xl) + self.g2g(xg))


class _FFCBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.a, self.b = _FFC(ch), _FFC(ch)

    def forward(self, xl: torch.Tensor, xg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        yl, yg = self.b(*self.a(xl, xg))
        return xl + yl, xg + yg


class BigLama(nn.Module):
    """forward(image [N,3,H,W] in [0,1], mask [N,1,H,W] 1 = fill) -> [N,3,H,W] in [0,255], like Carve's file."""

    def __init__(self, ngf: int = 64, n_down: int = 3, n_blocks: int = 18, ratio: float = 0.75):
        super().__init__()
        ch = ngf
        down: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(4, ch, 7, bias=False), _bn_act(ch)]
        for _ in range(n_down - 1):
            down += [nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1, bias=False), _bn_act(2 * ch)]
            ch *= 2
        self.down = nn.Sequential(*down)
        top = 2 * ch
        g = int(top * ratio)
        # the last downsampling already splits into the local and the global (spectral) branch
        self.to_local = nn.Sequential(
            nn.Conv2d(ch, top - g, 3, stride=2, padding=1, bias=False), _bn_act(top - g)
        )
        self.to_global = nn.Sequential(nn.Conv2d(ch, g, 3, stride=2, padding=1, bias=False), _bn_act(g))
        self.blocks = nn.ModuleList(_FFCBlock(top) for _ in range(n_blocks))
        up: list[nn.Module] = []
        ch = top
        for _ in range(n_down):
            up += [
                nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1),
                _bn_act(ch // 2),
            ]
            ch //= 2
        up += [nn.ReflectionPad2d(3), nn.Conv2d(ch, 3, 7), nn.Sigmoid()]
        self.up = nn.Sequential(*up)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        masked = image * (1 - mask)
        x = self.down(torch.cat([masked, mask], dim=1))
        xl, xg = self.to_local(x), self.to_global(x)
        for block in self.blocks:
            xl, xg = block(xl, xg)
        pred = self.up(torch.cat([xl, xg], dim=1))
        return (mask * pred + (1 - mask) * image) * 255


# ---- MI-GAN ---------------------------------------------------------------------------------------------------


def _width(res: int) -> int:
    return min(32768 // res, 512)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * 1.4142135


class _SepConv(nn.Module):
    """3x3 depthwise + 1x1 pointwise; optional stride-2 blur downsampling between them, or upsampling after."""

    def __init__(self, cin: int, cout: int, down: bool = False, up: bool = False):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, padding=1, groups=cin)
        self.down = nn.Conv2d(cin, cin, 4, stride=2, padding=1, groups=cin, bias=False) if down else None
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.up = (
            nn.ConvTranspose2d(cout, cout, 4, stride=2, padding=1, groups=cout, bias=False) if up else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _lrelu(self.dw(x))
        if self.down is not None:
            x = self.down(x)
        x = self.pw(x)
        if self.up is not None:
            x = self.up(x)
        return _lrelu(x)


class MiGan(nn.Module):
    """forward(x [N,4,512,512] = (known - 0.5, RGB in [-1,1] * known)) -> [N,3,512,512] in [-1,1]."""

    def __init__(self, resolution: int = 512):
        super().__init__()
        self.res = [2**i for i in range(resolution.bit_length() - 1, 1, -1)]  # 512 .. 4
        self.fromrgb = nn.Conv2d(4, _width(resolution), 1)
        self.enc = nn.ModuleDict()
        for r in self.res[:-1]:
            self.enc[str(r)] = nn.ModuleList(
                [_SepConv(_width(r), _width(r)), _SepConv(_width(r), _width(r // 2), down=True)]
            )
        self.enc["4"] = nn.ModuleList([_SepConv(512, 512), _SepConv(512, 512)])
        self.dec = nn.ModuleDict({"4": nn.ModuleList([_SepConv(512, 512), _SepConv(512, 512)])})
        self.torgb = nn.ModuleDict({"4": nn.Conv2d(512, 3, 1)})
        for r in reversed(self.res[:-1]):
            self.dec[str(r)] = nn.ModuleList(
                [_SepConv(_width(r // 2), _width(r), up=True), _SepConv(_width(r), _width(r))]
            )
            self.torgb[str(r)] = nn.Conv2d(_width(r), 3, 1)
        self.img_up = nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1, groups=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _lrelu(self.fromrgb(x))
        skips = {}
        for r in self.res:
            first, second = self.enc[str(r)]
            skips[r] = first(h)
            h = second(skips[r])
        img = None
        for r in reversed(self.res):
            first, second = self.dec[str(r)]
            h = second(first(h) + skips[r])
            rgb = self.torgb[str(r)](h)
            img = rgb if img is None else self.img_up(img) + rgb
        return torch.tanh(img)


# ---- export ---------------------------------------------------------------------------------------------------


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def gflops(kind: str) -> float:
    """Floating-point operations of one 512x512 forward pass, in G, as torch counts them (convolutions and
    matrix products; the FFTs, norms and activations are not counted, a few percent for big-lama)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = (BigLama() if kind == "lama" else MiGan()).eval()
    args = (
        (torch.rand(1, 3, 512, 512), torch.zeros(1, 1, 512, 512))
        if kind == "lama"
        else (torch.rand(1, 4, 512, 512),)
    )
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*args)
    return counter.get_total_flops() / 1e9


def export_lama(path: Path, **kw) -> Path:
    """big-lama with random weights as an ONNX file with Carve's inputs (needs onnxscript: its FFTs become
    ONNX DFT ops, which only the dynamo exporter writes)."""
    torch.manual_seed(0)
    model = BigLama(**kw).eval()
    args = (torch.rand(1, 3, 512, 512), torch.zeros(1, 1, 512, 512))
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=["image", "mask"],
            output_names=["output"],
            dynamo=True,
            external_data=False,  # one self-contained file, like Carve's
            verbose=False,
        )
    return path


def export_migan(path: Path) -> Path:
    """MI-GAN-512 with random weights as an ONNX file with the bare generator's input."""
    torch.manual_seed(0)
    model = MiGan(512).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.rand(1, 4, 512, 512),),
            str(path),
            input_names=["input"],
            output_names=["output"],
            opset_version=17,
            dynamo=False,
        )
    return path

"""FIR up/down-sampling (StyleGAN2-style ``upfirdn2d``) in plain PyTorch.

No compiled extension: everything is ``F.pad`` + a depthwise ``F.conv2d`` / ``F.conv_transpose2d``,
so it runs on any device and dtype, in channels_last, under autocast and torch.compile.

Notation: ``x`` is ``(B, C, H, W)``; a FIR kernel ``k`` is a 1-D sequence (made separable by the
outer product) or a 2-D array; it is normalised to sum 1 (times ``gain * factor**2`` when
upsampling). ``upfirdn2d(x, k, up, down, pad)`` = insert ``up - 1`` zeros after every pixel, pad by
``pad = (p0, p1)`` on both axes (negative pads crop), convolve with ``k`` (true convolution), keep
every ``down``-th pixel. All functions keep the semantics of the paper's code so that its trained
weights give the same outputs here.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "setup_kernel", "upfirdn2d", "upsample_2d", "downsample_2d", "upsample_conv_2d",
    "conv_downsample_2d", "naive_upsample_2d", "naive_downsample_2d", "Conv2d",
]


def setup_kernel(k, device=None, dtype=torch.float32) -> torch.Tensor:
    """A normalised 2-D FIR kernel (sum 1) from a 1-D (separable) or 2-D spec."""
    k = torch.as_tensor(k, dtype=torch.float64)
    if k.ndim == 1:
        k = torch.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"fir_kernel must be 1-D or a square 2-D array, got shape {tuple(k.shape)}")
    k = k / k.sum()
    return k.to(device=device, dtype=dtype)


def _pad(x: torch.Tensor, p0: int, p1: int) -> torch.Tensor:
    # F.pad accepts negative values (cropping) on every backend.
    if p0 == 0 and p1 == 0:
        return x
    return F.pad(x, (p0, p1, p0, p1))


def upfirdn2d(x: torch.Tensor, k: torch.Tensor, up: int = 1, down: int = 1,
              pad: Tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter and downsample ``x`` (B, C, H, W).

    Output size per axis: ``(H * up + p0 + p1 - kh) // down + 1``.
    """
    B, C, H, W = x.shape
    kh, kw = k.shape
    if up > 1 and down == 1 and kh == kw:
        # Zero insertion + padding + convolution is one depthwise transposed convolution with
        # symmetric padding P = k - 1 - p0 and output_padding for the rest: no 4x-sized
        # intermediate, and the memory format (channels_last) is kept.
        P = kh - 1 - pad[0]
        n_out = H * up + pad[0] + pad[1] - kh + 1
        op = n_out - ((H - 1) * up - 2 * P + kh)
        n_out_w = W * up + pad[0] + pad[1] - kw + 1
        op_w = n_out_w - ((W - 1) * up - 2 * P + kw)
        if P >= 0 and 0 <= op < up and op == op_w:
            w = k.to(dtype=x.dtype, device=x.device)[None, None].expand(C, 1, kh, kw)
            return F.conv_transpose2d(x, w, stride=up, padding=P, output_padding=op, groups=C)
    if up > 1:
        # zero insertion: each pixel followed by (up - 1) zeros on both axes
        x = x.reshape(B, C, H, 1, W, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(B, C, H * up, W * up)
    x = _pad(x, pad[0], pad[1])
    # true convolution = correlation with the flipped kernel; depthwise over channels
    w = torch.flip(k, [0, 1]).to(dtype=x.dtype, device=x.device)
    w = w[None, None].expand(C, 1, kh, kw)
    return F.conv2d(x, w, stride=down, groups=C)


def _kernel(k, x: torch.Tensor, scale: float) -> torch.Tensor:
    # A 2-D tensor is taken as an already normalised kernel (modules keep one as a buffer, so no
    # host-to-device copy happens per call); anything else is a spec for ``setup_kernel``.
    if isinstance(k, torch.Tensor) and k.ndim == 2:
        return k.to(device=x.device, dtype=x.dtype) * scale
    return setup_kernel(k, device=x.device, dtype=x.dtype) * scale


def upsample_2d(x: torch.Tensor, k: Sequence[float] = (1, 3, 3, 1), factor: int = 2, gain: float = 1.0):
    """FIR upsampling by ``factor``: ``(B, C, H, W) -> (B, C, H*factor, W*factor)``."""
    kk = _kernel(k, x, gain * factor ** 2)
    p = kk.shape[0] - factor
    return upfirdn2d(x, kk, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: torch.Tensor, k: Sequence[float] = (1, 3, 3, 1), factor: int = 2, gain: float = 1.0):
    """FIR downsampling by ``factor``: ``(B, C, H, W) -> (B, C, H//factor, W//factor)``."""
    kk = _kernel(k, x, gain)
    p = kk.shape[0] - factor
    return upfirdn2d(x, kk, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x: torch.Tensor, w: torch.Tensor, k: Sequence[float] = (1, 3, 3, 1), factor: int = 2,
                     gain: float = 1.0) -> torch.Tensor:
    """Fused FIR upsampling and convolution with weight ``w`` (out, in, kh, kw) (StyleGAN2).

    A strided transposed convolution with the spatially flipped kernel, then one FIR pass.
    """
    out_c, in_c, kh, kw = w.shape
    if kh != kw:
        raise ValueError("upsample_conv_2d needs a square convolution kernel")
    kk = _kernel(k, x, gain * factor ** 2)
    p = (kk.shape[0] - factor) - (kw - 1)
    wt = torch.flip(w, [2, 3]).transpose(0, 1)  # (in, out, kh, kw) for conv_transpose2d
    x = F.conv_transpose2d(x, wt, stride=factor)
    return upfirdn2d(x, kk, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: torch.Tensor, w: torch.Tensor, k: Sequence[float] = (1, 3, 3, 1), factor: int = 2,
                       gain: float = 1.0) -> torch.Tensor:
    """Fused FIR filtering and strided convolution with weight ``w`` (out, in, kh, kw) (StyleGAN2)."""
    kw = w.shape[-1]
    kk = _kernel(k, x, gain)
    p = (kk.shape[0] - factor) + (kw - 1)
    x = upfirdn2d(x, kk, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, w, stride=factor)


def naive_upsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour upsampling (each pixel repeated ``factor`` x ``factor`` times)."""
    return F.interpolate(x, scale_factor=factor, mode="nearest")


def naive_downsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Mean over non-overlapping ``factor`` x ``factor`` blocks."""
    return F.avg_pool2d(x, factor, stride=factor)


class Conv2d(nn.Module):
    """Convolution with optional fused FIR upsampling (``up``) or downsampling (``down``).

    Parameters ``weight`` (out_ch, in_ch, kernel, kernel) and ``bias`` (out_ch,), named as in the
    paper's code. ``kernel_init`` is a callable ``shape -> tensor`` (None: zeros).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, up: bool = False, down: bool = False,
                 resample_kernel: Sequence[float] = (1, 3, 3, 1), use_bias: bool = True, kernel_init=None):
        super().__init__()
        if up and down:
            raise ValueError("Conv2d: up and down cannot both be set")
        if kernel < 1 or kernel % 2 != 1:
            raise ValueError(f"Conv2d: kernel must be odd and >= 1, got {kernel}")
        self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, kernel, kernel))
        if kernel_init is not None:
            with torch.no_grad():
                self.weight.copy_(kernel_init(self.weight.shape, device=self.weight.device))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if use_bias else None
        self.up, self.down, self.kernel = up, down, kernel
        self.register_buffer("fir", setup_kernel(resample_kernel, device=self.weight.device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if self.up:
            x = upsample_conv_2d(x, w, k=self.fir)
        elif self.down:
            x = conv_downsample_2d(x, w, k=self.fir)
        else:
            x = F.conv2d(x, w, padding=self.kernel // 2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x

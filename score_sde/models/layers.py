"""Building blocks of the DDPM, DDPM++ and NCSN++ backbones (plain PyTorch).

Module and parameter names (``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ``NIN_0.W``, ...) follow the
paper's code so that its released checkpoints load by name (see ``score_sde.interop``).

Conventions: feature maps are ``(B, C, H, W)`` (any memory format; channels_last is kept);
``temb`` is the time embedding ``(B, temb_dim)``. Nothing here assumes float32: under bf16
autocast the convolutions, linear layers and attention run in bf16 and GroupNorm in float32.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import up_or_down_sampling as updown

__all__ = [
    "ACTIVATIONS", "get_act", "variance_scaling", "default_init", "conv1x1", "conv3x3", "dense",
    "num_groups", "group_norm", "NIN", "GaussianFourierProjection", "timestep_embedding",
    "AttnBlock", "Upsample", "Downsample", "ResnetBlockDDPM", "ResnetBlockBigGAN", "Combine",
    "ClassEmbedding", "NULL_CLASS",
]

#: the class label that means "no label" (the null class of classifier-free guidance)
NULL_CLASS = -1

_SQRT_HALF = 1.0 / math.sqrt(2.0)

ACTIVATIONS = {
    "swish": nn.SiLU, "silu": nn.SiLU, "relu": nn.ReLU, "elu": nn.ELU,
    "lrelu": lambda: nn.LeakyReLU(negative_slope=0.2), "gelu": nn.GELU,
}


def get_act(name: str) -> nn.Module:
    """Activation module by the reference's config name (``config.model.nonlinearity``)."""
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"nonlinearity must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[key]()


# ----------------------------------------------------------------------------------------------
# initialisation (DDPM's "fan_avg, uniform" variance scaling)


def variance_scaling(scale: float, mode: str = "fan_avg", distribution: str = "uniform",
                     in_axis: int = 1, out_axis: int = 0) -> Callable:
    """JAX-style variance-scaling initialiser: returns ``init(shape, device=None, dtype=float32)``."""

    def init(shape, device=None, dtype=torch.float32):
        shape = tuple(shape)
        if torch.empty(0, device=device).is_meta:  # shapes only: nothing to draw
            return torch.empty(shape, device=device, dtype=dtype)
        receptive = math.prod(shape) / shape[in_axis] / shape[out_axis]
        fan_in, fan_out = shape[in_axis] * receptive, shape[out_axis] * receptive
        denom = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        var = scale / denom
        if distribution == "normal":
            return torch.randn(shape, device=device, dtype=dtype) * math.sqrt(var)
        return (torch.rand(shape, device=device, dtype=dtype) * 2.0 - 1.0) * math.sqrt(3.0 * var)

    return init


def default_init(scale: float = 1.0) -> Callable:
    """DDPM's default initialiser; ``scale=0`` means 1e-10 (a near-zero, not exactly zero, layer)."""
    return variance_scaling(1e-10 if scale == 0 else scale, "fan_avg", "uniform")


def _init_(module: nn.Module, init_scale: float = 1.0) -> nn.Module:
    if module.weight.is_meta:
        return module
    with torch.no_grad():
        w = module.weight
        w.copy_(default_init(init_scale)(w.shape, device=w.device, dtype=w.dtype))
        if getattr(module, "bias", None) is not None:
            module.bias.zero_()
    return module


def conv1x1(in_ch: int, out_ch: int, stride: int = 1, bias: bool = True, init_scale: float = 1.0,
            padding: int = 0) -> nn.Conv2d:
    """1x1 convolution with DDPM initialisation (zero bias)."""
    return _init_(nn.Conv2d(in_ch, out_ch, 1, stride=stride, padding=padding, bias=bias), init_scale)


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, bias: bool = True, dilation: int = 1,
            init_scale: float = 1.0, padding: int = 1) -> nn.Conv2d:
    """3x3 convolution with DDPM initialisation (zero bias)."""
    conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding, dilation=dilation, bias=bias)
    return _init_(conv, init_scale)


def dense(in_dim: int, out_dim: int, init_scale: float = 1.0) -> nn.Linear:
    """``nn.Linear`` with DDPM initialisation (zero bias)."""
    return _init_(nn.Linear(in_dim, out_dim), init_scale)


def num_groups(channels: int, max_groups: int = 32) -> int:
    """GroupNorm groups: ``min(channels // 4, 32)`` as in DDPM++ (32 for every DDPM width >= 128),
    lowered to the nearest divisor of ``channels`` so that any width works."""
    g = max(1, min(channels // 4, max_groups))
    while channels % g:
        g -= 1
    return g


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=num_groups(channels), num_channels=channels, eps=1e-6)


# ----------------------------------------------------------------------------------------------
# embeddings


class NIN(nn.Module):
    """Per-pixel linear map over channels ("network in network"): ``W`` is ``(in_dim, num_units)``.

    ``forward`` works on feature maps ``(B, in_dim, H, W)`` as a 1x1 convolution; ``tokens`` on
    ``(..., in_dim)`` as a linear layer.
    """

    def __init__(self, in_dim: int, num_units: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(default_init(init_scale)((in_dim, num_units)))
        self.b = nn.Parameter(torch.zeros(num_units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.W.t()[:, :, None, None], self.b)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.W.t(), self.b)


class GaussianFourierProjection(nn.Module):
    """Random Fourier features ``[sin(2 pi W x), cos(2 pi W x)]`` of a scalar label, ``(B,) -> (B, 2E)``.

    ``W ~ N(0, scale^2)`` of size ``embedding_size`` is a fixed (``requires_grad=False``) parameter,
    as in the paper's code; it is computed in float32 whatever the autocast state
    (float64 for float64 labels).
    """

    def __init__(self, embedding_size: int = 256, scale: float = 1.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = _embedding_dtype(x)
        proj = x.to(dt)[:, None] * (2.0 * math.pi * self.W.to(dt))[None, :]
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


def _embedding_dtype(labels: torch.Tensor) -> torch.dtype:
    # at least float32 (also under autocast / for half labels); float64 models stay float64
    return torch.float64 if labels.dtype == torch.float64 else torch.float32


def timestep_embedding(timesteps: torch.Tensor, embedding_dim: int, max_positions: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding of (float) labels, ``(B,) -> (B, embedding_dim)`` in float32 (float64 for float64 labels; DDPM's).

    Frequencies ``exp(-log(max_positions) * i / (half - 1))``, ``i < half = embedding_dim // 2``;
    ``[sin, cos]`` halves, zero-padded when ``embedding_dim`` is odd.
    """
    half = embedding_dim // 2
    if half < 2:
        raise ValueError(f"embedding_dim must be >= 4 for the sinusoidal embedding, got {embedding_dim}")
    step = math.log(max_positions) / (half - 1)
    dt = _embedding_dtype(timesteps)
    freqs = torch.exp(torch.arange(half, dtype=dt, device=timesteps.device) * -step)
    emb = timesteps.to(dt)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if embedding_dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


# ----------------------------------------------------------------------------------------------
# attention


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W pixels (DDPM's block, DDPM++'s with ``skip_rescale``).

    Runs ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU) on tokens
    ``(B, 1, H*W, C)`` with scale ``C^-1/2``; q, k, v come from one fused matmul. Output
    ``x + proj(attn)`` (divided by sqrt 2 with ``skip_rescale``).
    """

    def __init__(self, channels: int, skip_rescale: bool = False, init_scale: float = 0.0):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.GroupNorm_0(x)
        # (B, C, H, W) -> (B, HW, C): a free view when x is channels_last
        h = h.permute(0, 2, 3, 1).reshape(B, H * W, C)
        w_qkv = torch.cat([self.NIN_0.W, self.NIN_1.W, self.NIN_2.W], dim=1).t()
        b_qkv = torch.cat([self.NIN_0.b, self.NIN_1.b, self.NIN_2.b])
        q, k, v = F.linear(h, w_qkv, b_qkv).unsqueeze(1).chunk(3, dim=-1)
        h = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        h = self.NIN_3.tokens(h)
        h = h.reshape(B, H, W, C).permute(0, 3, 1, 2)
        out = x + h
        return out * _SQRT_HALF if self.skip_rescale else out


# ----------------------------------------------------------------------------------------------
# resampling


class Upsample(nn.Module):
    """2x upsampling: nearest (+ 3x3 conv ``Conv_0``), or FIR (+ fused conv ``Conv2d_0``) with ``fir``."""

    def __init__(self, in_ch: int, out_ch: Optional[int] = None, with_conv: bool = False, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if not with_conv and out_ch != in_ch:
            raise ValueError("Upsample without a convolution cannot change the channel count")
        if with_conv:
            if fir:
                self.Conv2d_0 = updown.Conv2d(in_ch, out_ch, kernel=3, up=True, resample_kernel=fir_kernel,
                                              kernel_init=default_init())
            else:
                self.Conv_0 = conv3x3(in_ch, out_ch)
        self.fir, self.with_conv = fir, with_conv
        if fir and not with_conv:
            self.register_buffer("fir_k", updown.setup_kernel(fir_kernel), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fir:
            h = updown.naive_upsample_2d(x, 2)
            return self.Conv_0(h) if self.with_conv else h
        if self.with_conv:
            return self.Conv2d_0(x)
        return updown.upsample_2d(x, self.fir_k, factor=2)


class Downsample(nn.Module):
    """2x downsampling: 3x3 stride-2 conv ``Conv_0`` on the (0,1,0,1)-padded input (TF "SAME"), or
    2x2 mean pooling; FIR (+ fused conv ``Conv2d_0``) with ``fir``."""

    def __init__(self, in_ch: int, out_ch: Optional[int] = None, with_conv: bool = False, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if not with_conv and out_ch != in_ch:
            raise ValueError("Downsample without a convolution cannot change the channel count")
        if with_conv:
            if fir:
                self.Conv2d_0 = updown.Conv2d(in_ch, out_ch, kernel=3, down=True, resample_kernel=fir_kernel,
                                              kernel_init=default_init())
            else:
                self.Conv_0 = conv3x3(in_ch, out_ch, stride=2, padding=0)
        self.fir, self.with_conv = fir, with_conv
        if fir and not with_conv:
            self.register_buffer("fir_k", updown.setup_kernel(fir_kernel), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fir:
            if self.with_conv:
                return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
            return updown.naive_downsample_2d(x, 2)
        if self.with_conv:
            return self.Conv2d_0(x)
        return updown.downsample_2d(x, self.fir_k, factor=2)


# ----------------------------------------------------------------------------------------------
# residual blocks


class ResnetBlockDDPM(nn.Module):
    """DDPM residual block: GN-act-conv, + Dense(act(temb)), GN-act-dropout-conv, plus shortcut.

    The shortcut is ``NIN_0`` (or a 3x3 ``Conv_2`` with ``conv_shortcut``) when the width changes.
    DDPM: ``skip_rescale=False, init_scale=0``; DDPM++: ``skip_rescale=True``.
    """

    def __init__(self, act: nn.Module, in_ch: int, out_ch: Optional[int] = None, temb_dim: Optional[int] = None,
                 conv_shortcut: bool = False, dropout: float = 0.1, skip_rescale: bool = False,
                 init_scale: float = 0.0):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            if conv_shortcut:
                self.Conv_2 = conv3x3(in_ch, out_ch)
            else:
                self.NIN_0 = NIN(in_ch, out_ch)
        self.act, self.skip_rescale = act, skip_rescale
        self.in_ch, self.out_ch, self.conv_shortcut = in_ch, out_ch, conv_shortcut

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.Conv_0(self.act(self.GroupNorm_0(x)))
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch:
            x = self.Conv_2(x) if self.conv_shortcut else self.NIN_0(x)
        out = x + h
        return out * _SQRT_HALF if self.skip_rescale else out


class ResnetBlockBigGAN(nn.Module):
    """BigGAN-style residual block of DDPM++/NCSN++ with optional 2x ``up`` / ``down`` sampling
    (FIR with ``fir``, else nearest / mean pooling) inside the block and a 1x1 ``Conv_2`` shortcut
    whenever the width or resolution changes."""

    def __init__(self, act: nn.Module, in_ch: int, out_ch: Optional[int] = None, temb_dim: Optional[int] = None,
                 up: bool = False, down: bool = False, dropout: float = 0.1, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True, init_scale: float = 0.0):
        super().__init__()
        out_ch = out_ch or in_ch
        if up and down:
            raise ValueError("ResnetBlockBigGAN: up and down cannot both be set")
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        self.has_shortcut = in_ch != out_ch or up or down
        if self.has_shortcut:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.act, self.skip_rescale = act, skip_rescale
        self.up, self.down, self.fir = up, down, fir
        self.in_ch, self.out_ch = in_ch, out_ch
        if fir and (up or down):
            self.register_buffer("fir_k", updown.setup_kernel(fir_kernel), persistent=False)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return updown.upsample_2d(x, self.fir_k, factor=2) if self.fir else updown.naive_upsample_2d(x, 2)
        if self.down:
            return updown.downsample_2d(x, self.fir_k, factor=2) if self.fir else updown.naive_downsample_2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.act(self.GroupNorm_0(x))
        h = self._resample(h)
        x = self._resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.has_shortcut:
            x = self.Conv_2(x)
        out = x + h
        return out * _SQRT_HALF if self.skip_rescale else out


class Combine(nn.Module):
    """Merge the input pyramid into the feature map: 1x1 ``Conv`` then concatenate or sum."""

    def __init__(self, dim1: int, dim2: int, method: str = "cat"):
        super().__init__()
        if method not in ("cat", "sum"):
            raise ValueError(f"progressive_combine must be 'cat' or 'sum', got {method!r}")
        self.Conv = conv1x1(dim1, dim2)
        self.method = method

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.Conv(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y


class ClassEmbedding(nn.Module):
    """Class-label embedding beside the time embedding: ``(B,) int labels -> (B, dim)``.

    Row ``num_classes`` is the learned null class (classifier-free guidance's "no label"):
    ``class_labels=None`` or an entry ``NULL_CLASS`` (-1) selects it. Starts at zero, so a
    freshly built conditional net computes what the unconditional one computes.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes + 1, dim)
        nn.init.zeros_(self.embedding.weight)

    def forward(self, class_labels: Optional[torch.Tensor], batch: int, device=None) -> torch.Tensor:
        if class_labels is None:
            idx = torch.full((batch,), self.num_classes, dtype=torch.long, device=self.embedding.weight.device)
        else:
            if class_labels.shape != (batch,) or class_labels.is_floating_point():
                raise ValueError(f"class_labels must be integers of shape ({batch},), got "
                                 f"{class_labels.dtype} {tuple(class_labels.shape)}")
            idx = class_labels.long()
            if bool(((idx < NULL_CLASS) | (idx >= self.num_classes)).any()):
                raise ValueError(f"class labels must lie in [0, {self.num_classes}) or be {NULL_CLASS} (no label), "
                                 f"got {sorted(set(idx.tolist()))}")
            idx = torch.where(idx == NULL_CLASS, torch.full_like(idx, self.num_classes), idx)
        return self.embedding(idx.to(self.embedding.weight.device))


def check_num_classes(num_classes) -> int:
    """``int(num_classes)``; ValueError unless an int >= 0 (0: unconditional)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an int >= 0 (0: no class labels), got {num_classes!r}")
    return num_classes


def unet_class_embedding(module: nn.Module, num_classes, conditional: bool, temb_dim: int) -> None:
    """Set ``module.num_classes`` and, for ``num_classes > 0``, ``module.class_embed`` (a
    :class:`ClassEmbedding` of width ``temb_dim``) on a U-Net whose class embedding joins its time
    embedding. It lives outside ``all_modules``, so the paper's parameter layout (and its released
    checkpoints) is unchanged."""
    module.num_classes = check_num_classes(num_classes)
    if module.num_classes:
        if not conditional:
            raise ValueError("num_classes > 0 needs conditional=True (the class embedding joins the time embedding)")
        module.class_embed = ClassEmbedding(module.num_classes, temb_dim)

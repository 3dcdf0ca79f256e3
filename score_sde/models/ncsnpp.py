"""DDPM++ and NCSN++ (Song et al. 2021, section H): one configurable U-Net, ``NCSNpp``.

``net(x, labels) -> tensor shaped like x`` with ``x`` ``(B, C, H, W)`` and ``labels`` ``(B,)``:

* ``embedding_type="positional"`` (DDPM++): ``labels`` are fed to DDPM's sinusoidal embedding;
  the paper's VP/sub-VP nets were trained with ``labels = 999 t`` and predict the noise
  (``ScoreModel(net, sde, output="eps", time_label="t", label_scale=999)``).
* ``embedding_type="fourier"`` (NCSN++): ``labels`` are noise levels sigma > 0, embedded as
  Gaussian Fourier features of ``log(sigma)``; with ``scale_by_sigma`` the output is divided by
  sigma (the paper's VE nets output the score directly).

The paper's settings (see ``default_model_config``):

=========== ============ ======= ========= ================== ============== ============
 model       resblock     fir     embedding  progressive_input  scale_by_sigma  centered
=========== ============ ======= ========= ================== ============== ============
 DDPM++      biggan       False   positional none               False           True
 NCSN++      biggan       True    fourier    residual           True            False
=========== ============ ======= ========= ================== ============== ============

Parameters live in ``all_modules`` (an ``nn.ModuleList``) numbered exactly as in the paper's
code, plus a ``sigmas`` buffer (the geometric noise levels of ``num_scales`` discrete NCSN
steps), so released checkpoints load by name (``score_sde.interop``). The forward pass
consumes ``all_modules`` in construction order. Any square image size divisible by
``2 ** (len(ch_mult) - 1)`` works (e.g. 8x8 with ``ch_mult=(1, 2)``); channels_last inputs stay
channels_last; bf16 autocast and ``torch.compile`` are supported.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from . import layers

__all__ = ["NCSNpp", "geometric_sigmas"]

_SQRT_HALF = 1.0 / math.sqrt(2.0)
RESBLOCKS = ("ddpm", "biggan")
PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
EMBEDDINGS = ("fourier", "positional")


def geometric_sigmas(sigma_min: float, sigma_max: float, num_scales: int) -> torch.Tensor:
    """``num_scales`` noise levels from sigma_max down to sigma_min, geometrically spaced (float32)."""
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_scales, dtype=torch.float64)).float()


def _choice(name, value, options):
    v = str(value).lower()
    if v not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return v


def check_image_size(image_size: int, num_resolutions: int) -> int:
    """Validate that the U-Net can halve ``image_size`` ``num_resolutions - 1`` times."""
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    f = 2 ** (num_resolutions - 1)
    if image_size % f:
        raise ValueError(f"image_size={image_size} must be divisible by 2**(len(ch_mult)-1) = {f}; "
                         f"use a shorter ch_mult or pad the images")
    return image_size


def check_input(x: torch.Tensor, labels: torch.Tensor, num_channels: int, min_div: int) -> None:
    if x.ndim != 4 or x.shape[1] != num_channels:
        raise ValueError(f"x must have shape (B, {num_channels}, H, W), got {tuple(x.shape)}")
    if x.shape[-1] % min_div or x.shape[-2] % min_div:
        raise ValueError(f"image height and width must be divisible by {min_div}, got {tuple(x.shape[-2:])}")
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},) (one per sample), got {tuple(labels.shape)}")


class NCSNpp(nn.Module):
    """The DDPM++ / NCSN++ U-Net. Defaults are the paper's DDPM++ cont. CIFAR-10 model (61.8M params).

    Args:
        image_size: height = width of the training images (fixes where attention sits).
        num_channels: image channels C.
        nf: base width; level ``i`` has ``nf * ch_mult[i]`` channels; the time embedding has ``4 nf``.
        ch_mult: width multipliers, one per resolution (``len(ch_mult) - 1`` halvings).
        num_res_blocks: residual blocks per resolution on the way down (one more on the way up).
        attn_resolutions: resolutions (pixels) with a self-attention block.
        dropout: dropout rate inside residual blocks.
        resamp_with_conv: convolutions in the ``"ddpm"``-type up/down-sampling layers.
        conditional: use the time/noise embedding (False: an unconditional net).
        fir, fir_kernel: FIR (``(1, 3, 3, 1)``) resampling instead of nearest / mean pooling.
        skip_rescale: divide every residual sum by sqrt(2).
        resblock_type: ``"biggan"`` (resampling inside residual blocks) or ``"ddpm"``.
        progressive: output path, ``"none" | "output_skip" | "residual"``.
        progressive_input: input path, ``"none" | "input_skip" | "residual"``.
        progressive_combine: ``"sum" | "cat"`` for ``input_skip``.
        embedding_type: ``"positional"`` (labels = time steps) or ``"fourier"`` (labels = sigma).
        init_scale: initial scale of the last layer of each residual / attention branch (0: ~1e-10).
        fourier_scale: std of the random Fourier frequencies.
        scale_by_sigma: divide the output by sigma (labels for ``fourier``; ``sigmas[labels]`` else).
        nonlinearity: ``"swish" | "relu" | "elu" | "lrelu" | "gelu"``.
        centered: inputs are in [-1, 1]; if False the net maps [0, 1] inputs by ``2x - 1`` first.
        num_scales, sigma_min, sigma_max: fill the ``sigmas`` buffer (discrete NCSN noise levels).
        num_classes: class labels (0: none); a class embedding with a null class is added to the time
            embedding (:class:`~score_sde.models.layers.ClassEmbedding`); needs ``conditional``.
    """

    def __init__(self, image_size: int = 32, num_channels: int = 3, nf: int = 128,
                 ch_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 4,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.1, resamp_with_conv: bool = True,
                 conditional: bool = True, fir: bool = False, fir_kernel: Sequence[float] = (1, 3, 3, 1),
                 skip_rescale: bool = True, resblock_type: str = "biggan", progressive: str = "none",
                 progressive_input: str = "none", progressive_combine: str = "sum",
                 embedding_type: str = "positional", init_scale: float = 0.0, fourier_scale: float = 16.0,
                 scale_by_sigma: bool = False, nonlinearity: str = "swish", centered: bool = True,
                 num_scales: int = 1000, sigma_min: float = 0.01, sigma_max: float = 50.0, num_classes: int = 0):
        super().__init__()
        self.resblock_type = rb = _choice("resblock_type", resblock_type, RESBLOCKS)
        self.progressive = prog = _choice("progressive", progressive, PROGRESSIVE)
        self.progressive_input = prog_in = _choice("progressive_input", progressive_input, PROGRESSIVE_INPUT)
        self.embedding_type = emb = _choice("embedding_type", embedding_type, EMBEDDINGS)
        combine = _choice("progressive_combine", progressive_combine, ("sum", "cat"))
        if nf < 1 or num_res_blocks < 1 or len(ch_mult) < 1:
            raise ValueError("nf, num_res_blocks and len(ch_mult) must be >= 1")
        self.num_resolutions = L = len(ch_mult)
        check_image_size(image_size, L)
        self.min_div = 2 ** (L - 1)
        self.act = act = layers.get_act(nonlinearity)
        self.register_buffer("sigmas", geometric_sigmas(sigma_min, sigma_max, num_scales))
        self.nf, self.num_channels = nf, num_channels
        self.num_res_blocks = num_res_blocks
        self.conditional, self.centered = conditional, centered
        self.scale_by_sigma, self.skip_rescale = scale_by_sigma, skip_rescale
        resolutions = [image_size // 2 ** i for i in range(L)]
        self.attn_levels = [r in tuple(attn_resolutions) for r in resolutions]
        temb_dim = 4 * nf

        def resblock(in_ch, out_ch=None, up=False, down=False):
            if rb == "ddpm":
                return layers.ResnetBlockDDPM(act, in_ch, out_ch, temb_dim=temb_dim, dropout=dropout,
                                              skip_rescale=skip_rescale, init_scale=init_scale)
            return layers.ResnetBlockBigGAN(act, in_ch, out_ch, temb_dim=temb_dim, up=up, down=down,
                                            dropout=dropout, fir=fir, fir_kernel=fir_kernel,
                                            skip_rescale=skip_rescale, init_scale=init_scale)

        def attn(ch):
            return layers.AttnBlock(ch, skip_rescale=skip_rescale, init_scale=init_scale)

        mods = []
        # time / noise-level embedding
        if emb == "fourier":
            mods.append(layers.GaussianFourierProjection(embedding_size=nf, scale=fourier_scale))
            embed_dim = 2 * nf
        else:
            embed_dim = nf
        if conditional:
            mods += [layers.dense(embed_dim, temb_dim), layers.dense(temb_dim, temb_dim)]

        if prog == "output_skip":
            self.pyramid_upsample = layers.Upsample(num_channels, fir=fir, fir_kernel=fir_kernel, with_conv=False)
        if prog_in == "input_skip":
            self.pyramid_downsample = layers.Downsample(num_channels, fir=fir, fir_kernel=fir_kernel,
                                                        with_conv=False)

        # downsampling path
        pyr_in_ch = num_channels
        mods.append(layers.conv3x3(num_channels, nf))
        hs_c = [nf]
        in_ch = nf
        for lvl in range(L):
            for _ in range(num_res_blocks):
                out_ch = nf * ch_mult[lvl]
                mods.append(resblock(in_ch, out_ch))
                in_ch = out_ch
                if self.attn_levels[lvl]:
                    mods.append(attn(in_ch))
                hs_c.append(in_ch)
            if lvl != L - 1:
                if rb == "ddpm":
                    mods.append(layers.Downsample(in_ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    mods.append(resblock(in_ch, down=True))
                if prog_in == "input_skip":
                    mods.append(layers.Combine(pyr_in_ch, in_ch, method=combine))
                    if combine == "cat":
                        in_ch *= 2
                elif prog_in == "residual":
                    mods.append(layers.Downsample(pyr_in_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                    pyr_in_ch = in_ch
                hs_c.append(in_ch)

        # middle
        in_ch = hs_c[-1]
        mods += [resblock(in_ch), attn(in_ch), resblock(in_ch)]

        # upsampling path
        pyr_ch = 0
        for lvl in reversed(range(L)):
            for _ in range(num_res_blocks + 1):
                out_ch = nf * ch_mult[lvl]
                mods.append(resblock(in_ch + hs_c.pop(), out_ch))
                in_ch = out_ch
            if self.attn_levels[lvl]:
                mods.append(attn(in_ch))
            if prog != "none":
                if lvl == L - 1:
                    mods.append(layers.group_norm(in_ch))
                    if prog == "output_skip":
                        mods.append(layers.conv3x3(in_ch, num_channels, init_scale=init_scale))
                        pyr_ch = num_channels
                    else:
                        mods.append(layers.conv3x3(in_ch, in_ch, bias=True))
                        pyr_ch = in_ch
                elif prog == "output_skip":
                    mods.append(layers.group_norm(in_ch))
                    mods.append(layers.conv3x3(in_ch, num_channels, bias=True, init_scale=init_scale))
                    pyr_ch = num_channels
                else:
                    mods.append(layers.Upsample(pyr_ch, in_ch, with_conv=True, fir=fir, fir_kernel=fir_kernel))
                    pyr_ch = in_ch
            if lvl != 0:
                if rb == "ddpm":
                    mods.append(layers.Upsample(in_ch, with_conv=resamp_with_conv, fir=fir, fir_kernel=fir_kernel))
                else:
                    mods.append(resblock(in_ch, up=True))
        assert not hs_c

        if prog != "output_skip":
            mods.append(layers.group_norm(in_ch))
            mods.append(layers.conv3x3(in_ch, num_channels, init_scale=init_scale))
        self.all_modules = nn.ModuleList(mods)
        layers.unet_class_embedding(self, num_classes, conditional, temb_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, class_labels=None) -> torch.Tensor:
        """Network output for images ``x`` (B, C, H, W) at labels (B,); same shape and dtype as x.
        ``class_labels``: ``(B,)`` ints (``-1``: no label) or None, for ``num_classes > 0``."""
        check_input(x, labels, self.num_channels, self.min_div)
        in_dtype = x.dtype
        mods = iter(self.all_modules)
        act, L = self.act, self.num_resolutions

        # embedding
        if self.embedding_type == "fourier":
            used_sigmas = labels
            temb = next(mods)(torch.log(labels))
        else:
            temb = layers.timestep_embedding(labels, self.nf)
            used_sigmas = None
        if self.conditional:
            temb = next(mods)(temb)
            temb = next(mods)(act(temb))
        else:
            temb = None
        if self.num_classes:
            temb = temb + self.class_embed(class_labels, x.shape[0]).to(temb.dtype)
        elif class_labels is not None:
            raise ValueError("this network has no class labels (num_classes=0): build it with num_classes > 0")

        if not self.centered:
            x = 2 * x - 1.0

        # downsampling path
        pyramid_in = x if self.progressive_input != "none" else None
        hs = [next(mods)(x)]
        for lvl in range(L):
            for _ in range(self.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if self.attn_levels[lvl]:
                    h = next(mods)(h)
                hs.append(h)
            if lvl != L - 1:
                h = next(mods)(hs[-1]) if self.resblock_type == "ddpm" else next(mods)(hs[-1], temb)
                if self.progressive_input == "input_skip":
                    pyramid_in = self.pyramid_downsample(pyramid_in)
                    h = next(mods)(pyramid_in, h)
                elif self.progressive_input == "residual":
                    pyramid_in = next(mods)(pyramid_in)
                    pyramid_in = (pyramid_in + h) * _SQRT_HALF if self.skip_rescale else pyramid_in + h
                    h = pyramid_in
                hs.append(h)

        # middle
        h = hs[-1]
        h = next(mods)(h, temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)

        # upsampling path
        pyramid = None
        for lvl in reversed(range(L)):
            for _ in range(self.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if self.attn_levels[lvl]:
                h = next(mods)(h)
            if self.progressive != "none":
                if lvl == L - 1:
                    norm, conv = next(mods), next(mods)
                    pyramid = conv(act(norm(h)))
                elif self.progressive == "output_skip":
                    norm, conv = next(mods), next(mods)
                    pyramid = self.pyramid_upsample(pyramid) + conv(act(norm(h)))
                else:
                    pyramid = next(mods)(pyramid)
                    pyramid = (pyramid + h) * _SQRT_HALF if self.skip_rescale else pyramid + h
                    h = pyramid
            if lvl != 0:
                h = next(mods)(h) if self.resblock_type == "ddpm" else next(mods)(h, temb)

        if self.progressive == "output_skip":
            h = pyramid
        else:
            norm, conv = next(mods), next(mods)
            h = conv(act(norm(h)))

        if self.scale_by_sigma:
            if used_sigmas is None:
                idx = labels.long().clamp(0, self.sigmas.shape[0] - 1)
                used_sigmas = self.sigmas[idx]
            h = h / used_sigmas.reshape(-1, 1, 1, 1).to(h.dtype)
        return h.to(in_dtype)

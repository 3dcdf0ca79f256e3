"""The DDPM U-Net (Ho et al. 2020), as used by the score-SDE paper's "DDPM" models.

``net(x, labels) -> tensor shaped like x``; ``x`` ``(B, C, H, W)``, ``labels`` ``(B,)`` float time
steps fed to the sinusoidal embedding (the paper's continuous VP DDPM used ``labels = 999 t`` and
predicts the noise: ``ScoreModel(net, sde, output="eps", time_label="t", label_scale=999)``).

Parameters sit in ``all_modules`` numbered as in the paper's code, plus the ``sigmas`` buffer,
so its released checkpoints load by name. Unlike the paper's code, ``conditional=False`` works
(an unconditional net) and any square image size divisible by ``2 ** (len(ch_mult) - 1)`` works.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from . import layers
from .ncsnpp import check_image_size, check_input, geometric_sigmas

__all__ = ["DDPM"]


class DDPM(nn.Module):
    """DDPM U-Net. Defaults are the paper's CIFAR-10 DDPM (35.2M parameters).

    Args:
        image_size, num_channels: image height = width, channels C.
        nf: base width (level ``i`` has ``nf * ch_mult[i]`` channels; embedding ``4 nf``).
        ch_mult, num_res_blocks, attn_resolutions, dropout: as in ``NCSNpp``.
        resamp_with_conv: 3x3 convolutions after nearest upsampling / as strided downsampling.
        conditional: use the time embedding.
        scale_by_sigma: divide the output by ``sigmas[labels]`` (NCSN-style training).
        nonlinearity: activation name (``"swish"``).
        centered: inputs are in [-1, 1]; if False the net maps [0, 1] inputs by ``2x - 1``.
        num_scales, sigma_min, sigma_max: fill the ``sigmas`` buffer.
        num_classes: class labels (0: none); a class embedding with a null class is added to the time
            embedding (:class:`~score_sde.models.layers.ClassEmbedding`); needs ``conditional``.
    """

    def __init__(self, image_size: int = 32, num_channels: int = 3, nf: int = 128,
                 ch_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.1, resamp_with_conv: bool = True,
                 conditional: bool = True, scale_by_sigma: bool = False, nonlinearity: str = "swish",
                 centered: bool = True, num_scales: int = 1000, sigma_min: float = 0.01, sigma_max: float = 50.0, num_classes: int = 0):
        super().__init__()
        if nf < 1 or num_res_blocks < 1 or len(ch_mult) < 1:
            raise ValueError("nf, num_res_blocks and len(ch_mult) must be >= 1")
        self.num_resolutions = L = len(ch_mult)
        check_image_size(image_size, L)
        self.min_div = 2 ** (L - 1)
        self.act = act = layers.get_act(nonlinearity)
        self.register_buffer("sigmas", geometric_sigmas(sigma_min, sigma_max, num_scales))
        self.nf, self.num_channels, self.num_res_blocks = nf, num_channels, num_res_blocks
        self.conditional, self.centered, self.scale_by_sigma = conditional, centered, scale_by_sigma
        resolutions = [image_size // 2 ** i for i in range(L)]
        self.attn_levels = [r in tuple(attn_resolutions) for r in resolutions]
        temb_dim = 4 * nf

        def resblock(in_ch, out_ch=None):
            return layers.ResnetBlockDDPM(act, in_ch, out_ch, temb_dim=temb_dim, dropout=dropout)

        mods = []
        if conditional:
            mods += [layers.dense(nf, temb_dim), layers.dense(temb_dim, temb_dim)]
        mods.append(layers.conv3x3(num_channels, nf))
        hs_c = [nf]
        in_ch = nf
        for lvl in range(L):
            for _ in range(num_res_blocks):
                out_ch = nf * ch_mult[lvl]
                mods.append(resblock(in_ch, out_ch))
                in_ch = out_ch
                if self.attn_levels[lvl]:
                    mods.append(layers.AttnBlock(in_ch))
                hs_c.append(in_ch)
            if lvl != L - 1:
                mods.append(layers.Downsample(in_ch, with_conv=resamp_with_conv))
                hs_c.append(in_ch)
        in_ch = hs_c[-1]
        mods += [resblock(in_ch), layers.AttnBlock(in_ch), resblock(in_ch)]
        for lvl in reversed(range(L)):
            for _ in range(num_res_blocks + 1):
                out_ch = nf * ch_mult[lvl]
                mods.append(resblock(in_ch + hs_c.pop(), out_ch))
                in_ch = out_ch
            if self.attn_levels[lvl]:
                mods.append(layers.AttnBlock(in_ch))
            if lvl != 0:
                mods.append(layers.Upsample(in_ch, with_conv=resamp_with_conv))
        assert not hs_c
        mods.append(layers.group_norm(in_ch))
        mods.append(layers.conv3x3(in_ch, num_channels, init_scale=0.0))
        self.all_modules = nn.ModuleList(mods)
        layers.unet_class_embedding(self, num_classes, conditional, temb_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, class_labels=None) -> torch.Tensor:
        """Network output for images ``x`` (B, C, H, W) at labels (B,); same shape and dtype as x.
        ``class_labels``: ``(B,)`` ints (``-1``: no label) or None, for ``num_classes > 0``."""
        check_input(x, labels, self.num_channels, self.min_div)
        in_dtype = x.dtype
        mods = iter(self.all_modules)
        act, L = self.act, self.num_resolutions
        if self.conditional:
            temb = next(mods)(layers.timestep_embedding(labels, self.nf))
            temb = next(mods)(act(temb))
        else:
            temb = None
        if self.num_classes:
            temb = temb + self.class_embed(class_labels, x.shape[0]).to(temb.dtype)
        elif class_labels is not None:
            raise ValueError("this network has no class labels (num_classes=0): build it with num_classes > 0")
        h = x if self.centered else 2 * x - 1.0

        hs = [next(mods)(h)]
        for lvl in range(L):
            for _ in range(self.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if self.attn_levels[lvl]:
                    h = next(mods)(h)
                hs.append(h)
            if lvl != L - 1:
                hs.append(next(mods)(hs[-1]))

        h = hs[-1]
        h = next(mods)(h, temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)

        for lvl in reversed(range(L)):
            for _ in range(self.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if self.attn_levels[lvl]:
                h = next(mods)(h)
            if lvl != 0:
                h = next(mods)(h)

        norm, conv = next(mods), next(mods)
        h = conv(act(norm(h)))
        if self.scale_by_sigma:
            idx = labels.long().clamp(0, self.sigmas.shape[0] - 1)
            h = h / self.sigmas[idx].reshape(-1, 1, 1, 1).to(h.dtype)
        return h.to(in_dtype)

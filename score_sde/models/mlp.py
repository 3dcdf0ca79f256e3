"""A residual MLP backbone for vectors of any event shape (2-D toy data, tabular data, 8x8 digits).

``net(x, labels) -> tensor shaped like x`` with ``x`` ``(B, *event_shape)`` (flattened inside) and
``labels`` ``(B,)``; with ``num_classes > 0`` also ``net(x, labels, class_labels)`` (``(B,)`` ints,
``-1`` or ``None`` for the null class of classifier-free guidance). Architecture (pre-norm residual blocks, the time embedding added in every
block)::

    e  = TimeMLP(embed(labels)) [+ ClassEmbedding(class_labels)]   (B, hidden)
    h  = Linear(x.flatten() [, sin(2^n pi x), cos(2^n pi x) for n in input_fourier]
                [, (x - mean) / std, mean, log std with input_contrast])             (B, hidden)
    h += Linear(drop(act(Linear(act(norm(h))) + Dense(e))))    x num_blocks
    out = Linear(act(norm(h))).reshape(x.shape)
    out_i += Head(clamp(x_i), Linear(act(norm(h)))_i, e)   per element i, with pixel_head > 0 (one
                                                     small MLP shared by all elements; see MLP's pixel_head)

The last layer of each block and the output layer start at (near) zero, so the initial net is
the zero function and every block starts as the identity, which trains fast and stably.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import nn

from . import layers

__all__ = ["MLP"]


class MLP(nn.Module):
    """Residual MLP score backbone.

    Args:
        event_shape: shape of one sample (an int D for vectors, ``(C, H, W)`` for images, ...).
        hidden: width of the hidden layers.
        num_blocks: residual blocks.
        embedding_type: ``"fourier"`` (Gaussian random features of the label, for labels of
            order 1 such as t in [0, 1] or log-sigma) or ``"positional"`` (DDPM's sinusoidal
            embedding, for labels like ``999 t``).
        embedding_dim: size of the raw label embedding (even).
        fourier_scale: std of the Fourier frequencies (labels multiplied by 2 pi W).
        layer_norm: LayerNorm before each block (and the output layer); False: identity.
        dropout: dropout rate inside the blocks.
        nonlinearity: activation name (``"swish"`` = SiLU).
        log_labels: embed ``log(labels)`` (for sigma labels of VE models).
        num_classes: class labels the net takes (0: none); adds a class embedding with a null
            class (:class:`score_sde.models.layers.ClassEmbedding`).
        pixel_head: width of a per-element head (0: none, the default). With ``pixel_head = w``
            the trunk also emits ``pixel_context`` features per element, and one small MLP shared
            by all elements maps ``(x_i, context_i, time)`` to a correction added to output ``i``
            (two hidden layers of width ``w``). It gives the net the per-pixel nonlinearity of
            an image denoiser at small noise (a pixel whose ink-or-background is decided is
            pulled into its grey level by a function of that pixel alone), which a dense MLP
            otherwise learns 64 times over.
        pixel_context: context features per element for the head (with ``pixel_head > 0``).
        pixel_head_clip: the head sees ``x_i`` clamped to ``[-c, c]`` (``0``: unclamped, how runs
            trained before this argument existed load). With everything else bounded (the trunk's
            output passes a LayerNorm) the net's output is then bounded in x, so the score of an
            EDM-preconditioned net points back towards the data far from it. Unclamped, the head
            extrapolates linearly in ``x_i``: a probability-flow trajectory that leaves the data's
            range (the likelihood's forward ODE expands where the density is sharp) meets a score
            that grows with x instead and runs away (measured: a few test patches at 1e4-1e6
            bits/dim, the mean unusable). The default 3 covers the EDM-preconditioned input
            ``c_in x`` of data in [-1, 1] with ``sigma_data >= 1/3`` (digits 0.71, photo patches
            about 0.45); raise it to about ``1 / sigma_data`` for data of lower contrast.
        input_fourier: exponents n (ints, or a string such as ``"4,5,6,7"``; empty: off) of input
            Fourier features: ``sin(2^n pi x)`` and ``cos(2^n pi x)`` of every input value are fed
            to the first layer next to ``x`` (Kingma et al. 2021, "Variational Diffusion Models").
            They make deviations as small as 2^-n visible at order one, which an MLP otherwise
            resolves poorly at the smallest noise levels (8-bit data: levels 2^-7 apart in [-1, 1]).
        input_contrast: also feed the sample's contrast-normalised input ``(x - mean) / std``, its
            mean and ``log std`` (over all elements) to the first layer, and ``(x_i - mean) / std``
            and ``log std`` to the per-element head. A LayerNorm-ed MLP otherwise has to infer a
            sample's contrast, which decides how hard a denoiser at small noise may smooth it (a
            flat photo patch, std ~1 grey level, against an edge). Measured on 8x8 photo patches
            with the head: 3.747 -> 3.409 bits/dim on 100 held-out patches (docs/training.md, round 4).
    """

    def __init__(self, event_shape: Union[int, Sequence[int]] = 2, hidden: int = 256, num_blocks: int = 4,
                 embedding_type: str = "fourier", embedding_dim: int = 128, fourier_scale: float = 16.0,
                 layer_norm: bool = True, dropout: float = 0.0, nonlinearity: str = "swish",
                 log_labels: bool = False, num_classes: int = 0, pixel_head: int = 0, pixel_context: int = 4,
                 pixel_head_clip: float = 3.0, input_fourier: Union[str, Sequence[int]] = (),
                 input_contrast: bool = False):
        super().__init__()
        shape = (int(event_shape),) if isinstance(event_shape, int) else tuple(int(s) for s in event_shape)
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"event_shape must be a positive int or a tuple of positive ints, got {event_shape!r}")
        if hidden < 1 or num_blocks < 0:
            raise ValueError(f"hidden must be >= 1 and num_blocks >= 0, got hidden={hidden}, num_blocks={num_blocks}")
        emb = str(embedding_type).lower()
        if emb not in ("fourier", "positional"):
            raise ValueError(f"embedding_type must be 'fourier' or 'positional', got {embedding_type!r}")
        if embedding_dim < 4 or embedding_dim % 2:
            raise ValueError(f"embedding_dim must be an even int >= 4, got {embedding_dim}")
        self.event_shape = shape
        self.dim = dim = math.prod(shape)
        self.embedding_type, self.embedding_dim, self.log_labels = emb, embedding_dim, log_labels
        self.act = layers.get_act(nonlinearity)
        if emb == "fourier":
            self.fourier = layers.GaussianFourierProjection(embedding_dim // 2, scale=fourier_scale)
        self.time_mlp = nn.Sequential(layers.dense(embedding_dim, hidden), layers.get_act(nonlinearity),
                                      layers.dense(hidden, hidden))
        self.input_fourier = _exponents(input_fourier)
        self.register_buffer("_freqs", math.pi * 2.0 ** torch.tensor(self.input_fourier, dtype=torch.float32),
                             persistent=False)
        self.input_contrast = bool(input_contrast)
        extra = dim + 2 if self.input_contrast else 0
        self.input = layers.dense(dim * (1 + 2 * len(self.input_fourier)) + extra, hidden)
        norm = (lambda: nn.LayerNorm(hidden)) if layer_norm else nn.Identity
        self.blocks = nn.ModuleList(_Block(hidden, norm(), self.act, dropout) for _ in range(num_blocks))
        self.out_norm = norm()
        self.output = layers.dense(hidden, dim, init_scale=0.0)
        self.num_classes = layers.check_num_classes(num_classes)
        if self.num_classes:
            self.class_embed = layers.ClassEmbedding(self.num_classes, hidden)
        if pixel_head < 0 or (pixel_head and pixel_context < 0):
            raise ValueError(f"pixel_head and pixel_context must be >= 0, got {pixel_head}, {pixel_context}")
        if not math.isfinite(float(pixel_head_clip)) or float(pixel_head_clip) < 0:
            raise ValueError(f"pixel_head_clip must be a finite number >= 0 (0: unclamped), got {pixel_head_clip!r}")
        self.pixel_head, self.pixel_context = int(pixel_head), int(pixel_context)
        self.pixel_head_clip = float(pixel_head_clip)
        if self.pixel_head:
            w, k = self.pixel_head, self.pixel_context
            if k:
                self.head_context = layers.dense(hidden, dim * k)
            self.head_in = layers.dense(1 + k + (2 if self.input_contrast else 0), w)
            self.head_temb = layers.dense(hidden, 2 * w)
            self.head_mid = layers.dense(w, w)
            self.head_out = layers.dense(w, 1, init_scale=0.0)

    def embed(self, labels: torch.Tensor) -> torch.Tensor:
        """Time embedding ``(B,) -> (B, hidden)``."""
        lab = torch.log(labels) if self.log_labels else labels
        e = self.fourier(lab) if self.embedding_type == "fourier" else layers.timestep_embedding(lab, self.embedding_dim)
        return self.time_mlp(e)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, class_labels=None) -> torch.Tensor:
        """Output shaped and typed like ``x`` (B, *event_shape). ``class_labels``: ``(B,)`` ints
        (``-1``: no label) or None (all null) for a net with ``num_classes > 0``."""
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.event_shape))}), got {tuple(x.shape)}")
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels must have shape ({x.shape[0]},) (one per sample), got {tuple(labels.shape)}")
        e = self.embed(labels)
        if self.num_classes:
            e = e + self.class_embed(class_labels, x.shape[0]).to(e.dtype)
        elif class_labels is not None:
            raise ValueError("this network has no class labels (num_classes=0): build it with num_classes > 0")
        e = self.act(e)
        v = flat = x.reshape(x.shape[0], self.dim)
        if self.input_fourier:
            a = (v.unsqueeze(-1) * self._freqs.to(v.dtype)).flatten(1)     # (B, dim * len(input_fourier))
            v = torch.cat([v, torch.sin(a), torch.cos(a)], dim=1)
        if self.input_contrast:
            dev, mean, log_sd = _contrast(flat)
            v = torch.cat([v, dev, mean, log_sd], dim=1)
        h = self.input(v)
        for block in self.blocks:
            h = block(h, e)
        hn = self.act(self.out_norm(h))
        out = self.output(hn)
        if self.pixel_head:
            xe = flat.unsqueeze(-1)
            if self.pixel_head_clip:
                xe = xe.clamp(-self.pixel_head_clip, self.pixel_head_clip)
            if self.input_contrast:
                xe = torch.cat([xe, dev.unsqueeze(-1), log_sd.unsqueeze(-1).expand_as(xe)], -1)
            out = out + self._head(xe.to(out.dtype), hn, e)
        return out.reshape(x.shape).to(x.dtype)

    def _head(self, xe: torch.Tensor, hn: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """The per-element head: ``(B, dim, 1)`` inputs ``x_i`` (``forward`` clamps them to
        ``pixel_head_clip``; with ``input_contrast`` ``(B, dim, 3)``: also ``x_i``'s deviation and the
        log std, see :func:`_contrast`), trunk features ``hn`` and time embedding ``e`` (both
        ``(B, hidden)``) -> ``(B, dim)``."""
        if self.pixel_context:
            xe = torch.cat([xe, self.head_context(hn).reshape(xe.shape[0], self.dim, self.pixel_context)], -1)
        t1, t2 = self.head_temb(e).unsqueeze(1).chunk(2, dim=-1)
        z = self.act(self.head_in(xe) + t1)
        z = self.act(self.head_mid(z) + t2)
        return self.head_out(z).squeeze(-1)


def _contrast(v: torch.Tensor):
    """Contrast features of ``v`` ``(B, D)``: the deviations from the sample's mean in units of its std
    ``(B, D)`` (bounded by sqrt(D)), the mean ``(B, 1)`` and ``log std`` ``(B, 1)``, clamped to
    [-7, 2] (the std floored at 1e-3), so that nothing fed to the head grows with x (the trunk's
    LayerNorm bounds what the mean does there)."""
    mean = v.mean(1, keepdim=True)
    sd = (v - mean).square().mean(1, keepdim=True).add(1e-6).sqrt()
    return (v - mean) / sd, mean, torch.log(sd).clamp(-7.0, 2.0)


def _exponents(spec) -> tuple:
    """``input_fourier`` as a tuple of ints: ``"4,5"`` / ``(4, 5)`` -> ``(4, 5)``; ``""`` / ``()`` -> ``()``."""
    if isinstance(spec, str):
        spec = [p for p in spec.replace(" ", "").split(",") if p]
    try:
        out = tuple(int(n) for n in spec)
    except (TypeError, ValueError):
        raise ValueError(f"input_fourier must be ints or a string like '4,5,6,7', got {spec!r}") from None
    if any(n < 0 or n > 12 for n in out):
        raise ValueError(f"input_fourier exponents must lie in 0..12, got {out}")
    return out


class _Block(nn.Module):
    def __init__(self, hidden: int, norm: nn.Module, act: nn.Module, dropout: float):
        super().__init__()
        self.norm, self.act = norm, act
        self.fc1 = layers.dense(hidden, hidden)
        self.temb = layers.dense(hidden, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = layers.dense(hidden, hidden, init_scale=0.0)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        r = self.fc1(self.act(self.norm(h))) + self.temb(e)
        return h + self.fc2(self.drop(self.act(r)))

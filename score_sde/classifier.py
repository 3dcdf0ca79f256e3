"""A noise-conditional classifier ``p_t(y | x_t)`` on the same SDE as a score model, for
classifier guidance (:func:`score_sde.conditional.classifier_guidance`).

:class:`NoiseClassifier` is ``classifier(x, t) -> (B, num_classes)`` logits: a residual MLP on the
flattened input with a Fourier embedding of EDM's noise label ``log(sigma_t / alpha_t) / 4`` added
in every block (the same embedding scheme as :class:`score_sde.models.MLP`). The input is scaled by
``1 / sqrt(alpha^2 sigma_data^2 + sigma^2)`` first, so the network sees unit-scale inputs at every t.

:func:`train_classifier` trains it by cross-entropy on noised data ``x_t = alpha x0 + sigma z`` with
t uniform on ``[eps, T]``: one seeded loop (Adam, EMA), no run-directory side effects.
:func:`save_classifier` / :func:`load_classifier` write and read ``{"state_dict", "config"}`` with
``weights_only=True``.

>>> import torch, score_sde
>>> from score_sde.classifier import NoiseClassifier
>>> clf = NoiseClassifier(score_sde.VPSDE(), (1, 8, 8), num_classes=10, hidden=32, num_blocks=1)
>>> clf(torch.zeros(4, 1, 8, 8), torch.full((4,), 0.5)).shape
torch.Size([4, 10])
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch
from torch import nn

from .models import layers
from .sde import SDE
from .utils import append_dims, atomic_write

__all__ = ["NoiseClassifier", "classifier_loss", "train_classifier", "classifier_accuracy", "save_classifier",
           "load_classifier"]


class NoiseClassifier(nn.Module):
    """``classifier(x, t) -> (B, num_classes)`` logits of ``p_t(y | x_t)`` under ``sde``.

    Args:
        sde: the forward SDE (its alpha(t), sigma(t) scale the input and give the noise label).
        event_shape: shape of one input, e.g. ``(1, 8, 8)``.
        num_classes: number of classes.
        hidden, num_blocks, dropout: width, residual blocks and dropout of the MLP.
        embedding_dim, fourier_scale: the Fourier embedding of the noise label.
        sigma_data: the data std used to normalise the input scale.
    """

    def __init__(self, sde: SDE, event_shape: Union[int, Sequence[int]], num_classes: int, hidden: int = 256,
                 num_blocks: int = 3, dropout: float = 0.1, embedding_dim: int = 64, fourier_scale: float = 8.0,
                 sigma_data: float = 0.5):
        super().__init__()
        shape = (int(event_shape),) if isinstance(event_shape, int) else tuple(int(s) for s in event_shape)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.sde, self.event_shape, self.num_classes = sde, shape, num_classes
        self.sigma_data = float(sigma_data)
        self.config = {"event_shape": list(shape), "num_classes": num_classes, "hidden": hidden,
                       "num_blocks": num_blocks, "dropout": dropout, "embedding_dim": embedding_dim,
                       "fourier_scale": fourier_scale, "sigma_data": sigma_data}
        dim = math.prod(shape)
        self.act = nn.SiLU()
        self.fourier = layers.GaussianFourierProjection(embedding_dim // 2, scale=fourier_scale)
        self.temb = nn.Sequential(layers.dense(embedding_dim, hidden), nn.SiLU(), layers.dense(hidden, hidden))
        self.input = layers.dense(dim, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, dropout) for _ in range(num_blocks))
        self.norm = nn.LayerNorm(hidden)
        self.output = layers.dense(hidden, num_classes, init_scale=0.0)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for ``x`` ``(B, *event_shape)`` at times ``t`` ``(B,)``."""
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.event_shape))}), got {tuple(x.shape)}")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        alpha, sigma = self.sde.alpha(t), self.sde.sigma(t)
        scale = torch.rsqrt(alpha ** 2 * self.sigma_data ** 2 + sigma ** 2)
        h = self.input((x * append_dims(scale, x.ndim)).reshape(x.shape[0], -1))
        e = self.act(self.temb(self.fourier(0.25 * torch.log(sigma / alpha))))
        for block in self.blocks:
            h = block(h, e)
        return self.output(self.act(self.norm(h)))


class _Block(nn.Module):
    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = layers.dense(hidden, hidden)
        self.emb = layers.dense(hidden, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = layers.dense(hidden, hidden, init_scale=0.0)
        self.act = nn.SiLU()

    def forward(self, h, e):
        return h + self.fc2(self.drop(self.act(self.fc1(self.act(self.norm(h))) + self.emb(e))))


def classifier_loss(classifier: NoiseClassifier, x0: torch.Tensor, y: torch.Tensor, eps: float = 1e-3,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per-sample cross-entropy ``(B,)`` of ``classifier(alpha x0 + sigma z, t)`` against ``y``,
    t uniform on ``[eps, T]``."""
    sde = classifier.sde
    t = eps + (sde.T - eps) * torch.rand(x0.shape[0], device=x0.device, dtype=x0.dtype, generator=generator)
    z = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    xt = append_dims(sde.alpha(t), x0.ndim) * x0 + append_dims(sde.sigma(t), x0.ndim) * z
    return nn.functional.cross_entropy(classifier(xt, t), y, reduction="none")


def train_classifier(classifier: NoiseClassifier, x: torch.Tensor, y: torch.Tensor, n_steps: int = 2000,
                     batch_size: int = 128, lr: float = 1e-3, ema_rate: float = 0.995, seed: int = 0,
                     eps: float = 1e-3, transform=None, device=None, log=None) -> NoiseClassifier:
    """Train ``classifier`` in place on model-space data ``x`` ``(N, ...)`` with labels ``y`` ``(N,)``.

    Each step draws a batch (one permutation per epoch), applies ``transform(x, generator)`` (e.g.
    dequantisation) if given, and takes an Adam step on :func:`classifier_loss`. Returns the EMA
    copy of the classifier (eval mode, no grads). ``log(step, loss)``: called every 100 steps.
    All randomness comes from ``seed``.
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be an int >= 0, got {n_steps!r}")
    if y.shape != (x.shape[0],) or y.is_floating_point():
        raise ValueError(f"y must be integer labels of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
    if int(y.min()) < 0 or int(y.max()) >= classifier.num_classes:
        raise ValueError(f"labels must lie in [0, {classifier.num_classes}), got [{int(y.min())}, {int(y.max())}]")
    device = torch.device(device or "cpu")
    classifier.to(device).train()
    ema = copy.deepcopy(classifier).requires_grad_(False)
    opt = torch.optim.Adam(classifier.parameters(), lr=lr)
    g = torch.Generator(device=device).manual_seed(int(seed))
    gcpu = torch.Generator().manual_seed(int(seed))
    x, y = x.to(device), y.to(device)
    n, b = x.shape[0], min(int(batch_size), x.shape[0])
    perm, k = torch.randperm(n, generator=gcpu), 0
    for step in range(n_steps):
        if k + b > n:
            perm, k = torch.randperm(n, generator=gcpu), 0
        idx = perm[k:k + b].to(device)
        k += b
        xb = x[idx] if transform is None else transform(x[idx], g)
        loss = classifier_loss(classifier, xb, y[idx], eps=eps, generator=g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), classifier.parameters()):
                pe.lerp_(p, 1.0 - ema_rate)
        if log is not None and ((step + 1) % 100 == 0 or step + 1 == n_steps):
            log(step + 1, float(loss.detach()))
    return ema.eval()


@torch.no_grad()
def classifier_accuracy(classifier: NoiseClassifier, x0: torch.Tensor, y: torch.Tensor, t: float,
                        seed: int = 0) -> float:
    """Accuracy of ``classifier`` on ``x0`` noised to time ``t`` (one fixed noise draw)."""
    g = torch.Generator(device=x0.device).manual_seed(seed)
    tt = torch.full((x0.shape[0],), float(t), device=x0.device, dtype=x0.dtype)
    sde = classifier.sde
    xt = append_dims(sde.alpha(tt), x0.ndim) * x0 + append_dims(sde.sigma(tt), x0.ndim) * torch.randn(
        x0.shape, generator=g, device=x0.device, dtype=x0.dtype)
    return float((classifier.eval()(xt, tt).argmax(1) == y).float().mean())


def save_classifier(classifier: NoiseClassifier, path, extra: Optional[Dict] = None) -> Path:
    """Write ``{"state_dict", "config", **extra}`` to ``path`` atomically (torch.save)."""
    obj = {"state_dict": {k: v.detach().cpu() for k, v in classifier.state_dict().items()},
           "config": dict(classifier.config), **(extra or {})}
    return atomic_write(path, "wb", lambda f: torch.save(obj, f))


def load_classifier(path, sde: SDE, device=None) -> NoiseClassifier:
    """Read a :func:`save_classifier` file (``weights_only=True``, strict keys) for ``sde``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no classifier checkpoint at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        cfg = dict(obj["config"])
        state = obj["state_dict"]
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one clear reason
        raise ValueError(f"{path} is not a classifier checkpoint written by score-sde train-classifier ({e})") from None
    cfg["event_shape"] = tuple(cfg["event_shape"])
    clf = NoiseClassifier(sde, **cfg)
    clf.load_state_dict(state, strict=True)
    return clf.to(device or "cpu").eval().requires_grad_(False)

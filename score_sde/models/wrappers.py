"""Turn a network's output into a score, a noise prediction or a denoiser.

Backbones (``score_sde.models``) map ``net(x, labels) -> tensor shaped like x`` with ``labels``
one float per sample, ``(B,)``. What the output means and which label the network sees is
decided here, outside the network:

``output``
    ``"score"``: the score itself; ``"eps"``: the noise z (score = ``-eps / sigma``);
    ``"x0"``: the clean data (score = ``(alpha x0 - x) / sigma^2``); ``"edm"``: EDM's
    preconditioned denoiser (Karras et al. 2022) on ``x / alpha`` at noise ``sigma / alpha``,
    with ``c_skip, c_out, c_in, c_noise = log(sigma_edm) / 4``; ``"v"``: v-prediction
    ``v = alpha eps - sigma x0`` (x0 = ``(alpha x - sigma v) / (alpha^2 + sigma^2)``; for VP
    schedules ``v = dx_t / dphi`` with ``alpha = cos phi``, ``sigma = sin phi``; elsewhere it is
    ``r d(x_t / r) / dphi`` with ``r = sqrt(alpha^2 + sigma^2)``, ``tan phi = sigma / alpha``);
    ``"flow"``: the flow velocity ``u = alpha'(t) x0 + sigma'(t) eps`` (rectified flow / flow
    matching), which is the probability-flow drift, so score = ``2 (f x - u) / g^2``.
    Each converts exactly to a score for every schedule.
``time_label``
    ``"t"``: the continuous time ``label_scale * t`` (the paper's VP nets use ``label_scale=999``);
    ``"timestep"``: DDPM's integer-step label ``N t / T - 1`` (a float between grid points);
    ``"sigma"`` / ``"log_sigma"``: the marginal std or its log (NCSN-style conditioning);
    ``"edm"``: EDM's ``c_noise``; or any callable ``(t) -> (B,)``.

A :class:`ScoreModel` is itself a plain ``score_fn(x, t)``, so it plugs into every sampler,
likelihood and loss of the package. Built on a backbone with class labels (``net.num_classes > 0``)
it is also ``score_fn(x, t, label)`` with ``label`` ``(B,)`` ints (``-1``: no label) or None (the
unconditional score of a net trained with label dropout): the form
:func:`score_sde.conditional.classifier_free_guidance` takes.
"""
from __future__ import annotations

import math
from typing import Callable, Union

import torch
from torch import nn

from ..sde import SDE
from ..utils import append_dims

__all__ = ["ScoreModel", "OUTPUTS", "TIME_LABELS"]

OUTPUTS = ("score", "eps", "x0", "edm", "v", "flow")
TIME_LABELS = ("t", "timestep", "sigma", "log_sigma", "edm")


class ScoreModel(nn.Module):
    """``score_fn(x, t)`` built from a backbone ``net(x, labels)`` and an SDE.

    Args:
        net: the backbone; ``net(x, labels)`` with ``x (B, ...)``, ``labels (B,)``.
        sde: the forward SDE whose alpha(t), sigma(t) define the parameterisation.
        output: what the net predicts, one of ``OUTPUTS``.
        time_label: how t becomes the net's label, one of ``TIME_LABELS`` or a callable.
            Defaults to ``"edm"`` for ``output="edm"`` and ``"t"`` otherwise.
        label_scale: multiplies the label for ``time_label="t"``.
        sigma_data: EDM's data std (``output="edm"`` only).

    Attributes:
        num_classes: the backbone's number of class labels (0: unconditional).
    """

    def __init__(self, net: nn.Module, sde: SDE, output: str = "eps",
                 time_label: Union[str, Callable, None] = None, label_scale: float = 1.0, sigma_data: float = 0.5):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if time_label is None:
            time_label = "edm" if output == "edm" else "t"
        if not callable(time_label) and time_label not in TIME_LABELS:
            raise ValueError(f"time_label must be one of {TIME_LABELS} or a callable, got {time_label!r}")
        try:
            label_scale, sigma_data = float(label_scale), float(sigma_data)
        except (TypeError, ValueError):
            raise ValueError(f"label_scale and sigma_data must be numbers, got {label_scale!r}, {sigma_data!r}") from None
        if not math.isfinite(label_scale) or label_scale == 0:
            raise ValueError(f"label_scale must be a finite non-zero number, got {label_scale!r} "
                             "(1 for continuous-time nets, 999 for the paper's DDPM nets)")
        if not (math.isfinite(sigma_data) and sigma_data > 0):
            raise ValueError(f"sigma_data must be a positive finite number, got {sigma_data!r}")
        self.net = net
        self.sde = sde
        self.output = output
        self.time_label = time_label
        self.label_scale = label_scale
        self.sigma_data = sigma_data
        self.num_classes = int(getattr(net, "num_classes", 0) or 0)

    def labels(self, t: torch.Tensor) -> torch.Tensor:
        """The conditioning label the backbone sees at times t, ``(B,)``."""
        tl = self.time_label
        if callable(tl):
            return tl(t)
        if tl == "t":
            return t * self.label_scale
        if tl == "timestep":
            return self.sde.t_to_timestep(t)
        if tl == "sigma":
            return self.sde.sigma(t)
        if tl == "log_sigma":
            return torch.log(self.sde.sigma(t))
        return 0.25 * torch.log(self.sde.sigma(t) / self.sde.alpha(t))  # edm c_noise

    def _net(self, x, t, label):
        if self.num_classes:
            return self.net(x, self.labels(t), label)
        if label is not None:
            raise ValueError("this model is unconditional (it has no class labels): it cannot take a label; "
                             "train a class-conditional model (config.model.num_classes) or use a classifier")
        return self.net(x, self.labels(t))

    def _raw(self, x, t, label=None):
        """Network output and the per-sample alpha, sigma used to read it."""
        alpha, sigma = self.sde.alpha(t), self.sde.sigma(t)
        if self.output == "edm":
            sd2 = self.sigma_data ** 2
            s_edm = sigma / alpha
            c_in = 1.0 / torch.sqrt(s_edm ** 2 + sd2)
            x_scaled = x / append_dims(alpha, x.ndim)
            out = self._check(self._net(x_scaled * append_dims(c_in, x.ndim), t, label), x)
            c_skip = sd2 / (s_edm ** 2 + sd2)
            c_out = s_edm * self.sigma_data * c_in
            x0 = append_dims(c_skip, x.ndim) * x_scaled + append_dims(c_out, x.ndim) * out
            return x0, alpha, sigma
        return self._check(self._net(x, t, label), x), alpha, sigma

    def _check(self, out, x: torch.Tensor) -> torch.Tensor:
        """The network output, refused unless it is a real floating tensor shaped like x."""
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x.shape):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the network {type(self.net).__name__} returned {got} for x of shape {tuple(x.shape)}: "
                             "ScoreModel needs net(x, labels) shaped like x (check its output size / channels)")
        if not out.is_floating_point():
            raise ValueError(f"the network {type(self.net).__name__} returned dtype {out.dtype}: ScoreModel needs a "
                             "real floating-point output")
        return out

    def forward(self, x: torch.Tensor, t: torch.Tensor, label=None) -> torch.Tensor:
        """The score ``grad_x log p_t(x)`` (``grad_x log p_t(x | label)`` given a label), shaped like x."""
        out, alpha, sigma = self._raw(x, t, label)
        if self.output == "score":
            return out
        if self.output == "eps":
            return -out / append_dims(sigma, x.ndim)
        if self.output == "flow":
            return self._score_from_flow(x, out, t)
        if self.output == "v":
            out = self._x0_from_v(x, out, alpha, sigma)
        # x0, edm and v yield a data prediction
        return (append_dims(alpha, x.ndim) * out - x) / append_dims(sigma ** 2, x.ndim)

    def _score_from_flow(self, x, u, t):
        # u = f x - g^2 score / 2 (the probability-flow drift)
        return (append_dims(self.sde.f(t), x.ndim) * x - u) * append_dims(2.0 / self.sde.g2(t), x.ndim)

    @staticmethod
    def _x0_from_v(x, v, alpha, sigma):
        # alpha x - sigma v = (alpha^2 + sigma^2) x0
        return (append_dims(alpha, x.ndim) * x - append_dims(sigma, x.ndim) * v) / \
            append_dims(alpha ** 2 + sigma ** 2, x.ndim)

    def denoise(self, x: torch.Tensor, t: torch.Tensor, label=None) -> torch.Tensor:
        """Posterior-mean estimate of x_0, shaped like x."""
        out, alpha, sigma = self._raw(x, t, label)
        if self.output in ("x0", "edm"):
            return out
        if self.output == "v":
            return self._x0_from_v(x, out, alpha, sigma)
        if self.output == "flow":
            out = self._score_from_flow(x, out, t)
        if self.output == "eps":
            return (x - append_dims(sigma, x.ndim) * out) / append_dims(alpha, x.ndim)
        return (x + append_dims(sigma ** 2, x.ndim) * out) / append_dims(alpha, x.ndim)

    def noise(self, x: torch.Tensor, t: torch.Tensor, label=None) -> torch.Tensor:
        """Noise estimate ``eps_hat = -sigma * score``, shaped like x."""
        if self.output == "eps":
            return self._raw(x, t, label)[0]
        return -append_dims(self.sde.sigma(t), x.ndim) * self.forward(x, t, label)

"""Denoising score-matching losses as small callables returning one value per sample.

For ``x_t = alpha(t) x_0 + sigma(t) z`` the conditional score is ``-z / sigma(t)``, and the
per-sample loss is::

    loss(x_0, t, z) = lambda(t) * reduce( (s(x_t, t) + z / sigma(t))^2 )

with ``reduce`` a sum (default) or mean over the data dimensions. Weightings ``lambda(t)``:

* ``"sigma2"``: ``sigma(t)^2`` (the paper's default), i.e. ``reduce((sigma s + z)^2)``, which
  is DDPM's noise-prediction MSE when ``s = -eps_hat / sigma``;
* ``"likelihood"``: ``g(t)^2`` (Song et al. 2021, "Maximum likelihood training of score-based
  diffusion models"; then ``0.5 * E_t[loss] * (T - eps)`` bounds the negative log-likelihood up to
  a constant);
* ``"none"``: 1;
* ``"flow"``: ``(g(t)^2 / (2 sigma(t)))^2``, the flow-matching weighting: then the loss is
  ``reduce((u_hat - u)^2)`` with the velocity ``u_hat = f x_t - g^2 s / 2`` (the probability-flow
  drift) and the conditional target ``u = alpha'(t) x_0 + sigma'(t) z``, since
  ``u_hat - u = -(g^2 / 2)(s + z / sigma)``. Under the linear interpolant (``alpha = 1 - t``,
  ``sigma = t``) the weight is ``1 / (1 - t)^2`` and the target ``z - x_0``: rectified flow /
  conditional flow matching (:func:`flow_matching_loss`). Defined for every SDE.
* ``"edm"``: ``(s^2 + sigma_data^2) / sigma_data^2`` with ``s = sigma(t) / alpha(t)`` (Karras et al.
  2022): since ``sigma s + z = (D - x_0) / s`` for the data prediction ``D``, this is EDM's
  ``lambda(s) ||D - x_0||^2`` with ``lambda = (s^2 + sigma_data^2) / (s sigma_data)^2``, i.e. unit weight
  on the preconditioned network output of ``ScoreModel(output="edm")``. Use it with
  ``time_sampling="lognormal"``.

Time sampling: ``"uniform"`` on ``[eps, T]``; ``"importance"`` draws t with density proportional
to ``g(t)^2 / sigma(t)^2`` (the variance-reduced estimator of the likelihood-weighted loss, valid
for every SDE: the inverse CDF is tabulated numerically) and reweights so that the expectation
equals the uniform-t likelihood-weighted loss; ``"discrete"`` draws the grid times
``t_i = T (i+1)/N`` (DDPM and SMLD training); ``"lognormal"`` draws EDM's noise levels,
``log(sigma/alpha) ~ N(p_mean, p_std^2)`` truncated to the levels of ``[eps, T]``, and maps them to t through
the SDE's schedule view (``t = sde.t_from_log_snr(-2 log s)``), so it serves VP, sub-VP and VE alike. The discrete DDPM and SMLD losses are this loss with
discrete times and ``sigma2`` weighting: see :func:`ddpm_loss` and :func:`smld_loss`.

Weighting and reduction over the batch happen at the call site (``loss_fn(...).mean()``).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .sde import SDE
from .utils import append_dims, as_time, check_positive

__all__ = ["DSMLoss", "ddpm_loss", "smld_loss", "flow_matching_loss"]

_WEIGHTINGS = ("sigma2", "likelihood", "none", "flow", "edm")
_TIME_SAMPLING = ("uniform", "importance", "discrete", "lognormal")


class DSMLoss:
    """Continuous-time denoising score matching, per sample.

    Args:
        sde: the forward SDE.
        weighting: ``"sigma2"`` | ``"likelihood"`` | ``"none"`` | ``"flow"`` (see the module docstring).
        time_sampling: ``"uniform"`` | ``"importance"`` | ``"discrete"``.
        eps: smallest training time (default ``sde.training_eps``).
        reduce: ``"sum"`` or ``"mean"`` over the data dimensions.
        sigma_data: the data std of the ``"edm"`` weighting (match ``ScoreModel(sigma_data=...)``).
        p_mean, p_std: mean and std of ``log(sigma/alpha)`` for ``time_sampling="lognormal"``
            (EDM's -1.2 and 1.2).

    Call ``loss_fn(score_fn, x0, t=None, noise=None, generator=None) -> (B,)`` with
    ``score_fn(x, t) -> like x`` (a wrapped network or an exact score).
    """

    def __init__(self, sde: SDE, weighting: str = "sigma2", time_sampling: str = "uniform",
                 eps: Optional[float] = None, reduce: str = "sum", sigma_data: float = 0.5,
                 p_mean: float = -1.2, p_std: float = 1.2):
        if weighting not in _WEIGHTINGS:
            raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {weighting!r}")
        if time_sampling not in _TIME_SAMPLING:
            raise ValueError(f"time_sampling must be one of {_TIME_SAMPLING}, got {time_sampling!r}")
        if time_sampling == "importance" and weighting != "likelihood":
            raise ValueError("time_sampling='importance' is the estimator of the likelihood-weighted loss: "
                             "use it with weighting='likelihood'")
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        self.sde = sde
        self.weighting = weighting
        self.time_sampling = time_sampling
        self.eps = sde.training_eps if eps is None else check_positive("eps", eps)
        if not self.eps < sde.T:
            raise ValueError(f"eps must be below T={sde.T}, got {self.eps}")
        self.reduce = reduce
        self.sigma_data = check_positive("sigma_data", sigma_data)
        self.p_mean, self.p_std = float(p_mean), check_positive("p_std", p_std)
        self._icdf = _importance_table(sde, self.eps) if time_sampling == "importance" else None

    def __repr__(self):
        return (f"DSMLoss({self.sde!r}, weighting={self.weighting!r}, time_sampling={self.time_sampling!r}, "
                f"eps={self.eps}, reduce={self.reduce!r}, sigma_data={self.sigma_data}, p_mean={self.p_mean}, "
                f"p_std={self.p_std})")

    def sample_t(self, batch: int, device=None, dtype=torch.float32, generator: Optional[torch.Generator] = None):
        """Draw training times, shape ``(batch,)``."""
        if generator is not None and device is None:
            device = generator.device
        if self.time_sampling == "discrete":
            i = torch.randint(0, self.sde.N, (batch,), generator=generator, device=device)
            return self.sde.timestep_to_t(i.to(torch.float64)).to(dtype)
        u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
        if self.time_sampling == "uniform":
            return (self.eps + u * (self.sde.T - self.eps)).to(dtype)
        if self.time_sampling == "lognormal":
            return self._lognormal_t(u).to(dtype)
        grid_u, grid_t, _ = self._icdf
        return _interp(u, grid_u.to(u.device), grid_t.to(u.device)).to(dtype)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """The factor multiplying ``reduce((sigma s + z)^2)`` at times t, shape ``(B,)``.

        (Importance sampling folds its density ratio in here.)
        """
        sigma2 = self.sde.sigma(t) ** 2
        if self.weighting == "sigma2":
            return torch.ones_like(t)
        if self.weighting == "none":
            return 1.0 / sigma2
        if self.weighting == "flow":
            return self.sde.g2(t) ** 2 / (4.0 * sigma2)
        if self.weighting == "edm":
            s2 = sigma2 / self.sde.alpha(t) ** 2
            return (s2 + self.sigma_data ** 2) / self.sigma_data ** 2
        if self.time_sampling == "importance":
            return torch.full_like(t, self._normaliser / (self.sde.T - self.eps))
        return self.sde.g2(t) / sigma2

    def _lognormal_t(self, u: torch.Tensor) -> torch.Tensor:
        """t whose ``log(sigma/alpha)`` is the truncated-normal quantile u (float64 in and out)."""
        ends = torch.tensor([self.eps, self.sde.T], dtype=torch.float64, device=u.device)
        log_s = -0.5 * self.sde.log_snr(ends)                      # log(sigma/alpha) at eps and T
        lo, hi = torch.special.ndtr((log_s - self.p_mean) / self.p_std)
        log_s = self.p_mean + self.p_std * torch.special.ndtri(lo + u * (hi - lo))
        return self.sde.t_from_log_snr(-2.0 * log_s).clamp(self.eps, self.sde.T)

    @property
    def _normaliser(self) -> float:
        return float(self._icdf[2])

    def __call__(self, score_fn: Callable, x0: torch.Tensor, t: Optional[torch.Tensor] = None,
                 noise: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if t is None:
            t = self.sample_t(x0.shape[0], device=x0.device, dtype=x0.dtype, generator=generator)
        else:
            t = as_time(t, x0, self.sde.T)
        x_t, z = self.sde.perturb(x0, t, noise=noise, generator=generator)
        score = score_fn(x_t, t)
        if not isinstance(score, torch.Tensor) or tuple(score.shape) != tuple(x_t.shape):
            got = tuple(score.shape) if isinstance(score, torch.Tensor) else type(score).__name__
            raise ValueError(f"score_fn returned {got} for x of shape {tuple(x_t.shape)}: the score must be shaped "
                             "like x (check the network's output size / channels); the loss does not broadcast")
        if not score.is_floating_point():
            raise ValueError(f"score_fn returned dtype {score.dtype}: the score must be a real floating-point tensor")
        sigma = append_dims(self.sde.sigma(t), x0.ndim)
        sq = (score * sigma + z).square().reshape(x0.shape[0], -1)
        per = sq.sum(1) if self.reduce == "sum" else sq.mean(1)
        return per * self.weight(t)


def ddpm_loss(sde: SDE, reduce: str = "mean") -> DSMLoss:
    """DDPM's loss ``||eps_hat - z||^2`` at a uniformly drawn integer step: DSM with
    ``sigma2`` weighting on the discrete grid (``reduce='mean'`` as in Ho et al.)."""
    return DSMLoss(sde, weighting="sigma2", time_sampling="discrete", reduce=reduce)


def smld_loss(sde: SDE, reduce: str = "sum") -> DSMLoss:
    """SMLD/NCSN's loss ``sigma_i^2 ||s(x, sigma_i) + z / sigma_i||^2`` at a uniform noise level
    ``sigma_i`` of the discrete grid (use with a VE SDE)."""
    return DSMLoss(sde, weighting="sigma2", time_sampling="discrete", reduce=reduce)


def flow_matching_loss(sde: Optional[SDE] = None, eps: Optional[float] = None, reduce: str = "sum") -> DSMLoss:
    """Conditional flow matching / rectified flow: ``reduce((u_hat(x_t, t) - (z - x_0))^2)`` at t uniform
    on ``[eps, T]``, as DSM under the linear interpolant with ``weighting="flow"``.

    ``sde`` defaults to :class:`score_sde.schedules.LinearInterpolantSDE` (T = 0.99); pass another
    SDE for the velocity-MSE loss of its schedule."""
    if sde is None:
        from .schedules import LinearInterpolantSDE
        sde = LinearInterpolantSDE()
    return DSMLoss(sde, weighting="flow", time_sampling="uniform", eps=eps, reduce=reduce)


def _importance_table(sde: SDE, eps: float, n: int = 8193):
    """Inverse CDF of q(t) ~ g(t)^2 / sigma(t)^2 on [eps, T]: (cdf grid, t grid, normaliser Z)."""
    log_t = torch.linspace(math.log(eps), math.log(sde.T), n, dtype=torch.float64)
    t = log_t.exp()
    dens = sde.g2(t) / sde.sigma(t) ** 2 * t          # density in log t (smooth near eps)
    du = log_t[1:] - log_t[:-1]
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(0.5 * (dens[1:] + dens[:-1]) * du, 0)])
    Z = cdf[-1]
    return cdf / Z, t, Z


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation (numpy.interp) in torch, on x's device."""
    idx = torch.searchsorted(xp, x.contiguous()).clamp(1, xp.numel() - 1)
    x0, x1, f0, f1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    w = ((x - x0) / (x1 - x0).clamp_min(1e-300)).clamp(0, 1)
    return f0 + w * (f1 - f0)

"""Exact and feature-free metrics for data whose law is known or low-dimensional.

* :func:`mean_log_prob`: the mean log-density ``E_samples[log p_0(x)]`` (nats) of samples under an
  analytic distribution (:class:`score_sde.analytic.GaussianMixture`). Compare it with the same
  quantity for exact samples, ``-H(p_0)`` (:func:`reference_mean_log_prob`): a sampler that puts
  mass where ``p_0`` is small scores lower. (It does not see a lack of diversity: a sampler
  collapsed onto the modes scores *higher*; read it beside the two distances below.)
* :func:`sliced_wasserstein`: the sliced p-Wasserstein distance between two point clouds,
  averaging exact one-dimensional distances over random directions (reproducible from a
  ``torch.Generator``); sets of different sizes are handled exactly.
* :func:`raw_frechet_distance`: the Frechet distance computed on the raw coordinates (flattened
  samples), against reference samples, reference statistics or the exact mean and covariance of
  an analytic distribution. For Gaussian data it is the squared 2-Wasserstein distance between
  Gaussian fits.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .frechet import FeatureStatistics, FeatureStats, frechet_distance

__all__ = ["mean_log_prob", "reference_mean_log_prob", "sliced_wasserstein", "raw_frechet_distance",
           "raw_statistics"]


def _flat(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a tensor or array of shape (N, ...), got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


def mean_log_prob(samples, distribution) -> float:
    """``mean_i log p_0(x_i)`` in nats for ``samples (N, *event_shape)`` under ``distribution``
    (anything with ``log_prob(x) -> (N,)``, e.g. a GaussianMixture). Non-finite values (samples
    that diverged) make the result ``-inf``/NaN on purpose rather than being dropped."""
    x = samples if isinstance(samples, torch.Tensor) else torch.as_tensor(np.asarray(samples))
    lp = distribution.log_prob(x.to(torch.float64))
    return float(lp.double().mean())


def reference_mean_log_prob(distribution, n: int = 100_000, generator: Optional[torch.Generator] = None,
                            ) -> float:
    """Monte-Carlo ``E_{p_0}[log p_0] = -H(p_0)`` from ``n`` exact samples (the value a perfect
    sampler would reach in :func:`mean_log_prob`, up to Monte-Carlo error ``~ std / sqrt(n)``)."""
    x = distribution.sample(int(n), generator=generator, dtype=torch.float64)
    return float(distribution.log_prob(x).double().mean())


def _w_p_1d(a: torch.Tensor, b: torch.Tensor, p: float) -> torch.Tensor:
    """Exact p-Wasserstein^p between empirical 1-D measures, batched: ``a (P, n)``, ``b (P, m)``."""
    a, _ = torch.sort(a, dim=1)
    b, _ = torch.sort(b, dim=1)
    n, m = a.shape[1], b.shape[1]
    if n == m:
        return ((a - b).abs() ** p).mean(dim=1)
    # quantile functions are step functions: integrate |F^-1(u) - G^-1(u)|^p over the merged grid
    u = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n,
                   torch.arange(1, m + 1, dtype=torch.float64) / m]).unique()
    widths = torch.diff(u, prepend=torch.zeros(1, dtype=torch.float64))
    mid = (u - 0.5 * widths).to(a.device)
    ia = torch.clamp(torch.ceil(mid * n).long() - 1, 0, n - 1)
    ib = torch.clamp(torch.ceil(mid * m).long() - 1, 0, m - 1)
    return ((a[:, ia] - b[:, ib]).abs() ** p * widths.to(a.device)).sum(dim=1)


def sliced_wasserstein(x, y, n_projections: int = 256, p: float = 2.0,
                       generator: Optional[torch.Generator] = None, chunk: int = 64) -> float:
    """Sliced p-Wasserstein distance ``(E_theta W_p^p(theta.x, theta.y))^(1/p)`` between point
    clouds ``x (N, ...)`` and ``y (M, ...)`` (flattened to ``D`` coordinates), with
    ``n_projections`` directions uniform on the sphere drawn from ``generator`` (on the CPU).

    Exact in each direction, also for ``N != M``; the only randomness is the choice of
    directions (Monte-Carlo error ``~ 1 / sqrt(n_projections)`` relative). In one dimension it
    is the exact Wasserstein distance.
    """
    xf, yf = _flat(x, "x").double(), _flat(y, "y").double()
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(f"x and y must have the same number of coordinates, got {xf.shape[1]} and {yf.shape[1]}")
    if isinstance(n_projections, bool) or not isinstance(n_projections, int) or n_projections < 1:
        raise ValueError(f"n_projections must be a positive integer, got {n_projections!r}")
    if not p >= 1:
        raise ValueError(f"p must be >= 1, got {p!r}")
    yf = yf.to(xf.device)
    d = xf.shape[1]
    theta = torch.randn(n_projections, d, generator=generator, dtype=torch.float64)
    theta = (theta / theta.norm(dim=1, keepdim=True)).to(xf.device)
    total = torch.zeros((), dtype=torch.float64, device=xf.device)
    for i in range(0, n_projections, chunk):
        th = theta[i:i + chunk]
        total = total + _w_p_1d(th @ xf.T, th @ yf.T, p).sum()
    return float((total / n_projections) ** (1.0 / p))


def raw_statistics(x) -> FeatureStatistics:
    """Mean and covariance (float64) of the flattened samples ``x (N, ...)``."""
    return FeatureStats().update(_flat(x, "x")).statistics()


def raw_frechet_distance(samples, reference) -> float:
    """Frechet distance on raw coordinates between ``samples (N, ...)`` and ``reference``: samples
    ``(M, ...)``, a :class:`FeatureStatistics`, a ``(mu, sigma)`` pair, or an analytic
    distribution (``mean()`` and ``covariance()``: the exact moments, no sampling error on that side).
    """
    s = raw_statistics(samples)
    if hasattr(reference, "mean") and hasattr(reference, "covariance") and callable(reference.covariance):
        mu, sigma = reference.mean(), reference.covariance()
    elif isinstance(reference, FeatureStatistics):
        mu, sigma = reference.mu, reference.sigma
    elif isinstance(reference, (tuple, list)) and len(reference) == 2:
        mu, sigma = reference
    else:
        r = raw_statistics(reference)
        mu, sigma = r.mu, r.sigma
    return frechet_distance(s.mu, s.sigma, mu, sigma)

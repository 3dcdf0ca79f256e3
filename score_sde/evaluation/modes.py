"""Per-mode metrics for samples of a Gaussian mixture: is each mode as sharp, as well placed and as
heavy as it should be? (Global distances such as the sliced Wasserstein distance do not see a
sampler that shrinks every mode by 10%.)

Each sample is assigned to the mode (component) of highest component log-likelihood
``log N(x; mu_k, Sigma_k)``. With ``n_k`` samples in mode k out of n, ``share_k = n_k / n``,
``D`` the dimension and ``M_i = (x_i - mu_k)^T Sigma_k^{-1} (x_i - mu_k)`` the squared
Mahalanobis distance to its mode:

* **spread error** ``sum_k share_k |mean_{i in k} M_i / D - 1|``: relative error of each mode's
  mean variance (0.10 = modes 10% too wide or too narrow);
* **centre error** ``sum_k share_k sqrt(m_k^T Sigma_k^{-1} m_k / D)`` with ``m_k`` the offset of the
  mode's sample mean from ``mu_k``: the RMS offset of the mode centres, in units of the mode's std;
* **weight TV** ``0.5 sum_k |share_k - w_k|``: total variation between the sample and true mode weights.

All three are > 0 for true samples too: :func:`mode_metrics_floor` gives their Monte Carlo
floors from true samples of the same size (the spread floor of the sharp 64-D mixture at 8192
samples is about 0.35%). :func:`sharp_mixture` builds the sharp test mixture (modes as narrow as
8-bit pixel levels on [-1, 1]) used by the sampling benchmark.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch

from ..analytic import GaussianMixture

__all__ = ["assign_modes", "mode_metrics", "mode_metrics_floor", "sharp_mixture", "MODE_METRICS"]

#: names of the per-mode metrics returned by :func:`mode_metrics`
MODE_METRICS = ("spread", "centre", "weight_tv")


def sharp_mixture(seed: int = 0, event_shape=(1, 8, 8), n_components: int = 8, mean_range: float = 0.8,
                  std_range=(0.01, 0.05), log_weight_scale: float = 0.7) -> GaussianMixture:
    """The sharp mixture of the sampling benchmark: ``n_components`` diagonal Gaussian modes in
    ``D = prod(event_shape)`` dimensions, means uniform in ``[-mean_range, mean_range]``,
    per-coordinate std uniform in ``std_range``, log-weights ``log_weight_scale * N(0, 1)``
    softmaxed; all drawn from ``torch.Generator().manual_seed(seed)`` in float64."""
    g = torch.Generator().manual_seed(int(seed))
    D = math.prod(event_shape)
    K = int(n_components)
    means = (2.0 * torch.rand(K, D, generator=g, dtype=torch.float64) - 1.0) * mean_range
    lo, hi = std_range
    std = lo + (hi - lo) * torch.rand(K, D, generator=g, dtype=torch.float64)
    logw = log_weight_scale * torch.randn(K, generator=g, dtype=torch.float64)
    return GaussianMixture(means, std ** 2, torch.softmax(logw, 0), event_shape=event_shape)


def _whitened(gm: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """``(N, K, D)`` residuals ``Sigma_k^{-1/2} (x - mu_k)`` in each mode's eigenbasis."""
    xf = x.reshape(x.shape[0], -1).to(torch.float64)
    if xf.shape[1] != gm.dim:
        raise ValueError(f"samples have {xf.shape[1]} values each, the mixture has D={gm.dim}")
    diff = xf[:, None, :] - gm.means.to(xf.device)[None]
    if gm.eigvecs is not None:
        diff = torch.einsum("kdj,nkd->nkj", gm.eigvecs.to(xf.device), diff)
    return diff / gm.eigvals.to(xf.device).sqrt()[None]


def assign_modes(gm: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """Index ``(N,)`` of the component of highest log-likelihood ``log N(x; mu_k, Sigma_k)``."""
    y = _whitened(gm, x)
    comp = -0.5 * (y ** 2).sum(-1) - 0.5 * torch.log(gm.eigvals.to(y.device)).sum(-1)[None]
    return comp.argmax(1)


def mode_metrics(gm: GaussianMixture, x: torch.Tensor) -> Dict[str, float]:
    """Per-mode metrics of samples ``x (N, *event_shape)`` against ``gm`` (see the module
    docstring): ``{"spread", "centre", "weight_tv"}`` as fractions (floats), NaN if x is not finite."""
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] == 0:
        raise ValueError("x must be a non-empty tensor of samples shaped (N, *event_shape)")
    if not bool(torch.isfinite(x).all()):
        return {k: math.nan for k in MODE_METRICS}
    y = _whitened(gm, x)
    n, K, D = y.shape
    k = assign_modes(gm, x)
    yk = y[torch.arange(n, device=y.device), k]                 # (N, D) residual to own mode
    counts = torch.bincount(k, minlength=K).to(torch.float64)
    share = counts / n
    m2 = torch.zeros(K, dtype=torch.float64, device=y.device).index_add_(0, k, (yk ** 2).sum(1) / D)
    ysum = torch.zeros(K, D, dtype=torch.float64, device=y.device).index_add_(0, k, yk)
    has = counts > 0
    c = counts.clamp_min(1.0)
    spread = (share * ((m2 / c) - 1.0).abs())[has].sum()
    centre = (share * ((ysum / c[:, None]) ** 2).mean(1).sqrt())[has].sum()
    tv = 0.5 * (share - gm.weights.to(y.device)).abs().sum()
    return {"spread": float(spread), "centre": float(centre), "weight_tv": float(tv)}


def mode_metrics_floor(gm: GaussianMixture, n: int, repeats: int = 5,
                       generator: Optional[torch.Generator] = None) -> Dict[str, Dict[str, float]]:
    """Monte Carlo floors: :func:`mode_metrics` of ``repeats`` sets of ``n`` true samples.
    Returns ``{"mean": {...}, "std": {...}}`` over the repeats (a sampler is at the floor when
    its value is within about 2 std of the mean)."""
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    vals = [mode_metrics(gm, gm.sample(int(n), generator=generator, dtype=torch.float64))
            for _ in range(int(repeats))]
    t = {k: torch.tensor([v[k] for v in vals], dtype=torch.float64) for k in MODE_METRICS}
    return {"mean": {k: float(v.mean()) for k, v in t.items()},
            "std": {k: float(v.std()) if len(v) > 1 else 0.0 for k, v in t.items()}}

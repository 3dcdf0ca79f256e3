"""Distributions with exact scores and log-densities at every time t of any SDE.

If ``x_0 ~ sum_k w_k N(mu_k, Sigma_k)`` and ``x_t = alpha(t) x_0 + sigma(t) z`` (any SDE of
:mod:`score_sde.sde`), then ``p_t = sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I)``.
Each ``Sigma_k = U_k diag(lambda_k) U_k^T`` is diagonalised once, so scores and log-densities
cost ``O(B K D^2)`` for full and ``O(B K D)`` for diagonal covariances, at a different t per
sample. These are the oracles that the tests and benchmarks check samplers, likelihoods and
losses against; users can do the same::

    gm = GaussianMixture.random(dim=2, n_components=8, seed=0)
    score_fn = gm.score_fn(sde)              # exact score of p_t: (x, t) -> like x
    logp = gm.log_prob(x)                    # log p_0(x), nats, shape (B,)
    logp_t = gm.log_prob(x, t, sde)          # log p_t(x)

Samples carry ``event_shape`` (default ``(D,)``), so image-shaped Gaussians work too.
Computation runs in float64; results come back in the input's dtype.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from .utils import as_time

__all__ = ["GaussianMixture", "Gaussian"]


class GaussianMixture:
    """Mixture ``sum_k w_k N(mu_k, Sigma_k)`` in ``D = prod(event_shape)`` dimensions.

    Args:
        means: ``(K, D)`` component means.
        covs: ``None`` (identity), a positive number (isotropic), ``(K, D)`` diagonal variances or
            ``(K, D, D)`` full covariances (symmetric positive definite).
        weights: ``(K,)`` non-negative mixture weights (normalised here); uniform if omitted.
        event_shape: shape of one sample, ``(D,)`` by default (e.g. ``(1, 8, 8)`` for images).
    """

    def __init__(self, means, covs=None, weights=None, event_shape: Optional[Sequence[int]] = None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        K, D = means.shape
        if not bool(torch.isfinite(means).all()):
            raise ValueError(f"means must be finite; got NaN or inf in component(s) "
                             f"{torch.nonzero(~torch.isfinite(means).all(1)).flatten().tolist()}")
        self.means = means
        if covs is None:
            covs = 1.0
        if isinstance(covs, (int, float)):
            if not (math.isfinite(covs) and covs > 0):
                raise ValueError(f"an isotropic covariance must be a positive finite number, got {covs}")
            covs = torch.full((K, D), float(covs), dtype=torch.float64)
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if not bool(torch.isfinite(covs).all()):
            raise ValueError("covariances must be finite; got NaN or inf")
        if covs.shape == (K, D):
            if not bool((covs > 0).all()):
                raise ValueError("diagonal covariances must be positive")
            self.eigvals, self.eigvecs = covs, None
        elif covs.shape == (K, D, D):
            if not torch.allclose(covs, covs.transpose(1, 2), atol=1e-10):
                raise ValueError("full covariances must be symmetric")
            evals, evecs = torch.linalg.eigh(covs)
            if not bool((evals > 0).all()):
                raise ValueError("full covariances must be positive definite")
            self.eigvals, self.eigvecs = evals, evecs
        else:
            raise ValueError(f"covs must be None, a number, (K, D) or (K, D, D) with K={K}, D={D}; got {tuple(covs.shape)}")
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if not bool(torch.isfinite(weights).all()):
            raise ValueError(f"weights must be finite; got {weights.tolist() if weights.numel() <= 8 else 'NaN or inf'}")
        if weights.shape != (K,) or bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError(f"weights must be (K,) = ({K},) non-negative with a positive sum")
        self.weights = weights / weights.sum()
        self.event_shape = tuple(event_shape) if event_shape is not None else (D,)
        if math.prod(self.event_shape) != D:
            raise ValueError(f"event_shape {self.event_shape} does not hold D={D} values")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def random(cls, dim: int, n_components: int, seed: int = 0, spread: float = 3.0,
               full_cov: bool = True, scale_range=(0.05, 0.5), event_shape=None) -> "GaussianMixture":
        """A reproducible random mixture: means ``~ N(0, spread^2/dim I)`` (norm ~ spread), random
        (full or diagonal) covariances with eigenvalues in ``scale_range**2``, Dirichlet(5) weights."""
        g = torch.Generator().manual_seed(seed)
        means = torch.randn(n_components, dim, generator=g, dtype=torch.float64) * spread / math.sqrt(dim)
        lo, hi = scale_range
        scales = lo + (hi - lo) * torch.rand(n_components, dim, generator=g, dtype=torch.float64)
        if full_cov:
            q, _ = torch.linalg.qr(torch.randn(n_components, dim, dim, generator=g, dtype=torch.float64))
            covs = q @ torch.diag_embed(scales ** 2) @ q.transpose(1, 2)
            covs = 0.5 * (covs + covs.transpose(1, 2))
        else:
            covs = scales ** 2
        weights = _dirichlet(n_components, g)
        return cls(means, covs, weights, event_shape=event_shape)

    # ------------------------------------------------------------------ properties
    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def covariances(self) -> torch.Tensor:
        """Component covariances, ``(K, D, D)``."""
        if self.eigvecs is None:
            return torch.diag_embed(self.eigvals)
        return self.eigvecs @ torch.diag_embed(self.eigvals) @ self.eigvecs.transpose(1, 2)

    def mean(self) -> torch.Tensor:
        """Mixture mean, ``(D,)``."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Mixture covariance, ``(D, D)``: ``sum_k w_k (Sigma_k + mu_k mu_k^T) - mu mu^T``."""
        mu = self.mean()
        second = (self.weights[:, None, None] * (self.covariances() + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return second - mu[:, None] * mu[None, :]

    def marginal_mean(self, sde, t: float) -> torch.Tensor:
        """Mean of p_t, ``(D,)``."""
        a = float(sde.alpha(torch.tensor(float(t), dtype=torch.float64)))
        return a * self.mean()

    def marginal_covariance(self, sde, t: float) -> torch.Tensor:
        """Covariance of p_t, ``(D, D)``: ``alpha^2 Cov + sigma^2 I``."""
        tt = torch.tensor(float(t), dtype=torch.float64)
        a, s = float(sde.alpha(tt)), float(sde.sigma(tt))
        return a ** 2 * self.covariance() + s ** 2 * torch.eye(self.dim, dtype=torch.float64)

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, generator: Optional[torch.Generator] = None, dtype=torch.float32, device=None) -> torch.Tensor:
        """Exact samples of p_0, shape ``(n, *event_shape)``."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        z = z * self.eigvals[k].sqrt()
        if self.eigvecs is not None:
            z = torch.einsum("nij,nj->ni", self.eigvecs[k], z)
        x = self.means[k] + z
        return x.reshape(n, *self.event_shape).to(dtype=dtype, device=device)

    # ------------------------------------------------------------------ densities
    def _components(self, x, t, sde):
        """Per-component quantities in float64: whitened residual y (B,K,D), variances v (B,K,D)."""
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        if xf.shape[1] != self.dim:
            raise ValueError(f"x has {xf.shape[1]} values per sample, the distribution has D={self.dim}")
        dev = xf.device
        means, evals = self.means.to(dev), self.eigvals.to(dev)
        if t is None:
            a = torch.ones(xf.shape[0], dtype=torch.float64, device=dev)
            s = torch.zeros_like(a)
        else:
            if sde is None:
                raise ValueError("pass the SDE whose marginal p_t is wanted (log_prob(x, t, sde))")
            tt = as_time(t, xf, sde.T).to(torch.float64)
            a, s = sde.alpha(tt), sde.sigma(tt)
        diff = xf[:, None, :] - a[:, None, None] * means[None]            # (B,K,D)
        if self.eigvecs is not None:
            diff = torch.einsum("kdj,bkd->bkj", self.eigvecs.to(dev), diff)
        v = a[:, None, None] ** 2 * evals[None] + s[:, None, None] ** 2     # (B,K,D)
        return diff, v

    def _log_resp(self, y, v):
        comp = -0.5 * (torch.log(2 * math.pi * v) + y ** 2 / v).sum(-1)     # (B,K)
        return comp + torch.log(self.weights.to(y.device))[None]

    def log_prob(self, x: torch.Tensor, t=None, sde=None) -> torch.Tensor:
        """``log p_t(x)`` in nats, shape ``(B,)``; ``t=None`` gives the data density p_0."""
        y, v = self._components(x, t, sde)
        return torch.logsumexp(self._log_resp(y, v), dim=1).to(x.dtype if x.is_floating_point() else torch.float64)

    def score(self, x: torch.Tensor, t=None, sde=None) -> torch.Tensor:
        """``grad_x log p_t(x)``, shaped like x."""
        y, v = self._components(x, t, sde)
        r = torch.softmax(self._log_resp(y, v), dim=1)                    # (B,K)
        g = -y / v                                                        # (B,K,D) in eigen-coords
        if self.eigvecs is not None:
            g = torch.einsum("kdj,bkj->bkd", self.eigvecs.to(g.device), g)
        out = (r[:, :, None] * g).sum(1)
        return out.reshape(x.shape).to(x.dtype)

    def score_fn(self, sde):
        """The exact score of p_t under ``sde`` as a plain ``score_fn(x, t) -> like x``."""
        def score_fn(x, t):
            return self.score(x, t, sde)
        return score_fn

    def denoise(self, x: torch.Tensor, t, sde) -> torch.Tensor:
        """Exact posterior mean ``E[x_0 | x_t = x]`` (Tweedie), shaped like x."""
        tt = as_time(t, x, sde.T)
        return sde.x0_from_score(x, tt, self.score(x, tt, sde))


def Gaussian(mean, cov=None, event_shape=None) -> GaussianMixture:
    """A single Gaussian ``N(mean, cov)``: ``mean (D,)``; cov as for :class:`GaussianMixture`
    but without the component axis (number, ``(D,)`` diagonal or ``(D, D)`` full)."""
    mean = torch.as_tensor(mean, dtype=torch.float64)
    if cov is not None and not isinstance(cov, (int, float)):
        cov = torch.as_tensor(cov, dtype=torch.float64)[None]
    return GaussianMixture(mean[None], cov, None, event_shape=event_shape)


def _dirichlet(k: int, g: torch.Generator, concentration: float = 5.0) -> torch.Tensor:
    # Gamma(5) draws through a sum of exponentials (5 is an integer): reproducible from g
    e = -torch.log(torch.rand(k, int(concentration), generator=g, dtype=torch.float64)).sum(1)
    return e / e.sum()


"""Frechet distance between Gaussians fitted to feature sets (FID and its relatives).

For features ``f ~ N(mu_1, Sigma_1)`` and ``g ~ N(mu_2, Sigma_2)``::

    FD = |mu_1 - mu_2|^2 + tr(Sigma_1) + tr(Sigma_2) - 2 tr((Sigma_1 Sigma_2)^{1/2})

(the squared 2-Wasserstein distance between the two Gaussians). Everything here runs in float64.
``tr((Sigma_1 Sigma_2)^{1/2})`` is computed by default (``method="eigh"``) from symmetric
eigendecompositions and one SVD::

    tr((S1 S2)^{1/2}) = tr((S1^{1/2} S2 S1^{1/2})^{1/2}) = sum_i sigma_i(S2^{1/2} S1^{1/2})

which is exact for positive semi-definite matrices (``S1 S2`` and ``S1^{1/2} S2 S1^{1/2}`` share
their eigenvalues), never produces a complex result, stays accurate for the singular
covariances of few samples or dead ReLU features (no square root of rounding noise), and is
faster than a general matrix square root at 2048 dimensions. ``method="sqrtm"`` reproduces the classic route of the
TTUR / pytorch-fid code (``scipy.linalg.sqrtm`` of the product, ``eps * I`` added to both
covariances when the product is near singular, a tiny imaginary part dropped, a large one raised).

Feature statistics are accumulated in a streaming, mergeable way (:class:`FeatureStats`, Chan et
al.'s parallel update) and cached as ``.npz`` files with keys ``mu`` and ``sigma`` (the same keys
as the TTUR and pytorch-fid statistics files, which load here as they are).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..utils import atomic_write

__all__ = ["frechet_distance", "FeatureStats", "FeatureStatistics", "save_stats", "load_stats"]


def _as_f64(a, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def _check_moments(mu1, sigma1, mu2, sigma2):
    mu1, mu2 = np.atleast_1d(_as_f64(mu1, "mu1")), np.atleast_1d(_as_f64(mu2, "mu2"))
    sigma1, sigma2 = np.atleast_2d(_as_f64(sigma1, "sigma1")), np.atleast_2d(_as_f64(sigma2, "sigma2"))
    d = mu1.shape[0]
    if mu1.ndim != 1 or mu2.shape != (d,):
        raise ValueError(f"mu1 and mu2 must be vectors of the same length, got {mu1.shape} and {mu2.shape}")
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"sigma1 and sigma2 must be ({d}, {d}) covariance matrices matching mu, "
                         f"got {sigma1.shape} and {sigma2.shape}")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or inf: check the features (diverged samples?)")
    return mu1, sigma1, mu2, sigma2


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (s + s.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _trace_sqrt_product_eigh(sigma1, sigma2) -> float:
    # tr (S1 S2)^{1/2} = tr (S1^{1/2} S2 S1^{1/2})^{1/2} = nuclear norm of S2^{1/2} S1^{1/2}
    # (A^T A = S1^{1/2} S2 S1^{1/2} for A = S2^{1/2} S1^{1/2}). Singular values carry an absolute
    # error ~ eps |S|, where square roots of the eigenvalues of the product would carry
    # ~ sqrt(eps) |S| on every (near-)null direction: 1e-8 instead of 1e-16 relative.
    a = _psd_sqrt(sigma2) @ _psd_sqrt(sigma1)
    return float(np.linalg.svd(a, compute_uv=False).sum())


def _trace_sqrt_product_sqrtm(sigma1, sigma2, eps: float) -> float:
    import warnings

    from scipy import linalg

    with warnings.catch_warnings():      # singular products are expected; handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.all(np.isfinite(covmean)):
            # near-singular product: regularise both covariances (the classic fallback)
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(covmean.imag)) if covmean.size else 0.0
        tol = 1e-3 * max(1.0, float(np.max(np.abs(covmean.real))))
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3) or imag > tol:
            raise ValueError(f"sqrtm of sigma1 @ sigma2 has a large imaginary part ({imag:.3g}); "
                             "the covariances are not valid (use method='eigh')")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = "eigh", eps: float = 1e-6) -> float:
    """Frechet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (float64).

    Args:
        mu1, mu2: ``(D,)`` means (numpy arrays or tensors).
        sigma1, sigma2: ``(D, D)`` covariances.
        method: ``"eigh"`` (default; exact for PSD inputs, real by construction) or ``"sqrtm"``
            (``scipy.linalg.sqrtm`` with the ``eps * I`` fallback, as in TTUR / pytorch-fid).
        eps: the regulariser of the ``"sqrtm"`` fallback.
    Returns:
        a Python float ``>= 0`` (up to rounding). With Inception pool features this is the FID.
    """
    mu1, sigma1, mu2, sigma2 = _check_moments(mu1, sigma1, mu2, sigma2)
    if method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
    elif method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
    else:
        raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


@dataclass
class FeatureStatistics:
    """Mean ``mu (D,)``, covariance ``sigma (D, D)`` (unbiased, ``n - 1``), count ``n`` of a feature
    set; optionally the raw ``features (n, D)`` (needed for KID) and free-form ``meta``."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int = 0
    features: Optional[np.ndarray] = None
    meta: dict = field(default_factory=dict)

    def frechet_distance(self, other: "FeatureStatistics", method: str = "eigh") -> float:
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma, method=method)


class FeatureStats:
    """Streaming mean and covariance of feature vectors in float64, mergeable across processes.

    ``update(f)`` takes a batch ``(B, D)``; ``merge(other)`` combines two accumulators (Chan et al.'s
    parallel algorithm: numerically stable, independent of batch boundaries up to rounding).
    """

    def __init__(self, dim: Optional[int] = None):
        self.n = 0
        self.mean = None if dim is None else np.zeros(dim)
        self.m2 = None if dim is None else np.zeros((dim, dim))

    def _merge_moments(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray):
        if n_b == 0:
            return
        if self.n == 0 or self.mean is None:
            self.n, self.mean, self.m2 = n_b, mean_b.copy(), m2_b.copy()
            return
        if mean_b.shape != self.mean.shape:
            raise ValueError(f"feature dimension mismatch: {mean_b.shape[0]} vs {self.mean.shape[0]}")
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (self.n * n_b / n)
        self.n = n

    def update(self, features) -> "FeatureStats":
        f = _as_f64(features, "features")
        if f.ndim != 2:
            raise ValueError(f"features must be (batch, dim), got shape {f.shape}")
        if f.shape[0] == 0:
            return self
        mean_b = f.mean(axis=0)
        c = f - mean_b
        self._merge_moments(f.shape[0], mean_b, c.T @ c)
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        if other.n:
            self._merge_moments(other.n, other.mean, other.m2)
        return self

    def state(self) -> dict:
        return {"n": self.n, "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_state(cls, n, mean, m2) -> "FeatureStats":
        s = cls()
        s.n = int(n)
        if s.n:
            s.mean, s.m2 = np.asarray(mean, dtype=np.float64), np.asarray(m2, dtype=np.float64)
        return s

    def statistics(self) -> FeatureStatistics:
        if self.n < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {self.n}")
        return FeatureStatistics(mu=self.mean.copy(), sigma=self.m2 / (self.n - 1), n=self.n)


def save_stats(path, stats: FeatureStatistics) -> str:
    """Write ``mu``, ``sigma``, ``n`` (+ ``features`` when present, + ``meta`` as JSON) to ``.npz``."""
    path = os.fspath(path)
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    arrays = {"mu": np.asarray(stats.mu, np.float64), "sigma": np.asarray(stats.sigma, np.float64),
              "n": np.asarray(stats.n, np.int64), "meta": np.asarray(json.dumps(stats.meta, sort_keys=True))}
    if stats.features is not None:
        arrays["features"] = np.asarray(stats.features, np.float32)
    atomic_write(path, "wb", lambda f: np.savez(f, **arrays))
    return path


def load_stats(path) -> FeatureStatistics:
    """Read a statistics ``.npz`` (ours, or TTUR / pytorch-fid files with ``mu`` and ``sigma``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"reference statistics file not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        if "mu" not in z or "sigma" not in z:
            raise ValueError(f"{path} is not a statistics file: it needs arrays 'mu' and 'sigma', "
                             f"found {sorted(z.files)}")
        meta = json.loads(str(z["meta"])) if "meta" in z else {}
        return FeatureStatistics(mu=z["mu"].astype(np.float64), sigma=z["sigma"].astype(np.float64),
                                 n=int(z["n"]) if "n" in z else 0,
                                 features=z["features"] if "features" in z else None, meta=meta)

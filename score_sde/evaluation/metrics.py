"""Inception Score and Kernel Inception Distance on precomputed logits / features.

Notation: ``N`` samples, ``K`` classes, ``D`` feature dimensions.

* **Inception Score** (Salimans et al. 2016): ``IS = exp(E_x KL(p(y|x) || p(y)))``, computed on
  ``splits`` contiguous parts of the samples (part ``i`` holds indices
  ``[i N // splits, (i+1) N // splits)``, as in the original code); returns the mean and the
  (population) standard deviation over parts. Uniform predictions give exactly 1; confident
  predictions spread evenly over ``K`` classes give ``K``.
* **KID** (Binkowski et al. 2018): the unbiased estimator of the squared MMD with the cubic
  polynomial kernel ``k(x, y) = (x.y / D + 1)^3``, averaged over ``subsets`` random subsets of
  ``subset_size`` samples drawn without replacement from each set; returns the mean and standard
  deviation over subsets. Its expectation is the population MMD^2 (0 for one distribution).

All computations run in float64 (numpy); inputs may be tensors or arrays.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

__all__ = ["inception_score", "inception_score_from_probs", "kernel_inception_distance",
           "polynomial_kernel", "mmd2_unbiased"]


def _np64(a, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, classes or dims), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _split_bounds(n: int, splits: int):
    if isinstance(splits, bool) or not isinstance(splits, (int, np.integer)) or splits < 1:
        raise ValueError(f"splits must be a positive integer, got {splits!r}")
    if n < splits:
        raise ValueError(f"need at least splits={splits} samples for the Inception Score, got {n}")
    return [(i * n // splits, (i + 1) * n // splits) for i in range(splits)]


def _score_from_log_probs(logp: np.ndarray, splits: int) -> Tuple[float, float]:
    scores = []
    for a, b in _split_bounds(logp.shape[0], splits):
        lp = logp[a:b]
        p = np.exp(lp)
        log_marginal = np.log(np.clip(p.mean(axis=0), 1e-300, None))
        kl = (p * (lp - log_marginal[None])).sum(axis=1).mean()
        scores.append(np.exp(kl))
    scores = np.asarray(scores)
    return float(scores.mean()), float(scores.std())


def inception_score(logits, splits: int = 10) -> Tuple[float, float]:
    """Inception Score from classifier logits ``(N, K)``: ``(mean, std)`` over ``splits`` parts.

    ``p(y|x) = softmax(logits)`` is taken in float64 through ``log_softmax``. For the standard IS
    pass the FID Inception network's 1008 ``logits_unbiased`` (no bias term, as in the original
    code and torch-fidelity).
    """
    z = _np64(logits, "logits")
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return _score_from_log_probs(logp, splits)


def inception_score_from_probs(probs, splits: int = 10) -> Tuple[float, float]:
    """Inception Score from class probabilities ``(N, K)`` (rows summing to 1)."""
    p = _np64(probs, "probs")
    if np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("probs must be non-negative with rows summing to 1 (pass logits to inception_score)")
    with np.errstate(divide="ignore"):
        logp = np.log(p)
    # 0 log 0 = 0: a zero probability contributes nothing to the KL
    logp = np.where(p > 0, logp, 0.0)
    return _score_from_log_probs(logp, splits)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: Optional[float] = None,
                      coef0: float = 1.0) -> np.ndarray:
    """``(gamma x.y + coef0)^degree`` for all pairs: ``(n, D), (m, D) -> (n, m)``; gamma = 1/D."""
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    k = x @ y.T
    k *= gamma
    k += coef0
    if degree == 3:            # np.power with a float base is ~10x slower than two products
        return k * k * k
    return k ** degree


def mmd2_unbiased(x, y, degree: int = 3, gamma: Optional[float] = None, coef0: float = 1.0) -> float:
    """Unbiased estimate of MMD^2 between the laws of ``x (n, D)`` and ``y (m, D)`` (U-statistic:
    diagonal terms left out of the within-set averages)."""
    x, y = _np64(x, "x"), _np64(y, "y")
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"mmd2_unbiased needs at least 2 samples per set, got {n} and {m}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    kxx = polynomial_kernel(x, x, degree, gamma, coef0)
    kyy = polynomial_kernel(y, y, degree, gamma, coef0)
    kxy = polynomial_kernel(x, y, degree, gamma, coef0)
    sxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kernel_inception_distance(features1, features2, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0, generator: Optional[np.random.Generator] = None
                              ) -> Tuple[float, float]:
    """KID between two feature sets ``(N1, D)``, ``(N2, D)``: ``(mean, std)`` over subsets.

    Each subset draws ``subset_size`` rows without replacement from each set, reproducibly from
    ``generator`` (a ``numpy.random.Generator``) or ``seed``. Raises ValueError when a set has
    fewer than ``subset_size`` rows (lower ``subset_size``).
    """
    f1, f2 = _np64(features1, "features1"), _np64(features2, "features2")
    if isinstance(subsets, bool) or not isinstance(subsets, (int, np.integer)) or subsets < 1:
        raise ValueError(f"subsets must be a positive integer, got {subsets!r}")
    if isinstance(subset_size, bool) or not isinstance(subset_size, (int, np.integer)) or subset_size < 2:
        raise ValueError(f"subset_size must be an integer >= 2, got {subset_size!r}")
    if subset_size > min(f1.shape[0], f2.shape[0]):
        raise ValueError(f"subset_size={subset_size} exceeds the number of feature vectors "
                         f"({f1.shape[0]} and {f2.shape[0]}): lower subset_size")
    rng = generator if generator is not None else np.random.default_rng(seed)
    vals = np.empty(subsets)
    for i in range(subsets):
        a = f1[rng.choice(f1.shape[0], subset_size, replace=False)]
        b = f2[rng.choice(f2.shape[0], subset_size, replace=False)]
        vals[i] = mmd2_unbiased(a, b)
    return float(vals.mean()), float(vals.std())

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


# ====================================================================== conditioning (issue 15)
# Exact oracles for controllable generation. Notation: the prior is p(x0) = sum_k w_k N(mu_k, S_k);
# a linear measurement is y = A x0 + s n with A (M, D), n ~ N(0, I_M) and s >= 0 (s = 0 for masks).
# Then p(x0 | y) = sum_k w'_k N(m_k, P_k) with
#     C_k  = A S_k A^T + s^2 I                    (covariance of y under component k)
#     w'_k ∝ w_k N(y; A mu_k, C_k)
#     m_k  = mu_k + S_k A^T C_k^{-1} (y - A mu_k)
#     P_k  = S_k - S_k A^T C_k^{-1} A S_k          (singular when s = 0: the observed part is fixed)
# and, because the forward SDE acts on x0 alone, p_t(x_t | y) is this posterior mixture pushed through
# the forward marginal: sum_k w'_k N(alpha m_k, alpha^2 P_k + sigma^2 I), whose score is exact at
# every t > 0 (GaussianMixture.score_fn of the posterior). See docs/conditional.md.
from typing import NamedTuple  # noqa: E402

__all__ += ["MeasurementPosterior", "condition_on_measurement", "sub_mixture", "MixtureClassifier"]


def _psd_mixture(means, covs, weights, event_shape) -> GaussianMixture:
    """A GaussianMixture whose covariances may be singular (positive semi-definite).

    Eigenvalues below ``1e-12 * max`` are set to exactly 0, so samples reproduce the fixed
    (observed) directions exactly. Scores and log-densities exist only for t > 0 (where
    ``alpha^2 P + sigma^2 I`` is positive definite); the p_0 density does not."""
    gm = GaussianMixture.__new__(GaussianMixture)
    covs = 0.5 * (covs + covs.transpose(1, 2))
    evals, evecs = torch.linalg.eigh(covs)
    tol = 1e-12 * evals.abs().amax(dim=1, keepdim=True).clamp_min(1e-300)
    evals = torch.where(evals > tol, evals, torch.zeros_like(evals))
    gm.means, gm.eigvals, gm.eigvecs = means, evals, evecs
    gm.weights = weights / weights.sum()
    gm.event_shape = tuple(event_shape)
    return gm


def _as_matrix(A, dim: int, event_shape) -> torch.Tensor:
    """A measurement operator as a float64 ``(M, D)`` matrix: a tensor, or any object with
    ``matrix(event_shape)`` (the operators of :mod:`score_sde.conditional`)."""
    if hasattr(A, "matrix") and callable(A.matrix):
        A = A.matrix(event_shape)
    A = torch.as_tensor(A, dtype=torch.float64)
    if A.ndim != 2 or A.shape[1] != dim:
        raise ValueError(f"the measurement matrix must have shape (M, D) with D={dim}, got {tuple(A.shape)}")
    return A


class MeasurementPosterior(NamedTuple):
    """Exact posterior of a Gaussian-mixture prior given ``y = A x0 + noise_std * n``.

    ``mixture``: p(x0 | y) as a :class:`GaussianMixture` (full, possibly singular covariances):
    its ``weights``, ``means``, ``covariances()``, exact ``sample(n)`` and ``score_fn(sde)``, the
    exact score of ``p_t(x_t | y)`` at every t > 0. ``log_evidence``: ``log p(y)`` (nats; a
    density in y, finite also for noise_std = 0). ``component_log_evidence``: ``log N(y; A mu_k,
    C_k)``, shape ``(K,)``."""
    mixture: GaussianMixture
    log_evidence: float
    component_log_evidence: torch.Tensor


def condition_on_measurement(prior: GaussianMixture, A, y, noise_std: float = 0.0) -> MeasurementPosterior:
    """Condition ``prior`` on one linear measurement ``y = A x0 + noise_std * n`` exactly.

    Args:
        prior: the Gaussian mixture p(x0) (diagonal or full covariances).
        A: ``(M, D)`` matrix, or an operator of :mod:`score_sde.conditional` (``Mask``,
            ``Colorization``, ``LinearOperator``: anything with ``matrix(event_shape)``).
        y: the observation, M values (any shape holding M values; one measurement, no batch).
        noise_std: std ``s >= 0`` of the Gaussian measurement noise (0: noiseless, e.g. a mask;
            then ``A S_k A^T`` must be invertible, i.e. A has independent rows).

    Returns:
        :class:`MeasurementPosterior`; see the formulas in the comment above this function.
    """
    s = float(noise_std)
    if not (s >= 0 and math.isfinite(s)):
        raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
    A = _as_matrix(A, prior.dim, prior.event_shape)
    M = A.shape[0]
    y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    if y.numel() != M:
        raise ValueError(f"y holds {y.numel()} values but A has M={M} rows")
    S = prior.covariances()                                            # (K,D,D)
    AS = torch.einsum("md,kde->kme", A, S)                             # (K,M,D)
    C = torch.einsum("kmd,nd->kmn", AS, A) + s ** 2 * torch.eye(M, dtype=torch.float64)
    C = 0.5 * (C + C.transpose(1, 2))
    L, info = torch.linalg.cholesky_ex(C)
    if bool((info != 0).any()):
        raise ValueError("A S_k A^T + noise_std^2 I is singular: with noise_std = 0, A must have linearly "
                         "independent rows (e.g. a mask observing each coordinate once)")
    r = y[None] - prior.means @ A.T                                    # (K,M)
    Cinv_r = torch.cholesky_solve(r[:, :, None], L)[:, :, 0]           # (K,M)
    Cinv_AS = torch.cholesky_solve(AS, L)                              # (K,M,D)
    means = prior.means + torch.einsum("kmd,km->kd", AS, Cinv_r)
    covs = S - torch.einsum("kmd,kme->kde", AS, Cinv_AS)
    logdet = 2.0 * torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(1)
    comp_ll = -0.5 * (M * math.log(2 * math.pi) + logdet + (r * Cinv_r).sum(1))
    logw = torch.log(prior.weights) + comp_ll
    log_ev = torch.logsumexp(logw, 0)
    post = _psd_mixture(means, covs, torch.exp(logw - log_ev), prior.event_shape)
    return MeasurementPosterior(post, float(log_ev), comp_ll)


def sub_mixture(prior: GaussianMixture, components) -> GaussianMixture:
    """The mixture of the chosen components only (weights renormalised): p(x0 | k in components)."""
    idx = torch.as_tensor(components, dtype=torch.long).reshape(-1)
    if idx.numel() == 0:
        raise ValueError("choose at least one component")
    if int(idx.min()) < 0 or int(idx.max()) >= prior.n_components:
        raise ValueError(f"component indices must lie in [0, {prior.n_components}), got {idx.tolist()}")
    gm = GaussianMixture.__new__(GaussianMixture)
    gm.means = prior.means[idx]
    gm.eigvals = prior.eigvals[idx]
    gm.eigvecs = None if prior.eigvecs is None else prior.eigvecs[idx]
    w = prior.weights[idx]
    gm.weights = w / w.sum()
    gm.event_shape = prior.event_shape
    return gm


class MixtureClassifier:
    """The exact time-dependent classifier of a mixture whose components carry class labels.

    Class c is the sub-mixture of the components with ``component_labels[k] == c``, so
    ``p(x0 | c)`` is :func:`sub_mixture` of them, ``p(c) = sum_{k in c} w_k`` and at every time t::

        log p_t(c | x_t) = logsumexp_{k in c} (log w_k + log N_k,t(x_t)) - log p_t(x_t)
        grad log p_t(c | x_t) = score of p_t(x | c) - score of p_t(x)

    Args:
        prior: the mixture.
        component_labels: ``(K,)`` integer class of each component.
        n_classes: number of classes (default ``max(label) + 1``); every class needs a component.
    """

    def __init__(self, prior: GaussianMixture, component_labels, n_classes: Optional[int] = None):
        lab = torch.as_tensor(component_labels, dtype=torch.long).reshape(-1)
        if lab.numel() != prior.n_components:
            raise ValueError(f"component_labels must give one class per component ({prior.n_components}), "
                             f"got {lab.numel()}")
        if int(lab.min()) < 0:
            raise ValueError("class labels must be >= 0")
        n = int(lab.max()) + 1 if n_classes is None else int(n_classes)
        if int(lab.max()) >= n:
            raise ValueError(f"component labels must lie in [0, {n})")
        missing = sorted(set(range(n)) - set(lab.tolist()))
        if missing:
            raise ValueError(f"classes {missing} have no component")
        self.prior, self.component_labels, self.num_classes = prior, lab, n
        self._onehot = torch.nn.functional.one_hot(lab, n).to(torch.float64)     # (K,C)

    def check_label(self, label, batch: int) -> torch.Tensor:
        """Labels as a ``(batch,)`` long tensor; ValueError if any lies outside ``[0, num_classes)``."""
        lab = torch.as_tensor(label, dtype=torch.long)
        if lab.ndim == 0:
            lab = lab.expand(batch)
        if lab.shape != (batch,):
            raise ValueError(f"labels must be one int or shape ({batch},), got {tuple(lab.shape)}")
        if bool(((lab < 0) | (lab >= self.num_classes)).any()):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got {sorted(set(lab.tolist()))}")
        return lab

    def class_mixture(self, label: int) -> GaussianMixture:
        """``p(x0 | c)`` as a :class:`GaussianMixture`."""
        c = int(self.check_label(label, 1)[0])
        return sub_mixture(self.prior, torch.nonzero(self.component_labels == c)[:, 0])

    def class_prior(self) -> torch.Tensor:
        """``p(c)``, shape ``(C,)``."""
        return self.prior.weights @ self._onehot

    def log_prob(self, x: torch.Tensor, t=None, sde=None) -> torch.Tensor:
        """``log p_t(c | x_t)`` for every class, shape ``(B, C)`` (t=None: at t = 0).
        Differentiable in x (autograd), returned in float64."""
        yv, v = self.prior._components(x, t, sde)
        lr = self.prior._log_resp(yv, v)                                     # (B,K)
        lc = torch.logsumexp(lr[:, :, None] + torch.log(self._onehot.to(lr.device))[None], dim=1)   # (B,C)
        return lc - torch.logsumexp(lr, dim=1, keepdim=True)

    def grad_log_prob(self, x: torch.Tensor, label, t=None, sde=None) -> torch.Tensor:
        """``grad_x log p_t(label | x_t)`` in closed form, shaped like x."""
        lab = self.check_label(label, x.shape[0])
        yv, v = self.prior._components(x, t, sde)
        lr = self.prior._log_resp(yv, v)                                     # (B,K)
        r_all = torch.softmax(lr, dim=1)
        in_c = self._onehot.to(lr.device)[:, lab.to(lr.device)].T > 0        # (B,K)
        r_c = torch.softmax(lr.masked_fill(~in_c, -math.inf), dim=1)
        g = -yv / v
        if self.prior.eigvecs is not None:
            g = torch.einsum("kdj,bkj->bkd", self.prior.eigvecs.to(g.device), g)
        out = ((r_c - r_all)[:, :, None] * g).sum(1)
        return out.reshape(x.shape).to(x.dtype)

    def logits_fn(self, sde):
        """The classifier as a noise-conditional callable ``(x, t) -> (B, C)`` log-probabilities,
        as :func:`score_sde.conditional.classifier_guidance` expects (autograd flows through it)."""
        def logits(x, t):
            return self.log_prob(x, t, sde).to(x.dtype)
        return logits

    def conditional_score_fn(self, sde):
        """Exact class-conditional score ``(x, t, label) -> grad log p_t(x | label)``; ``label=None``
        gives the unconditional score. It has ``num_classes`` (as a conditional model would)."""
        return _ExactConditionalScore(self, sde)


class _ExactConditionalScore:
    def __init__(self, clf: MixtureClassifier, sde):
        self.clf, self.sde, self.num_classes = clf, sde, clf.num_classes

    def __call__(self, x, t, label=None):
        base = self.clf.prior.score(x, t, self.sde)
        if label is None:
            return base
        return base + self.clf.grad_log_prob(x, label, t, self.sde)

"""Forward SDEs of score-based generative models, their reverse SDEs and probability-flow ODEs.

Notation (used throughout the package)
--------------------------------------
Every SDE here is linear with scalar coefficients::

    dx = f(t) x dt + g(t) dW,        t in [0, T],

so the perturbation kernel is Gaussian::

    x_t | x_0  ~  N(alpha(t) x_0, sigma(t)^2 I).

* ``alpha(t)``: the mean coefficient (1 for VE). Not DDPM's per-step alpha_i: DDPM's alpha-bar
  is ``alpha(t)**2``.
* ``sigma(t)``: the marginal standard deviation, computed with ``expm1`` so that float32 keeps
  full relative precision as t -> 0.
* ``log_snr(t) = lambda(t) = log(alpha^2 / sigma^2)``, decreasing in t, with inverse
  ``t_from_log_snr``. This is the schedule view used by exponential-integrator solvers
  (DDIM, DPM-Solver) and by EDM-style solvers (``sigma_edm = sigma / alpha``).
* ``x`` has shape ``(B, *event_shape)`` of any rank; ``t`` holds one time per sample, shape
  ``(B,)`` (a Python number is broadcast). Per-sample coefficients come back shaped ``(B,)``.

Discrete time
-------------
Integer timestep ``i in {0, ..., N-1}`` corresponds to continuous time
``t_i = T * (i + 1) / N``, and ``t_{-1} = 0`` is the clean data. Discrete quantities are derived
from the continuous marginal, never from ``beta(t) / N``::

    alphas_cumprod[i] = alpha(t_i)^2                      (DDPM's alpha-bar_i)
    betas[i]          = 1 - alphas_cumprod[i] / alphas_cumprod[i-1]   (always in [0, 1))
    discrete_sigmas[i] = sigma(t_i)                         (SMLD's sigma_i for VE)

so ``discretize`` is the exact Gaussian transition of the SDE between grid times (for VP it is
the DDPM step ``x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z``, for VE the SMLD step
``x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z``) and stays well defined with any number of
steps. A network trained on integer steps is used by continuous solvers through
``t_to_timestep`` (a float label), and a continuous one by discrete samplers through
``timestep_to_t``.

Default end times
-----------------
Each SDE carries ``sampling_eps``, ``likelihood_eps`` and ``training_eps`` (the smallest t used
by samplers, likelihood computation and the training loss). They follow the paper's code:
VP and sub-VP sample to 1e-3, VE to 1e-5; likelihoods and training use 1e-5.

VE and sigma_min
----------------
The paper's reference VE SDE reports ``sigma_min`` as the std at t=0, i.e. its "data" is
already noised at sigma_min. Here ``sigma(t)`` is the exact std of the forward SDE started at the
data, ``sigma(t)^2 = sigma_min^2 * ((sigma_max/sigma_min)^(2t) - 1)``, which is 0 at t=0. The
drift and diffusion are the paper's; only the marginal is exact.
"""
from __future__ import annotations

import abc
import math
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch

from .utils import append_dims, as_time, check_positive

__all__ = ["SDE", "VPSDE", "subVPSDE", "VESDE", "ReverseSDE", "ScoreFn", "ScalarSchedule", "CountingScoreFn",
           "tweedie", "reverse_drift", "reverse_discrete_drift", "posterior_coefficients", "OdeMethod",
           "torchdiffeq_methods"]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------- the reverse-process math, once
# Each formula below is written once and evaluated either with per-sample tensors (already
# broadcast to x's rank, by the SDE methods) or with float64 Python scalars (by ScalarSchedule,
# which the fixed-grid solvers use). Nothing else in the package re-derives them.
def tweedie(x, score, sigma2, alpha):
    """Tweedie's posterior mean ``E[x_0 | x_t] = (x_t + sigma^2 score) / alpha``."""
    return (x + sigma2 * score) / alpha


def reverse_drift(fx, g2, score, probability_flow: bool = False):
    """Drift of the reverse SDE ``f x - g^2 score`` (probability flow: ``f x - g^2 score / 2``),
    given the forward drift ``fx = f(t) x``."""
    c = 0.5 if probability_flow else 1.0
    return fx - (c * g2) * score


def reverse_discrete_drift(fx, G2, score, probability_flow: bool = False):
    """Reverse of the exact discretisation ``x_t = x_s + fx + G z``: the reverse step is
    ``x_s = x_t - rev_f + G z`` with ``rev_f = fx - G^2 score`` (probability flow: ``G^2 / 2``,
    no noise). Same form as :func:`reverse_drift` with ``g^2 dt`` replaced by ``G^2``."""
    return reverse_drift(fx, G2, score, probability_flow)


def posterior_coefficients(ratio, alpha_s, sig_t2, sig_s2, var_ts):
    """``q(x_s | x_t, x_0) = N(c_xt x_t + c_x0 x_0, var)`` for ``s < t``: returns ``(c_xt, c_x0, var)``
    from ``ratio = alpha_t / alpha_s``, ``alpha_s``, ``sigma_t^2``, ``sigma_s^2`` and the forward
    transition variance ``var_ts`` of ``x_t | x_s``."""
    return ratio * sig_s2 / sig_t2, alpha_s * var_ts / sig_t2, var_ts * sig_s2 / sig_t2


class SDE(abc.ABC):
    """Base class of linear forward SDEs ``dx = f(t) x dt + g(t) dW`` on ``[0, T]``.

    Subclasses implement the scalar schedule (``log_alpha``, ``sigma``, ``f``, ``g2``,
    ``t_from_log_snr``) and get everything else: marginals, prior, discretisation, posterior,
    reverse SDE and probability-flow ODE. Generic code asks the SDE (never ``isinstance``).
    """

    #: end times (see the module docstring); subclasses may override
    sampling_eps: float = 1e-3
    likelihood_eps: float = 1e-5
    training_eps: float = 1e-5

    def __init__(self, N: int = 1000, T: float = 1.0):
        if isinstance(N, bool) or not isinstance(N, int) or N < 1:
            raise ValueError(f"N (number of discretisation steps) must be an integer >= 1, got {N!r}")
        self.N = N
        self.T = check_positive("T", T)

    # ------------------------------------------------------------------ schedule (per subclass)
    @abc.abstractmethod
    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """``log alpha(t)`` (log of the mean coefficient); t of any shape, same shape out."""

    @abc.abstractmethod
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Marginal std ``sigma(t)`` of ``x_t | x_0``; t of any shape, same shape out."""

    @abc.abstractmethod
    def f(self, t: torch.Tensor) -> torch.Tensor:
        """Drift coefficient f(t) (the drift is ``f(t) * x``)."""

    @abc.abstractmethod
    def g2(self, t: torch.Tensor) -> torch.Tensor:
        """Squared diffusion coefficient g(t)^2."""

    @abc.abstractmethod
    def t_from_log_snr(self, lam: torch.Tensor) -> torch.Tensor:
        """Inverse of ``log_snr``: the t with ``log_snr(t) == lam``."""

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        """Std of the isotropic Gaussian prior p_T used to start sampling."""

    # ------------------------------------------------------------------ schedule view
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Mean coefficient alpha(t) (``sqrt(alpha-bar)`` in DDPM's notation)."""
        return torch.exp(self.log_alpha(t))

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """``lambda(t) = log(alpha(t)^2 / sigma(t)^2)``; +inf at t=0."""
        return 2.0 * (self.log_alpha(t) - torch.log(self.sigma(t)))

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """g(t)."""
        return torch.sqrt(self.g2(t))

    def transition_var(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Variance of ``x_t | x_s`` for ``s <= t``: ``sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2``."""
        r2 = torch.exp(2.0 * (self.log_alpha(t) - self.log_alpha(s)))
        return (self.sigma(t) ** 2 - r2 * self.sigma(s) ** 2).clamp_min(0.0)

    # ------------------------------------------------------------------ forward process
    def sde(self, x: torch.Tensor, t) -> Tuple[torch.Tensor, torch.Tensor]:
        """Drift ``f(t) x`` (shaped like x) and diffusion ``g(t)`` (shape ``(B,)``)."""
        t = as_time(t, x, self.T)
        return append_dims(self.f(t), x.ndim) * x, self.diffusion(t)

    def marginal_prob(self, x: torch.Tensor, t) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mean ``alpha(t) x`` (shaped like x) and std ``sigma(t)`` (shape ``(B,)``) of p_t(. | x_0=x)."""
        t = as_time(t, x, self.T)
        return append_dims(self.alpha(t), x.ndim) * x, self.sigma(t)

    def perturb(self, x0: torch.Tensor, t, noise: Optional[torch.Tensor] = None,
                generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Sample ``x_t = alpha(t) x0 + sigma(t) z``; returns ``(x_t, z)``."""
        mean, std = self.marginal_prob(x0, t)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return mean + append_dims(std, x0.ndim) * noise, noise

    def prior_sampling(self, shape, generator: Optional[torch.Generator] = None, device=None,
                       dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Draw ``shape`` (batch first) from the prior ``N(0, prior_std^2 I)``."""
        if generator is not None and device is None:
            device = generator.device
        z = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
        return z * self.prior_std

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of the prior at each sample of z: ``(B, ...) -> (B,)`` (nats)."""
        d = z[0].numel()
        s2 = self.prior_std ** 2
        return -0.5 * d * math.log(2 * math.pi * s2) - z.reshape(z.shape[0], -1).pow(2).sum(1) / (2 * s2)

    # ------------------------------------------------------------------ discrete time
    def timestep_to_t(self, i) -> torch.Tensor:
        """Continuous time of integer timestep i: ``t_i = T (i + 1) / N``."""
        i = torch.as_tensor(i)
        return (i.to(torch.get_default_dtype() if not i.is_floating_point() else i.dtype) + 1) * (self.T / self.N)

    def t_to_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """Float timestep label of continuous time t: ``N t / T - 1`` (inverse of timestep_to_t).

        Round it to use integer tables; a network conditioned on integer steps accepts the float.
        """
        return t * (self.N / self.T) - 1.0

    def discrete_times(self, device=None, dtype=torch.float64) -> torch.Tensor:
        """``t_i`` for i = 0..N-1, shape ``(N,)``."""
        return torch.arange(1, self.N + 1, device=device, dtype=dtype) * (self.T / self.N)

    def alphas_cumprod(self, device=None, dtype=torch.float64) -> torch.Tensor:
        """DDPM's alpha-bar_i = alpha(t_i)^2, shape ``(N,)``."""
        t = self.discrete_times(device=device, dtype=torch.float64)
        return torch.exp(2.0 * self.log_alpha(t)).to(dtype)

    def betas(self, device=None, dtype=torch.float64) -> torch.Tensor:
        """DDPM's beta_i = 1 - alpha-bar_i / alpha-bar_{i-1} (alpha-bar_{-1} = 1), shape ``(N,)``."""
        t = self.discrete_times(device=device, dtype=torch.float64)
        la = self.log_alpha(t)
        la_prev = torch.cat([la.new_zeros(1), la[:-1]])
        return (-torch.expm1(2.0 * (la - la_prev))).to(dtype)

    def discrete_sigmas(self, device=None, dtype=torch.float64) -> torch.Tensor:
        """sigma(t_i), shape ``(N,)``: SMLD's noise levels for VE."""
        return self.sigma(self.discrete_times(device=device, dtype=torch.float64)).to(dtype)

    def discretize(self, x: torch.Tensor, t, dt: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Exact Gaussian transition from ``s = max(t - dt, 0)`` to ``t`` (``dt`` defaults to T/N).

        Returns ``(f, G)`` with ``x_t = x_s + f + G z`` when evaluated at ``x = x_s``; f is shaped
        like x, G is ``(B,)``. VP: DDPM's step; VE: SMLD's step; sub-VP: its own exact step.
        """
        t = as_time(t, x, self.T)
        dt = self.T / self.N if dt is None else check_positive("dt", dt)
        s = (t - dt).clamp_min(0.0)
        ratio = torch.exp(self.log_alpha(t) - self.log_alpha(s))
        return append_dims(ratio - 1.0, x.ndim) * x, torch.sqrt(self.transition_var(t, s))

    def posterior(self, x_t: torch.Tensor, x0: torch.Tensor, t, s) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mean (like x) and std ``(B,)`` of ``q(x_s | x_t, x_0)`` for ``s < t``.

        With ``x0`` the posterior-mean (Tweedie) estimate this is the ancestral (DDPM / SMLD) step
        between arbitrary times, for every SDE.
        """
        t = as_time(t, x_t, self.T)
        s = as_time(s, x_t, self.T, name="s")
        var_ts = self.transition_var(t, s)
        sig_t2, sig_s2 = self.sigma(t) ** 2, self.sigma(s) ** 2
        ratio = torch.exp(self.log_alpha(t) - self.log_alpha(s))
        c_xt, c_x0, var = posterior_coefficients(ratio, self.alpha(s), sig_t2, sig_s2, var_ts)
        mean = append_dims(c_xt, x_t.ndim) * x_t + append_dims(c_x0, x_t.ndim) * x0
        return mean, torch.sqrt(var.clamp_min(0.0))

    def x0_from_score(self, x_t: torch.Tensor, t: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """Tweedie's posterior mean ``E[x_0 | x_t] = (x_t + sigma^2 score) / alpha``."""
        return tweedie(x_t, score, append_dims(self.sigma(t) ** 2, x_t.ndim), append_dims(self.alpha(t), x_t.ndim))

    def scalars(self) -> "ScalarSchedule":
        """A float64 view of this SDE's schedule at Python-float times (cached per time), used by
        the fixed-grid solvers; see :class:`ScalarSchedule`."""
        return ScalarSchedule(self)

    # ------------------------------------------------------------------ reverse time
    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> "ReverseSDE":
        """The reverse-time SDE (or, with ``probability_flow=True``, the probability-flow ODE)."""
        return ReverseSDE(self, score_fn, probability_flow)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"

    def _params(self) -> dict:
        return {"N": self.N, "T": self.T}


class ReverseSDE:
    """Reverse-time process of ``forward`` driven by ``score_fn(x, t)``, in the forward clock t.

    ``sde(x, t)`` returns the reverse drift ``f(t) x - c g(t)^2 score(x, t)`` (c = 1 for the
    reverse SDE, 1/2 for the probability-flow ODE) and the diffusion ``g(t)`` (a zero tensor for
    the ODE), to be integrated from t = T down to eps: ``dx = drift dt + diffusion dW_bar`` with
    dt < 0. Each call of ``sde`` or ``discretize`` evaluates ``score_fn`` once.
    """

    def __init__(self, forward: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        self.forward = forward
        self.score_fn = score_fn
        self.probability_flow = bool(probability_flow)
        self.N, self.T = forward.N, forward.T

    def sde(self, x: torch.Tensor, t) -> Tuple[torch.Tensor, torch.Tensor]:
        t = as_time(t, x, self.T)
        drift, diffusion = self.forward.sde(x, t)
        score = self.score_fn(x, t)
        drift = reverse_drift(drift, append_dims(diffusion ** 2, x.ndim), score, self.probability_flow)
        if self.probability_flow:
            diffusion = torch.zeros_like(diffusion)
        return drift, diffusion

    def discretize(self, x: torch.Tensor, t, dt: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Reverse of ``forward.discretize``: ``x_s = x_t - rev_f + rev_G z`` (reverse diffusion)."""
        t = as_time(t, x, self.T)
        f, G = self.forward.discretize(x, t, dt)
        score = self.score_fn(x, t)
        rev_f = reverse_discrete_drift(f, append_dims(G ** 2, x.ndim), score, self.probability_flow)
        rev_G = torch.zeros_like(G) if self.probability_flow else G
        return rev_f, rev_G


class ScalarSchedule:
    """float64 view of an SDE's schedule at Python-float times, for fixed-grid solvers.

    ``coef(t)`` returns ``{"alpha", "sigma", "log_alpha", "lam", "f", "g2"}`` as Python floats
    (``lam`` is the log-SNR, +inf where sigma = 0), computed once per time and cached. The other
    methods evaluate the shared formulas of this module (:func:`tweedie`, :func:`reverse_drift`,
    :func:`reverse_discrete_drift`, :func:`posterior_coefficients`) with these scalars, so that
    solvers multiply tensors only by float64 numbers and never re-derive the math.
    """

    def __init__(self, sde: SDE):
        self.sde = sde
        self._cache: dict = {}
        self._pairs: dict = {}

    def coef(self, t: float) -> dict:
        """float64 schedule values at t: alpha, sigma, log_alpha, lam (log-SNR), f, g2."""
        t = float(t)
        c = self._cache.get(t)
        if c is None:
            tt = torch.tensor(t, dtype=torch.float64)
            sde = self.sde
            la, sig = float(sde.log_alpha(tt)), float(sde.sigma(tt))
            c = {"alpha": math.exp(la), "sigma": sig, "log_alpha": la,
                 "lam": 2.0 * la - 2.0 * math.log(sig) if sig > 0 else math.inf,
                 "f": float(sde.f(tt)), "g2": float(sde.g2(tt))}
            self._cache[t] = c
        return c

    def prefetch(self, times) -> None:
        """Compute ``coef`` for all ``times`` (a 1-D float64 tensor, e.g. a solver's grid) and
        ``transition_var`` for consecutive pairs in a few vectorised operations (same values
        as one at a time), so that a sampling loop does no tensor work for its scalars."""
        tt = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
        if tt.numel() == 0:
            return
        sde = self.sde
        la, sig = sde.log_alpha(tt).tolist(), sde.sigma(tt).tolist()
        f, g2 = sde.f(tt).tolist(), sde.g2(tt).tolist()
        for i, t in enumerate(tt.tolist()):
            if t not in self._cache:
                self._cache[t] = {"alpha": math.exp(la[i]), "sigma": sig[i], "log_alpha": la[i],
                                  "lam": 2.0 * la[i] - 2.0 * math.log(sig[i]) if sig[i] > 0 else math.inf,
                                  "f": f[i], "g2": g2[i]}
        if tt.numel() > 1:
            tv = sde.transition_var(tt[:-1], tt[1:]).tolist()
            ts = tt.tolist()
            for i in range(len(tv)):
                self._pairs.setdefault((ts[i], ts[i + 1]), max(tv[i], 0.0))

    def transition_var(self, t: float, s: float) -> float:
        """Variance of the forward transition ``x_t | x_s`` (``s <= t``), clamped at 0."""
        key = (float(t), float(s))
        v = self._pairs.get(key)
        if v is None:
            v = max(float(self.sde.transition_var(torch.tensor(key[0], dtype=torch.float64),
                                                  torch.tensor(key[1], dtype=torch.float64))), 0.0)
            self._pairs[key] = v
        return v

    def transition_std(self, t: float, s: float) -> float:
        """Std of the forward transition ``x_t | x_s`` (DDPM's sqrt(beta) for VP)."""
        return math.sqrt(self.transition_var(t, s))

    def ratio(self, t: float, s: float) -> float:
        """``alpha_t / alpha_s``."""
        return math.exp(self.coef(t)["log_alpha"] - self.coef(s)["log_alpha"])

    def posterior(self, t: float, s: float):
        """``(c_xt, c_x0, std)`` of ``q(x_s | x_t, x_0) = N(c_xt x_t + c_x0 x_0, std^2)``, s < t."""
        ct, cs = self.coef(t), self.coef(s)
        c_xt, c_x0, var = posterior_coefficients(self.ratio(t, s), cs["alpha"], ct["sigma"] ** 2,
                                                 cs["sigma"] ** 2, self.transition_var(t, s))
        return c_xt, c_x0, math.sqrt(max(var, 0.0))

    def posterior_std(self, t: float, s: float) -> float:
        """Std of ``q(x_s | x_t, x_0)`` (the ancestral step's noise)."""
        return self.posterior(t, s)[2]

    def posterior_mean(self, x: torch.Tensor, x0: torch.Tensor, t: float, s: float) -> torch.Tensor:
        """Mean of ``q(x_s | x_t = x, x_0 = x0)``."""
        c_xt, c_x0, _ = self.posterior(t, s)
        return c_xt * x + c_x0 * x0

    def denoise(self, x: torch.Tensor, t: float, score: torch.Tensor) -> torch.Tensor:
        """Tweedie's ``E[x_0 | x_t = x]`` from the score at (x, t)."""
        c = self.coef(t)
        return tweedie(x, score, c["sigma"] ** 2, c["alpha"])

    def reverse_drift(self, x: torch.Tensor, t: float, score: torch.Tensor,
                      probability_flow: bool = False) -> torch.Tensor:
        """Reverse-SDE (or probability-flow) drift at (x, t), see :func:`reverse_drift`."""
        c = self.coef(t)
        return reverse_drift(c["f"] * x, c["g2"], score, probability_flow)

    def euler_step(self, x: torch.Tensor, t: float, s: float, score: torch.Tensor,
                   probability_flow: bool = False) -> torch.Tensor:
        """Deterministic Euler step ``x - (t - s) * reverse_drift`` from t to s < t, evaluated as
        ``(1 - dt f) x + dt c g^2 score`` (two operations; one where f = 0)."""
        c, dt = self.coef(t), t - s
        k = (0.5 if probability_flow else 1.0) * c["g2"] * dt
        return torch.add(x if c["f"] == 0.0 else (1.0 - dt * c["f"]) * x, score, alpha=k)

    def reverse_discrete_drift(self, x: torch.Tensor, t: float, s: float, score: torch.Tensor,
                               probability_flow: bool = False) -> torch.Tensor:
        """``rev_f`` of the reverse exact discretisation from t to s: ``x_s = x - rev_f + G z``
        with ``G = transition_std(t, s)`` (see :func:`reverse_discrete_drift`)."""
        return reverse_discrete_drift((self.ratio(t, s) - 1.0) * x, self.transition_var(t, s), score,
                                      probability_flow)


class CountingScoreFn:
    """The one counting, checking wrapper of a ``score_fn(x, t)`` (used by sampling and likelihood).

    Each call counts one evaluation (``calls``) and checks the output: a tensor shaped like x with
    a real floating dtype (anything else is a ValueError naming what came back); a floating
    output of another precision is cast to x's dtype. With ``need_grad=True`` the output must be
    connected to x through autograd (the likelihood's divergence needs it). Finiteness is the
    caller's business (the sampling loop checks it without a host synchronisation per step).
    """

    def __init__(self, score_fn: ScoreFn, need_grad: bool = False):
        if not callable(score_fn):
            raise ValueError("score_fn must be a callable score_fn(x, t) -> tensor shaped like x")
        self.score_fn = score_fn
        self.need_grad = need_grad
        self.calls = 0

    @property
    def nfe(self) -> int:
        """Number of calls made so far (alias of ``calls``)."""
        return self.calls

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.score_fn(x, t)
        self.calls += 1
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"score_fn(x, t) must return a tensor shaped like x {tuple(x.shape)}, got {got}")
        if not out.is_floating_point():
            raise ValueError(f"score_fn(x, t) must return a real floating-point tensor, got dtype {out.dtype}")
        if self.need_grad and not out.requires_grad:
            raise ValueError(
                "score_fn returned a tensor that does not depend on x through autograd, so its divergence "
                "cannot be computed; do not call the model under torch.no_grad() or detach its output")
        if out.dtype != x.dtype:
            out = out.to(x.dtype)
        return out


class OdeMethod(NamedTuple):
    """One torchdiffeq method: ``adaptive`` (chooses its own steps), ``evals_per_step`` (fixed-step
    methods; ``None`` where it is not constant) and ``order``."""
    adaptive: bool
    evals_per_step: Optional[int]
    order: int


_ODE_EVALS = {"euler": 1, "midpoint": 2, "rk4": 4, "heun2": 2, "heun3": 3}
_ODE_ORDER = {"euler": 1, "midpoint": 2, "rk4": 4, "heun2": 2, "heun3": 3, "dopri5": 5, "dopri8": 8, "bosh3": 3,
              "fehlberg2": 2, "adaptive_heun": 2, "tsit5": 5}


def torchdiffeq_methods() -> Dict[str, OdeMethod]:
    """The one torchdiffeq method table (name -> :class:`OdeMethod`), shared by the ODE sampler
    (``sample(method="ode", ode_method=...)``) and the likelihood (``log_likelihood(method=...)``).

    Read from the installed torchdiffeq (its solver table is private; the names of torchdiffeq
    0.2.x are the fallback). ``scipy_solver`` is left out: it copies the batch to the host in
    float64 on every evaluation.
    """
    global _ODE_TABLE
    if _ODE_TABLE is None:
        try:
            from torchdiffeq._impl.odeint import SOLVERS as classes
            from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver as adaptive_base
            adaptive = {k for k, v in classes.items() if issubclass(v, adaptive_base)}
            names = set(classes)
        except ImportError:  # pragma: no cover
            adaptive = {"dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun", "tsit5"}
            names = adaptive | {"euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams",
                                "fixed_adams"}
        names.discard("scipy_solver")
        _ODE_TABLE = {k: OdeMethod(k in adaptive, None if k in adaptive else _ODE_EVALS.get(k), _ODE_ORDER.get(k, 1))
                      for k in sorted(names)}
    return dict(_ODE_TABLE)


_ODE_TABLE: Optional[Dict[str, OdeMethod]] = None


class VPSDE(SDE):
    """Variance-preserving SDE (continuous DDPM): ``dx = -beta(t)/2 x dt + sqrt(beta(t)) dW``.

    ``beta(t) = beta_min + t (beta_max - beta_min)``; ``log alpha(t) = -t^2 (beta_max-beta_min)/4
    - t beta_min / 2``; ``sigma(t) = sqrt(1 - alpha(t)^2)``.
    """

    sampling_eps = 1e-3

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000, T: float = 1.0):
        super().__init__(N, T)
        self.beta_min = check_positive("beta_min", beta_min)
        self.beta_max = check_positive("beta_max", beta_max)
        if not self.beta_min < self.beta_max:
            raise ValueError(f"beta_min must be < beta_max, got beta_min={beta_min}, beta_max={beta_max}")

    def _params(self):
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, **super()._params()}

    @property
    def prior_std(self) -> float:
        return 1.0

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t):
        return -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def f(self, t):
        return -0.5 * self.beta(t)

    def g2(self, t):
        return self.beta(t)

    def transition_var(self, t, s):
        return -torch.expm1(2.0 * (self.log_alpha(t) - self.log_alpha(s)))

    def _t_from_log_alpha(self, m):
        # solve (beta_max - beta_min)/4 t^2 + beta_min/2 t + m = 0 for t >= 0 (m <= 0), stably
        d = self.beta_max - self.beta_min
        return -2.0 * m / (0.5 * self.beta_min + torch.sqrt(0.25 * self.beta_min ** 2 - d * m))

    def t_from_log_snr(self, lam):
        # alpha^2 = sigmoid(lambda)  =>  log alpha = -softplus(-lambda) / 2
        return self._t_from_log_alpha(-0.5 * torch.nn.functional.softplus(-lam))


class subVPSDE(VPSDE):
    """Sub-VP SDE: ``dx = -beta(t)/2 x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dW``.

    Same alpha(t) as VP, ``sigma(t) = 1 - alpha(t)^2`` (smaller than VP's). A first-class SDE
    here: exact discretisation, ancestral steps and correctors all work. Its std near t=0 is
    tiny (~1e-6 at t=1e-5), so ``score = -eps / sigma`` is large there: keep the end time eps.
    """

    def sigma(self, t):
        return -torch.expm1(2.0 * self.log_alpha(t))

    def g2(self, t):
        return self.beta(t) * -torch.expm1(4.0 * self.log_alpha(t))

    def transition_var(self, t, s):
        return SDE.transition_var(self, t, s)

    def t_from_log_snr(self, lam):
        # lambda = log u - 2 log(1 - u) with u = alpha^2; the root u < 1 of e^lam (1-u)^2 = u is
        # u = 2 / (2 + w + sqrt(w^2 + 4 w)), w = exp(-lambda)  (computed in float64)
        lam64 = lam.to(torch.float64)
        w = torch.exp(-lam64)
        log_u = math.log(2.0) - torch.log(2.0 + w + torch.sqrt(w * (w + 4.0)))
        return self._t_from_log_alpha(0.5 * log_u).to(lam.dtype)


class VESDE(SDE):
    """Variance-exploding SDE (continuous SMLD/NCSN): ``dx = sqrt(d[s(t)^2]/dt) dW``,
    ``s(t) = sigma_min (sigma_max/sigma_min)^t``.

    alpha(t) = 1; exact marginal std ``sigma(t) = sigma_min sqrt((sigma_max/sigma_min)^(2t) - 1)``
    (0 at t=0; see the module docstring on how this differs from the paper's code).
    """

    sampling_eps = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000, T: float = 1.0):
        super().__init__(N, T)
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def _params(self):
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, **super()._params()}

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def noise_level(self, t):
        """The paper's ``sigma_min (sigma_max/sigma_min)^(t/T)`` (the reference's marginal std)."""
        return self.sigma_min * torch.exp(t * (self._log_ratio / self.T))

    def log_alpha(self, t):
        return torch.zeros_like(t)

    def alpha(self, t):
        return torch.ones_like(t)

    def sigma(self, t):
        return self.sigma_min * torch.sqrt(torch.expm1(2.0 * (self._log_ratio / self.T) * t))

    def f(self, t):
        return torch.zeros_like(t)

    def g2(self, t):
        return self.noise_level(t) ** 2 * (2.0 * self._log_ratio / self.T)

    def transition_var(self, t, s):
        k = 2.0 * self._log_ratio / self.T
        return self.sigma_min ** 2 * torch.exp(k * s) * torch.expm1(k * (t - s))

    def t_from_log_snr(self, lam):
        # sigma^2 = exp(-lambda) = sigma_min^2 expm1(k t)
        k = 2.0 * self._log_ratio / self.T
        return torch.nn.functional.softplus(-lam - 2.0 * math.log(self.sigma_min)) / k

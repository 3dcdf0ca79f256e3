"""Noise schedules beyond the paper's three SDEs: cosine VP, EDM, the linear interpolant
(rectified flow), discrete DDPM beta tables and your own ``alpha(t), sigma(t)``.

Every class here is a :class:`score_sde.sde.SDE`: it implements the five scalar functions of the
base class (``log_alpha``, ``sigma``, ``f``, ``g2``, ``t_from_log_snr``) and ``prior_std``, and
inherits the marginals, prior, discretisation, posterior, reverse SDE and probability-flow ODE,
so every sampler, the likelihood, the losses and the analytic oracles work unchanged. Notation
as in :mod:`score_sde.sde`: ``x_t = alpha(t) x_0 + sigma(t) z`` and, for a given schedule,

    f(t)   = d log alpha / dt,
    g(t)^2 = d sigma^2 / dt - 2 f(t) sigma(t)^2 = -sigma(t)^2 d lambda / dt,

with ``lambda(t) = log(alpha^2 / sigma^2)`` the log-SNR; ``g^2 >= 0`` exactly when ``lambda`` is
decreasing, which the constructors check (ValueError otherwise).

End point and prior. Cosine and the linear interpolant reach ``alpha = 0`` at t = 1, where f and
g^2 blow up; they stop at a documented ``T < 1``. Every schedule's prior is the Gaussian
``N(0, sigma(T)^2 I)`` (the marginal at T of a data point at the origin); the prior mismatch
``KL(p_T || prior)`` is at most ``alpha(T)^2 E|x_0|^2 / (2 sigma(T)^2)`` nats, i.e.
:meth:`prior_mismatch_bpd` bits/dim for data of unit second moment per dimension (see
``docs/sde.md`` for the table).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .sde import SDE
from .utils import check_positive

__all__ = ["CosineVPSDE", "EDMSDE", "LinearInterpolantSDE", "ScheduleSDE", "DiscreteVPSDE",
           "ddpm_linear_betas", "iddpm_cosine_betas", "check_schedule", "prior_mismatch_bpd"]

_F64 = torch.float64


def _f64(t):
    return torch.as_tensor(t, dtype=_F64)


def prior_mismatch_bpd(sde: SDE, second_moment: float = 1.0) -> float:
    """Upper bound on ``KL(p_T || prior)`` per dimension in bits, for data with
    ``E|x_0|^2 / D = second_moment``: ``alpha(T)^2 second_moment / (2 sigma(T)^2 ln 2)``
    (prior ``N(0, sigma(T)^2 I)``; by convexity of KL in its first argument)."""
    T = _f64(sde.T)
    a, s = float(sde.alpha(T)), float(sde.sigma(T))
    kl = a ** 2 * second_moment / (2 * s ** 2)
    if abs(sde.prior_std - s) > 1e-12 * s:  # a prior wider than sigma(T) (e.g. VP's N(0, I))
        r = s ** 2 / sde.prior_std ** 2
        kl = 0.5 * (r - 1 - math.log(r)) + a ** 2 * second_moment / (2 * sde.prior_std ** 2)
    return kl / math.log(2)


def check_schedule(sde: SDE, eps: Optional[float] = None, n: int = 1025) -> None:
    """Raise ValueError unless, on ``[eps, T]`` (eps: the smallest of the SDE's end times),
    ``alpha > 0`` and ``sigma > 0`` are finite, the log-SNR is strictly decreasing and ``f``,
    ``g^2 >= 0`` are finite. Evaluated in float64 on ``n`` log- and ``n`` linearly spaced times."""
    if eps is None:
        eps = min(sde.sampling_eps, sde.likelihood_eps, sde.training_eps)
    eps = check_positive("eps", eps)
    if not eps < sde.T:
        raise ValueError(f"the end times must lie below T={sde.T}, got eps={eps}")
    t = torch.cat([torch.logspace(math.log10(eps), math.log10(sde.T), n, dtype=_F64),
                   torch.linspace(eps, sde.T, n, dtype=_F64)]).sort().values
    t = t[torch.cat([torch.ones(1, dtype=torch.bool), t[1:] - t[:-1] > 1e-9 * sde.T])]
    name = type(sde).__name__
    with torch.no_grad():
        la, sig = sde.log_alpha(t), sde.sigma(t)
    a = torch.exp(la)
    bad = ~(torch.isfinite(a) & (a > 0))
    if bool(bad.any()):
        raise ValueError(f"{name}: alpha(t) must be positive and finite on [eps, T] = [{eps:g}, {sde.T:g}]; "
                         f"it is {float(a[bad][0]):g} at t={float(t[bad][0]):.6g} (stop at a smaller T)")
    bad = ~(torch.isfinite(sig) & (sig > 0))
    if bool(bad.any()):
        raise ValueError(f"{name}: sigma(t) must be positive and finite on [eps, T] = [{eps:g}, {sde.T:g}]; "
                         f"it is {float(sig[bad][0]):g} at t={float(t[bad][0]):.6g}")
    lam = 2.0 * (la - torch.log(sig))
    inc = lam[1:] >= lam[:-1]
    if bool(inc.any()):
        i = int(inc.nonzero()[0])
        raise ValueError(f"{name}: the log-SNR log(alpha^2/sigma^2) must be strictly decreasing in t, but "
                         f"lambda({float(t[i]):.6g}) = {float(lam[i]):.6g} <= lambda({float(t[i + 1]):.6g}) = "
                         f"{float(lam[i + 1]):.6g}")
    with torch.no_grad():
        f, g2 = sde.f(t), sde.g2(t)
    bad = ~(torch.isfinite(f) & torch.isfinite(g2) & (g2 >= 0))
    if bool(bad.any()):
        raise ValueError(f"{name}: f(t) and g(t)^2 >= 0 must be finite on [eps, T]; at t={float(t[bad][0]):.6g} "
                         f"f={float(f[bad][0]):g}, g^2={float(g2[bad][0]):g} (are the derivatives right?)")


class _Schedule(SDE):
    """Shared parts: prior N(0, sigma(T)^2), per-instance end times, validation."""

    def _init_ends(self, sampling_eps, likelihood_eps, training_eps):
        for k, v in (("sampling_eps", sampling_eps), ("likelihood_eps", likelihood_eps),
                     ("training_eps", training_eps)):
            if v is not None:
                v = check_positive(k, v)
                if not v < self.T:
                    raise ValueError(f"{k} must lie below T={self.T}, got {v}")
                setattr(self, k, v)

    @property
    def prior_std(self) -> float:
        """``sigma(T)``: the prior is ``N(0, sigma(T)^2 I)``, the marginal at T of x_0 = 0."""
        return float(self.sigma(_f64(self.T)))


class CosineVPSDE(_Schedule):
    """Cosine schedule of improved DDPM (Nichol & Dhariwal 2021) as a continuous VP SDE.

    ``alpha(t)^2 = cos^2(phi(t)) / cos^2(phi(0))`` with ``phi(t) = (t + s) / (1 + s) * pi / 2``;
    ``sigma^2 = 1 - alpha^2``; ``f = -pi / (2 (1 + s)) tan(phi(t))``, ``g^2 = -2 f``
    (i.e. ``beta(t) = pi tan(phi(t)) / (1 + s)``). alpha reaches 0 at t = 1, so the SDE stops at
    ``T = 0.9946`` by default (DPM-Solver's choice for this schedule; alpha(T) = 0.0083, log-SNR
    -9.6). ``sigma`` and ``log_alpha`` are computed from the angle ``d = phi(t) - phi(0)`` without
    cancellation, so float32 keeps full relative precision at t -> 0.

    Args: ``s`` offset (0.008), ``T`` end time in (0, 1), ``N`` discrete steps; end times as VP.
    """

    def __init__(self, s: float = 0.008, T: float = 0.9946, N: int = 1000, sampling_eps: Optional[float] = None,
                 likelihood_eps: Optional[float] = None, training_eps: Optional[float] = None):
        super().__init__(N, T)
        s = float(s)
        if not (s >= 0 and math.isfinite(s)):
            raise ValueError(f"the cosine offset s must be a finite number >= 0, got {s!r}")
        if not self.T < 1.0:
            raise ValueError(f"CosineVPSDE: T must be < 1 (alpha(1) = 0, where f and g^2 are infinite), got {T}")
        self.s = s
        self._c = math.pi / (2.0 * (1.0 + s))
        self._phi0 = s / (1.0 + s) * math.pi / 2.0
        self._init_ends(sampling_eps, likelihood_eps, training_eps)
        check_schedule(self)

    def _params(self):
        return {"s": self.s, **super()._params()}

    def log_alpha(self, t):
        d = self._c * t
        return torch.log1p(-2.0 * torch.sin(0.5 * d) ** 2 - math.tan(self._phi0) * torch.sin(d))

    def sigma(self, t):
        d = self._c * t
        # cos^2 phi0 - cos^2 phi = sin(phi - phi0) sin(phi + phi0)
        return torch.sqrt((torch.sin(d) * torch.sin(2.0 * self._phi0 + d)).clamp_min(0.0)) / math.cos(self._phi0)

    def f(self, t):
        return -self._c * torch.tan(self._phi0 + self._c * t)

    def g2(self, t):
        return 2.0 * self._c * torch.tan(self._phi0 + self._c * t)

    def transition_var(self, t, s):
        return -torch.expm1(2.0 * (self.log_alpha(t) - self.log_alpha(s)))

    def t_from_log_snr(self, lam):
        # sigma^2 = sigmoid(-lam) and sin(d) sin(d + 2 phi0) = q := sigma^2 cos^2 phi0, a quadratic in
        # tan d:  (cos 2phi0 - q) tau^2 + sin(2phi0) tau - q = 0  (stable root, float64)
        lam64 = lam.to(_F64)
        q = torch.sigmoid(-lam64) * math.cos(self._phi0) ** 2
        a2, b = math.cos(2 * self._phi0), math.sin(2 * self._phi0)
        tau = 2.0 * q / (b + torch.sqrt(b * b + 4.0 * q * (a2 - q)))
        return (torch.atan(tau) / self._c).to(lam.dtype)


class EDMSDE(_Schedule):
    """EDM's schedule (Karras et al. 2022): ``alpha = 1``, ``sigma(t) = t``.

    **The time variable is the noise level itself**: t runs over ``[sigma_min, sigma_max]`` =
    ``[0.002, 80]`` by default, so ``T = sigma_max`` (not 1) and ``sampling_eps = sigma_min``.
    ``f = 0``, ``g^2 = 2 t`` (EDM's ``dx = sqrt(2 t) dW``), ``lambda = -2 log t``. Prior
    ``N(0, sigma_max^2 I)``. Likelihoods start at ``likelihood_eps = 1e-3`` (noise std 1e-3, as VP at
    its 1e-5), training draws t in ``[sigma_min, sigma_max]``. Integer timestep i maps to
    ``t_i = sigma_max (i + 1) / N`` (the base class's rule); EDM itself has no discrete steps.
    """

    likelihood_eps = 1e-3

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, N: int = 1000,
                 likelihood_eps: Optional[float] = None, training_eps: Optional[float] = None):
        sigma_min, sigma_max = check_positive("sigma_min", sigma_min), check_positive("sigma_max", sigma_max)
        if not sigma_min < sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        super().__init__(N, sigma_max)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self._init_ends(sigma_min, likelihood_eps, sigma_min if training_eps is None else training_eps)
        check_schedule(self)

    def _params(self):
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "N": self.N}

    def log_alpha(self, t):
        return torch.zeros_like(t)

    def alpha(self, t):
        return torch.ones_like(t)

    def sigma(self, t):
        return t.clone() if isinstance(t, torch.Tensor) else t

    def f(self, t):
        return torch.zeros_like(t)

    def g2(self, t):
        return 2.0 * t

    def transition_var(self, t, s):
        return (t - s) * (t + s)

    def t_from_log_snr(self, lam):
        return torch.exp(-0.5 * lam)


class LinearInterpolantSDE(_Schedule):
    """The linear interpolant of rectified flow / flow matching: ``alpha = 1 - t``, ``sigma = t``.

    ``f = -1 / (1 - t)``, ``g^2 = 2 t / (1 - t)``, ``lambda = 2 log((1 - t) / t)``, inverse
    ``t = sigmoid(-lambda / 2)``. Its probability-flow drift ``f x - g^2 score / 2`` is the flow
    velocity ``u = d x_t / dt = z - x_0`` in expectation, so the probability-flow ODE is the flow
    model's ODE (in the forward clock: data at t = 0, noise at t = T). alpha(1) = 0, so the SDE
    stops at ``T = 0.99`` by default (alpha(T) = 0.01, log-SNR -9.2); prior ``N(0, T^2 I)``.
    End times: sampling 2e-3 (EDM's final noise level sigma/alpha = 0.002), likelihood and
    training 1e-3. The reverse SDE is stiff near T (reverse drift ~ x / (1 - t)): Euler-Maruyama
    needs steps with ``dt < 2 (1 - T)`` there; the ODE solvers do not care.
    """

    sampling_eps = 2e-3
    likelihood_eps = 1e-3
    training_eps = 1e-3

    def __init__(self, T: float = 0.99, N: int = 1000, sampling_eps: Optional[float] = None,
                 likelihood_eps: Optional[float] = None, training_eps: Optional[float] = None):
        super().__init__(N, T)
        if not self.T < 1.0:
            raise ValueError(f"LinearInterpolantSDE: T must be < 1 (alpha(1) = 0, where f and g^2 are "
                             f"infinite), got {T}")
        self._init_ends(sampling_eps, likelihood_eps, training_eps)
        check_schedule(self)

    def log_alpha(self, t):
        return torch.log1p(-t)

    def alpha(self, t):
        return 1.0 - t

    def sigma(self, t):
        return t.clone() if isinstance(t, torch.Tensor) else t

    def f(self, t):
        return -1.0 / (1.0 - t)

    def g2(self, t):
        return 2.0 * t / (1.0 - t)

    def t_from_log_snr(self, lam):
        return torch.sigmoid(-0.5 * lam)


def _derivative(fn: Callable, t: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        tt = t.detach().to(_F64).requires_grad_(True)
        y = fn(tt)
        (d,) = torch.autograd.grad(y.sum(), tt)
    return d


class ScheduleSDE(_Schedule):
    """A linear SDE from your own schedule functions ``alpha(t)`` and ``sigma(t)``.

    Args:
        alpha, sigma: callables on a float64 tensor of times (any shape, elementwise), returning a
            tensor of the same shape; alpha > 0, sigma > 0 on ``(0, T]`` with a strictly decreasing
            log-SNR ``log(alpha^2 / sigma^2)`` (checked on ``[min end time, T]``).
        T: end time; N: discrete steps.
        dalpha, dsigma: optional derivatives ``alpha'(t)``, ``sigma'(t)``; by autograd otherwise.
        t_from_log_snr: optional inverse of the log-SNR; otherwise a monotone solve (bisection in
            float64 on ``[0, T]``, 100 halvings: exact to float64 resolution).
        prior_std: std of the prior (default ``sigma(T)``).
        sampling_eps, likelihood_eps, training_eps: end times (default 1e-3, 1e-5, 1e-5 times T).

    The functions are evaluated in float64 and the results cast to the dtype of t.
    """

    def __init__(self, alpha: Callable, sigma: Callable, T: float = 1.0, N: int = 1000,
                 dalpha: Optional[Callable] = None, dsigma: Optional[Callable] = None,
                 t_from_log_snr: Optional[Callable] = None, prior_std: Optional[float] = None,
                 sampling_eps: Optional[float] = None, likelihood_eps: Optional[float] = None,
                 training_eps: Optional[float] = None):
        super().__init__(N, T)
        for k, v in (("alpha", alpha), ("sigma", sigma), ("dalpha", dalpha), ("dsigma", dsigma),
                     ("t_from_log_snr", t_from_log_snr)):
            if v is not None and not callable(v):
                raise ValueError(f"{k} must be a callable of t (a float64 tensor), got {type(v).__name__}")
        self._alpha, self._sigma, self._dalpha, self._dsigma = alpha, sigma, dalpha, dsigma
        self._inverse = t_from_log_snr
        self._prior_std = None if prior_std is None else check_positive("prior_std", prior_std)
        self._init_ends(1e-3 * self.T if sampling_eps is None else sampling_eps,
                        1e-5 * self.T if likelihood_eps is None else likelihood_eps,
                        1e-5 * self.T if training_eps is None else training_eps)
        check_schedule(self)

    @property
    def prior_std(self) -> float:
        return self._prior_std if self._prior_std is not None else super().prior_std

    def _call(self, fn, t):
        t = torch.as_tensor(t)
        out = fn(t.to(_F64))
        return torch.as_tensor(out, dtype=_F64).expand(t.shape).to(t.dtype if t.is_floating_point() else _F64)

    def log_alpha(self, t):
        return torch.log(self._call(self._alpha, t))

    def alpha(self, t):
        return self._call(self._alpha, t)

    def sigma(self, t):
        return self._call(self._sigma, t)

    def _d(self, fn, dfn, t):
        t = torch.as_tensor(t)
        d = dfn(t.to(_F64)) if dfn is not None else _derivative(fn, t)
        return torch.as_tensor(d, dtype=_F64).expand(t.shape)

    def f(self, t):
        t = torch.as_tensor(t)
        a = self._call(self._alpha, t.to(_F64))
        return (self._d(self._alpha, self._dalpha, t) / a).to(t.dtype)

    def g2(self, t):
        # g^2 = 2 sigma sigma' - 2 f sigma^2 = 2 sigma^2 (sigma'/sigma - alpha'/alpha)
        t = torch.as_tensor(t)
        t64 = t.to(_F64)
        a, s = self._call(self._alpha, t64), self._call(self._sigma, t64)
        da, ds = self._d(self._alpha, self._dalpha, t64), self._d(self._sigma, self._dsigma, t64)
        return (2.0 * s * (ds - s * da / a)).to(t.dtype)

    def t_from_log_snr(self, lam):
        if self._inverse is not None:
            return self._call(self._inverse, lam)
        lam64 = lam.to(_F64)
        lo = torch.zeros_like(lam64)
        hi = torch.full_like(lam64, self.T)
        with torch.no_grad():
            for _ in range(100):
                mid = 0.5 * (lo + hi)
                above = self.log_snr(mid) > lam64         # lambda decreasing: the root lies right of mid
                lo = torch.where(above, mid, lo)
                hi = torch.where(above, hi, mid)
        return (0.5 * (lo + hi)).to(lam.dtype)


# ---------------------------------------------------------------------------------- discrete tables
def ddpm_linear_betas(N: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear beta table (Ho et al. 2020): ``linspace(beta_start, beta_end, N)``, float64."""
    return torch.linspace(beta_start, beta_end, N, dtype=_F64)


def iddpm_cosine_betas(N: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved DDPM's cosine table: ``beta_i = min(1 - abar((i+1)/N) / abar(i/N), max_beta)`` with
    ``abar(u) = cos^2((u + s) / (1 + s) pi / 2)``, float64 (the last betas are clipped at 0.999)."""
    u = torch.arange(N + 1, dtype=_F64) / N
    abar = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1.0 - abar[1:] / abar[:-1]).clamp(max=max_beta)


class DiscreteVPSDE(_Schedule):
    """A VP SDE from a table of DDPM betas (e.g. a trained model's), ``betas[i]`` for timestep i.

    Mapping (the base class's): integer timestep ``i in {0, ..., N-1}`` is ``t_i = T (i + 1) / N``
    with ``N = len(betas)``, and ``t_{-1} = 0`` is the data; ``alpha(t_i)^2`` is the table's
    ``alphas_cumprod[i] = prod_{j <= i} (1 - betas[j])``, exactly (so ``sde.betas()`` returns the table
    and ``discretize`` is the table's DDPM step). A network trained on integer steps is called with
    the float label ``t_to_timestep(t) = N t / T - 1`` (``time_label="timestep"``).

    Interpolation: ``log alpha(t)`` is **linear in t between grid times**, including the first
    interval ``(0, T/N)``, from ``log alpha(0) = 0`` to ``log alpha(t_0) = log(1 - beta_0) / 2``. So the
    SDE is VP with a piecewise-constant ``beta(t) = -N log(1 - betas[i]) / T`` on ``(t_{i-1}, t_i]``
    (``f = -beta / 2``, ``g^2 = beta``), its marginal at every grid time is the table's, and between
    them it is a genuine VP SDE (monotone log-SNR). Times in ``(0, T/N)`` lie below the first trained
    step (labels in (-1, 0)): the default ``sampling_eps`` is ``T/N`` (DDPM's last step),
    ``likelihood_eps`` and ``training_eps`` are ``1e-5 T`` as for VP.

    Raises ValueError unless betas is a 1-D table of finite values in (0, 1).
    """

    def __init__(self, betas, T: float = 1.0, sampling_eps: Optional[float] = None,
                 likelihood_eps: Optional[float] = None, training_eps: Optional[float] = None):
        b = torch.as_tensor(betas, dtype=_F64).detach().cpu()
        if b.ndim != 1 or b.numel() < 1:
            raise ValueError(f"betas must be a 1-D table of N >= 1 values, got shape {tuple(b.shape)}")
        bad = ~(torch.isfinite(b) & (b > 0) & (b < 1))
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ValueError(f"betas must lie in (0, 1) (DDPM's per-step noise variances); betas[{i}] = {float(b[i])!r}")
        super().__init__(int(b.numel()), T)
        self._betas = b
        self._la = torch.cat([b.new_zeros(1), 0.5 * torch.cumsum(torch.log1p(-b), 0)])   # log alpha at t_{-1..N-1}
        self._tk = torch.arange(self.N + 1, dtype=_F64) * (self.T / self.N)
        self._slope = (self._la[1:] - self._la[:-1]) * (self.N / self.T)                # f on each interval
        self._tables = {}
        self._init_ends(self.T / self.N if sampling_eps is None else sampling_eps,
                        1e-5 * self.T if likelihood_eps is None else likelihood_eps,
                        1e-5 * self.T if training_eps is None else training_eps)

    def _params(self):
        return {"N": self.N, "T": self.T}

    def _tab(self, device):
        key = str(device)
        if key not in self._tables:
            self._tables[key] = (self._la.to(device), self._tk.to(device), self._slope.to(device))
        return self._tables[key]

    def _interval(self, t):
        la, tk, slope = self._tab(t.device)
        t64 = t.to(_F64)
        k = torch.searchsorted(tk, t64.contiguous()).clamp(1, self.N) - 1      # t in (tk[k], tk[k+1]]
        return t64, k, la, tk, slope

    def log_alpha(self, t):
        t = torch.as_tensor(t)
        t64, k, la, tk, slope = self._interval(t)
        return (la[k] + slope[k] * (t64 - tk[k])).to(t.dtype if t.is_floating_point() else _F64)

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def f(self, t):
        t = torch.as_tensor(t)
        _, k, _, _, slope = self._interval(t)
        return slope[k].to(t.dtype)

    def g2(self, t):
        return -2.0 * self.f(t)

    def transition_var(self, t, s):
        return -torch.expm1(2.0 * (self.log_alpha(t) - self.log_alpha(s)))

    def t_from_log_snr(self, lam):
        la, tk, slope = self._tab(lam.device)
        m = -0.5 * torch.nn.functional.softplus(-lam.to(_F64))           # log alpha at the wanted t
        # la is decreasing: find k with la[k] >= m > la[k+1]
        k = (torch.searchsorted(-la, (-m).contiguous()) - 1).clamp(0, self.N - 1)
        t = tk[k] + (m - la[k]) / slope[k]
        return t.clamp(0.0, self.T).to(lam.dtype)

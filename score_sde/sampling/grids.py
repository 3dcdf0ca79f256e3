"""Time grids for samplers, chosen independently of the solver.

Every grid function has the signature ``grid(sde, steps, eps) -> tensor`` and returns the
``steps + 1`` times ``T = t_0 > t_1 > ... > t_steps = eps`` of the reverse-time integration,
as a 1-D float64 CPU tensor (the samplers move it where they need it). Grids are described in
the forward clock t of :mod:`score_sde.sde`; spacings that are defined in another variable
(log-SNR, EDM's ``sigma / alpha``) are mapped back to t with ``sde.t_from_log_snr``, so every
grid works for every SDE.

``uniform_t``      equal steps in t (the paper's samplers).
``quadratic``      ``t = eps + (T - eps) u^2`` for equal steps in u: finer near the data (DDIM's
                   "quad" spacing).
``log_snr``        equal steps in ``lambda(t) = log(alpha^2 / sigma^2)`` (DPM-Solver's default).
``log_snr_early``  ``lambda_i = lambda(T) + (lambda(eps) - lambda(T)) (i/N)^1.2``: log-SNR steps that
                   shrink towards T (finer where the modes are chosen).
``log_snr_late``   the same with power 0.6: steps that shrink towards eps (finer where sharp modes
                   take their width); the default of DPM-Solver++(2M) and of few-step UniPC.
``log_snr_jump``   one step from T to ``lambda = -5`` (``sigma/alpha ~ 12``: the near-prior start,
                   where the posterior mean of data on [-1, 1] is nearly the data mean), then
                   ``log_snr_early``'s power-1.2 steps from there to eps; UniPC's default from
                   15 steps.
``karras``         EDM's grid (Karras et al. 2022): equal steps in ``s^(1/rho)`` with
                   ``s = sigma / alpha``, ``rho = 7`` by default.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch

__all__ = ["uniform_t", "quadratic", "log_snr", "log_snr_power", "log_snr_early", "log_snr_late", "log_snr_jump", "karras", "GRIDS", "make_grid", "edm_sigma"]


def _check(sde, steps, eps):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    eps = float(eps)
    if not (0.0 < eps < sde.T):
        raise ValueError(f"eps (end time) must lie in (0, T) = (0, {sde.T}), got {eps!r}")
    return steps, eps


def _t64(v):
    return torch.as_tensor(v, dtype=torch.float64)


def edm_sigma(sde, t) -> torch.Tensor:
    """EDM's noise level ``sigma(t) / alpha(t)`` (float64), the noise of ``x / alpha``."""
    t = _t64(t)
    return torch.exp(-0.5 * sde.log_snr(t))


def _finish(sde, t, eps):
    # exact end points, strictly decreasing
    t = t.clone()
    t[0], t[-1] = sde.T, eps
    if not bool((t[1:] < t[:-1]).all()):
        raise ValueError("the time grid is not strictly decreasing; use fewer steps or a larger eps")
    return t


def uniform_t(sde, steps: int, eps: float) -> torch.Tensor:
    """``steps + 1`` equally spaced times from T down to eps."""
    steps, eps = _check(sde, steps, eps)
    return _finish(sde, torch.linspace(sde.T, eps, steps + 1, dtype=torch.float64), eps)


def quadratic(sde, steps: int, eps: float) -> torch.Tensor:
    """``t_i = eps + (T - eps) (1 - i/steps)^2``: quadratic spacing, dense near t = eps."""
    steps, eps = _check(sde, steps, eps)
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return _finish(sde, eps + (sde.T - eps) * u ** 2, eps)


def log_snr(sde, steps: int, eps: float) -> torch.Tensor:
    """Equal steps in the log-SNR ``lambda(t)`` between ``lambda(T)`` and ``lambda(eps)``."""
    steps, eps = _check(sde, steps, eps)
    lam = torch.linspace(float(sde.log_snr(_t64(sde.T))), float(sde.log_snr(_t64(eps))), steps + 1,
                         dtype=torch.float64)
    return _finish(sde, sde.t_from_log_snr(lam).to(torch.float64), eps)


def log_snr_power(sde, steps: int, eps: float, power: float = 1.0) -> torch.Tensor:
    """``lambda_i = lambda(T) + (lambda(eps) - lambda(T)) (i / steps)^power``: ``power = 1`` is
    :func:`log_snr`; ``power > 1`` makes the log-SNR steps shrink towards T, ``power < 1`` towards eps
    (the step ratio first / last is about ``power^(-1) (steps)^(1 - power)``)."""
    steps, eps = _check(sde, steps, eps)
    if not power > 0:
        raise ValueError(f"power must be positive, got {power!r}")
    lo, hi = float(sde.log_snr(_t64(sde.T))), float(sde.log_snr(_t64(eps)))
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64) ** power
    return _finish(sde, sde.t_from_log_snr(lo + (hi - lo) * u).to(torch.float64), eps)


def log_snr_jump(sde, steps: int, eps: float, lam_jump: float = -5.0, power: float = 1.2) -> torch.Tensor:
    """One step from T straight to log-SNR ``lam_jump`` (default -5: ``sigma/alpha ~ 12``, where the
    posterior mean of data on [-1, 1] has barely left the data mean), then ``steps - 1`` steps of
    :func:`log_snr_power` (``power``) from there to eps. Where ``lambda(T) >= lam_jump`` (or with one
    step) it is :func:`log_snr_power` itself."""
    steps, eps = _check(sde, steps, eps)
    if not power > 0:
        raise ValueError(f"power must be positive, got {power!r}")
    lo, hi = float(sde.log_snr(_t64(sde.T))), float(sde.log_snr(_t64(eps)))
    if steps < 2 or not lo < float(lam_jump) < hi:
        return log_snr_power(sde, steps, eps, power)
    u = torch.linspace(0.0, 1.0, steps, dtype=torch.float64) ** power
    lam = torch.cat([_t64([lo]), lam_jump + (hi - lam_jump) * u])
    return _finish(sde, sde.t_from_log_snr(lam).to(torch.float64), eps)


def log_snr_early(sde, steps: int, eps: float) -> torch.Tensor:
    """:func:`log_snr_power` with power 1.2 (UniPC-3's default from 15 steps before
    :func:`log_snr_jump`, docs/sampling.md)."""
    return log_snr_power(sde, steps, eps, 1.2)


def log_snr_late(sde, steps: int, eps: float) -> torch.Tensor:
    """:func:`log_snr_power` with power 0.6 (measured best for second-order multistep at ~10 NFE)."""
    return log_snr_power(sde, steps, eps, 0.6)


def karras(sde, steps: int, eps: float, rho: float = 7.0) -> torch.Tensor:
    """EDM's grid: ``s_i = (s_max^(1/rho) + i/steps (s_min^(1/rho) - s_max^(1/rho)))^rho`` with
    ``s = sigma / alpha`` from ``s_max = s(T)`` to ``s_min = s(eps)``, mapped back to t."""
    steps, eps = _check(sde, steps, eps)
    if not rho > 0:
        raise ValueError(f"rho must be positive, got {rho!r}")
    s_max, s_min = float(edm_sigma(sde, sde.T)), float(edm_sigma(sde, eps))
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    s = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    return _finish(sde, sde.t_from_log_snr(-2.0 * torch.log(s)).to(torch.float64), eps)


#: name -> grid function ``(sde, steps, eps) -> (steps + 1,) float64``
GRIDS: Dict[str, Callable] = {
    "uniform_t": uniform_t,
    "quadratic": quadratic,
    "log_snr": log_snr,
    "log_snr_early": log_snr_early,
    "log_snr_late": log_snr_late,
    "log_snr_jump": log_snr_jump,
    "karras": karras,
}


def make_grid(grid, sde, steps: int, eps: float) -> torch.Tensor:
    """Resolve ``grid`` (a name in :data:`GRIDS`, a callable ``(sde, steps, eps)``, or an explicit
    decreasing sequence of times from T or below down to eps) into a float64 tensor."""
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r}; available: {sorted(GRIDS)} (or a callable, or a tensor of times)")
        return GRIDS[grid](sde, steps, eps)
    if callable(grid):
        t = _t64(grid(sde, steps, eps)).cpu()
    else:
        try:
            t = _t64(grid).detach().cpu().reshape(-1)
        except Exception:
            raise ValueError(f"grid must be a name in {sorted(GRIDS)}, a callable or a sequence of times; got {type(grid).__name__}") from None
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError(f"grid must give at least 2 times, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or not bool((t[1:] < t[:-1]).all()):
        raise ValueError("grid times must be finite and strictly decreasing (from T towards eps)")
    if float(t[0]) > sde.T * (1 + 1e-9) or float(t[-1]) <= 0.0:
        raise ValueError(f"grid times must lie in (0, T] = (0, {sde.T}], got [{float(t[-1])}, {float(t[0])}]")
    return t

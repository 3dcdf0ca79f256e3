"""Default end point of sampling: a noise level, not a time (one small place, used by ``sample``).

The paper's code integrates VP and sub-VP to ``t = 1e-3`` and VE to ``t = 1e-5``
(``sde.sampling_eps``). For VP that leaves noise of std ``sigma/alpha = 0.0105``, as wide as
modes that are one 8-bit level narrow, and the final denoising step (Tweedie's posterior mean)
then shrinks every such mode: every solver converges to a sample set whose modes are ~17% too
narrow. Here the default end point is the time where EDM's noise level ``sigma(t)/alpha(t)``
equals :data:`END_SIGMA`, small against the resolution of 8-bit data on [-1, 1] (1/127.5), for
every SDE (found through ``sde.t_from_log_snr``, no class checks).

``eps="paper"`` restores the paper's end times (``sde.sampling_eps``) to reproduce its numbers;
a number is used as the end time itself.
"""
from __future__ import annotations

import math

import torch

__all__ = ["END_SIGMA", "eps_at_noise_level", "resolve_eps"]

#: default end noise level ``sigma/alpha`` (chosen by measurement; see docs/sampling.md)
END_SIGMA = 1e-3


def eps_at_noise_level(sde, sigma_end: float) -> float:
    """The time t at which ``sigma(t) / alpha(t) == sigma_end`` (float)."""
    sigma_end = float(sigma_end)
    if not sigma_end > 0:
        raise ValueError(f"the end noise level must be positive, got {sigma_end!r}")
    lam = torch.tensor(-2.0 * math.log(sigma_end), dtype=torch.float64)
    return float(sde.t_from_log_snr(lam))


def resolve_eps(sde, eps, solver=None) -> float:
    """End time for ``sample(..., eps=eps)``: ``None`` -> the solver's own fixed end (``ddpm``)
    or the time of noise level :data:`END_SIGMA`; ``"paper"`` -> ``sde.sampling_eps``; a number
    -> itself (checked to lie in (0, T))."""
    if eps is None:
        eps = solver.default_eps() if solver is not None else eps_at_noise_level(sde, END_SIGMA)
    elif isinstance(eps, str):
        if eps != "paper":
            raise ValueError(f"eps must be a number in (0, T), None (default end noise level "
                             f"sigma/alpha = {END_SIGMA}) or 'paper' (sde.sampling_eps), got {eps!r}")
        eps = sde.sampling_eps
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a number in (0, T), got {eps!r}") from None
    if not (0.0 < eps < sde.T):
        raise ValueError(f"eps (end time) must lie in (0, T) = (0, {sde.T}), got {eps!r}")
    return eps

"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2) on any SDE's schedule view.

EDM works with ``y = x / alpha`` and the noise level ``s = sigma / alpha``, in which the
probability-flow ODE is ``dy/ds = (y - D) / s``. Each step from ``s_i`` to ``s_{i+1}``:

1. churn: if ``S_tmin <= s_i <= S_tmax``, raise the noise to ``s_hat = (1 + gamma) s_i`` with
   ``gamma = min(S_churn / steps, sqrt(2) - 1)`` by adding noise
   ``sqrt(s_hat^2 - s_i^2) S_noise z`` (``s_hat`` is capped at ``s(T)``);
2. Euler step of the ODE from ``s_hat`` to ``s_{i+1}``;
3. Heun's second-order correction (the final step to eps keeps it: the loop's final denoising
   call is EDM's Euler step to s = 0).

Two score calls per step. ``S_churn = 0`` is the deterministic Heun method (order 2); otherwise
the sampler is stochastic with weak order 1. ``S_tmin``, ``S_tmax`` are noise levels
``sigma/alpha``.
"""
from __future__ import annotations

import math

from .base import Evaluator, Solver
from .singlestep import time_at_half_log_snr

__all__ = ["EDMStochastic"]


class EDMStochastic(Solver):
    """EDM's Algorithm 2; options ``S_churn`` (default 10), ``S_tmin`` (0), ``S_tmax`` (inf),
    ``S_noise`` (1)."""
    name = "edm"
    evals_per_step = 2
    default_grid = "log_snr"
    default_steps = 25
    options = {"S_churn": 10.0, "S_tmin": 0.0, "S_tmax": math.inf, "S_noise": 1.0}

    def validate(self):
        o = self.opts
        for k in o:
            try:
                o[k] = float(o[k])
            except (TypeError, ValueError):
                raise ValueError(f"{k} must be a number, got {o[k]!r}") from None
            if not o[k] >= 0:
                raise ValueError(f"{k} must be >= 0, got {o[k]!r}")
        self.stochastic = o["S_churn"] > 0 and o["S_noise"] > 0
        self.ode = not self.stochastic
        self.order = 1 if self.stochastic else 2

    def step(self, m: Evaluator, x, t, s, state):
        o = self.opts
        ct, cs = m.coef(t), m.coef(s)
        s_i, s_next = ct["sigma"] / ct["alpha"], cs["sigma"] / cs["alpha"]
        y = x / ct["alpha"]
        n = len(state["grid"]) - 1
        gamma = min(o["S_churn"] / n, math.sqrt(2.0) - 1.0) if o["S_tmin"] <= s_i <= o["S_tmax"] else 0.0
        t_hat = t
        if gamma > 0:
            s_top = math.exp(-0.5 * m.coef(self.sde.T)["lam"])
            s_hat = min(s_i * (1.0 + gamma), s_top)
            if s_hat > s_i:
                t_hat = min(time_at_half_log_snr(self.sde, -math.log(s_hat)), self.sde.T)
                s_hat = m.coef(t_hat)["sigma"] / m.coef(t_hat)["alpha"]
                y = y + math.sqrt(max(s_hat ** 2 - s_i ** 2, 0.0)) * o["S_noise"] * m.randn_like(y)
                s_i = s_hat
        ch = m.coef(t_hat)
        d1 = (y - m.denoise(ch["alpha"] * y, t_hat)) / s_i
        y_e = y + (s_next - s_i) * d1
        d2 = (y_e - m.denoise(cs["alpha"] * y_e, s)) / s_next
        return cs["alpha"] * (y + (s_next - s_i) * 0.5 * (d1 + d2))

"""Single-step DPM-Solvers (Lu et al. 2022a, 2022b) on any SDE's schedule view.

``l = log(alpha / sigma)`` (half log-SNR), ``h = l_s - l_t``; intermediate times ``s_k`` sit at
``l_t + r_k h`` (mapped back with ``sde.t_from_log_snr``). ``eps = -sigma * score`` is the noise
prediction, ``D`` the data prediction.

``dpm_solver_2s``   DPM-Solver-2 (noise form, r1 = 1/2), order 2, two calls per step::

                        u   = (alpha_s1/alpha_t) x - sigma_s1 expm1(r1 h) eps_t
                        x_s = (alpha_s/alpha_t) x - sigma_s expm1(h) eps_t
                              - sigma_s / (2 r1) expm1(h) (eps(u, s1) - eps_t)

``dpm_solver_3s``   DPM-Solver-3 (noise form, r1 = 1/3, r2 = 2/3), order 3, three calls per step.
``dpmpp_2s``        DPM-Solver++(2S) (data form, r1 = 1/2), order 2, two calls per step::

                        u   = (sigma_s1/sigma_t) x - alpha_s1 expm1(-r1 h) D_t
                        x_s = (sigma_s/sigma_t) x - alpha_s expm1(-h) ((1 - 1/(2 r1)) D_t + D(u, s1) / (2 r1))
"""
from __future__ import annotations

import math

import torch

from .base import Evaluator, Solver

__all__ = ["DPMSolver2S", "DPMSolver3S", "DPMSolverPP2S", "time_at_half_log_snr"]


def time_at_half_log_snr(sde, l: float) -> float:
    """The time t with ``log(alpha/sigma) == l``."""
    return float(sde.t_from_log_snr(torch.tensor(2.0 * l, dtype=torch.float64)))


def _eps(m: Evaluator, x, t):
    return -m.coef(t)["sigma"] * m.score(x, t)


class _SingleStep(Solver):
    ode = True
    default_grid = "log_snr"
    default_steps = 10
    options = {}

    def _mid(self, m, ct, h, r):
        return time_at_half_log_snr(self.sde, 0.5 * ct["lam"] + r * h)


class DPMSolver2S(_SingleStep):
    """DPM-Solver-2 (single-step, noise prediction, order 2, 2 calls per step)."""
    name = "dpm_solver_2s"
    order = 2
    evals_per_step = 2

    def step(self, m: Evaluator, x, t, s, state):
        r1 = 0.5
        ct, cs = m.coef(t), m.coef(s)
        h = 0.5 * (cs["lam"] - ct["lam"])
        t1 = self._mid(m, ct, h, r1)
        c1 = m.coef(t1)
        e_t = _eps(m, x, t)
        u = math.exp(c1["log_alpha"] - ct["log_alpha"]) * x - c1["sigma"] * math.expm1(r1 * h) * e_t
        e_1 = _eps(m, u, t1)
        phi1 = math.expm1(h)
        return (math.exp(cs["log_alpha"] - ct["log_alpha"]) * x - cs["sigma"] * phi1 * e_t
                - (0.5 / r1) * cs["sigma"] * phi1 * (e_1 - e_t))


class DPMSolver3S(_SingleStep):
    """DPM-Solver-3 (single-step, noise prediction, order 3, 3 calls per step)."""
    name = "dpm_solver_3s"
    order = 3
    evals_per_step = 3
    default_steps = 7

    def step(self, m: Evaluator, x, t, s, state):
        r1, r2 = 1.0 / 3.0, 2.0 / 3.0
        ct, cs = m.coef(t), m.coef(s)
        h = 0.5 * (cs["lam"] - ct["lam"])
        t1, t2 = self._mid(m, ct, h, r1), self._mid(m, ct, h, r2)
        c1, c2 = m.coef(t1), m.coef(t2)
        phi_11, phi_12, phi_1 = math.expm1(r1 * h), math.expm1(r2 * h), math.expm1(h)
        phi_22 = math.expm1(r2 * h) / (r2 * h) - 1.0
        phi_2 = phi_1 / h - 1.0
        e_t = _eps(m, x, t)
        u1 = math.exp(c1["log_alpha"] - ct["log_alpha"]) * x - c1["sigma"] * phi_11 * e_t
        d1 = _eps(m, u1, t1) - e_t
        u2 = (math.exp(c2["log_alpha"] - ct["log_alpha"]) * x - c2["sigma"] * phi_12 * e_t
              - (r2 / r1) * c2["sigma"] * phi_22 * d1)
        d2 = _eps(m, u2, t2) - e_t
        return (math.exp(cs["log_alpha"] - ct["log_alpha"]) * x - cs["sigma"] * phi_1 * e_t
                - (1.0 / r2) * cs["sigma"] * phi_2 * d2)


class DPMSolverPP2S(_SingleStep):
    """DPM-Solver++(2S) (single-step, data prediction, order 2, 2 calls per step)."""
    name = "dpmpp_2s"
    order = 2
    evals_per_step = 2

    def step(self, m: Evaluator, x, t, s, state):
        r1 = 0.5
        ct, cs = m.coef(t), m.coef(s)
        h = 0.5 * (cs["lam"] - ct["lam"])
        t1 = self._mid(m, ct, h, r1)
        c1 = m.coef(t1)
        d_t = m.denoise(x, t)
        u = (c1["sigma"] / ct["sigma"]) * x - c1["alpha"] * math.expm1(-r1 * h) * d_t
        d_1 = m.denoise(u, t1)
        return (cs["sigma"] / ct["sigma"]) * x - cs["alpha"] * math.expm1(-h) * (
            (1.0 - 0.5 / r1) * d_t + (0.5 / r1) * d_1)

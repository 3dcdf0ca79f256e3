"""Few-step solvers on the schedule view of any SDE: DDIM, Heun (EDM), DPM-Solver++.

All of them use only ``alpha(t)``, ``sigma(t)`` and ``lambda(t)`` of the SDE and the data
prediction ``D(x, t) = E[x_0 | x_t = x] = (x + sigma^2 score) / alpha`` (one score call), so
they work for VP, sub-VP, VE and any other linear SDE. Below ``h = (lambda(s) - lambda(t)) / 2``
is the step in half-log-SNR ``log(alpha / sigma)`` (DPM-Solver's lambda) from t to s < t.

``ddim``          DDIM (Song et al. 2021) with ``eta``: ``x_s = alpha_s D + sqrt(sigma_s^2 - c^2)
                  (x - alpha_t D) / sigma_t + c z``, ``c = eta * posterior std``; eta = 0 is the
                  deterministic first-order solver of the probability-flow ODE, eta = 1 is
                  ancestral sampling.
``heun``          EDM's second-order Heun method (Karras et al. 2022) on ``y = x / alpha`` against
                  ``s = sigma / alpha``: ``dy/ds = (y - D) / s``; two score calls per step.
``dpmpp_2m``      DPM-Solver++(2M) (Lu et al. 2022), multistep, order 2, one call per step.
``dpmpp_3m``      DPM-Solver++(3M), multistep, order 3, one call per step.
``dpmpp_2m_sde``  SDE-DPM-Solver++(2M) (midpoint form) with ``eta`` (1: the reverse SDE).

Multistep solvers start with lower orders (the first step is first order). With
``lower_order_final=True`` (default) and fewer than 10 steps the last steps also drop to the
order the remaining steps allow, as in DPM-Solver's reference implementation, which keeps
them stable at very few steps.
"""
from __future__ import annotations

import math

import torch

from .base import Evaluator, Solver
from .unipc import UniCAttachable

__all__ = ["DDIM", "Heun", "DPMSolverPP", "DPMSolverPP2M", "DPMSolverPP3M", "DPMSolverPP2MSDE"]


def _check_eta(eta):
    try:
        eta = float(eta)
    except (TypeError, ValueError):
        raise ValueError(f"eta must be a number >= 0, got {eta!r}") from None
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    return eta


class DDIM(Solver):
    """DDIM with ``eta`` (default 0: deterministic, first order, one call per step)."""
    name = "ddim"
    order = 1
    default_grid = "quadratic"
    default_steps = 50
    options = {"eta": 0.0}
    supports_after_step = True

    def validate(self):
        self.opts["eta"] = _check_eta(self.opts["eta"])
        self.stochastic = self.opts["eta"] > 0
        self.ode = not self.stochastic

    def step(self, m: Evaluator, x, t, s, state):
        ct, cs = m.coef(t), m.coef(s)
        d = m.denoise(x, t)
        eta = self.opts["eta"]
        c = eta * m.posterior_std(t, s) if eta > 0 else 0.0
        c = min(c, cs["sigma"])
        k = math.sqrt(max(cs["sigma"] ** 2 - c ** 2, 0.0)) / ct["sigma"]
        # x_s = alpha_s D + k (x - alpha_t D) + c z
        x_new = k * x + (cs["alpha"] - k * ct["alpha"]) * d
        if c > 0:
            x_new = x_new + c * m.randn_like(x)
        return x_new


class Heun(Solver):
    """EDM's Heun method (second order, two calls per step) on ``y = x / alpha`` vs ``s = sigma / alpha``."""
    name = "heun"
    order = 2
    ode = True
    evals_per_step = 2
    default_grid = "log_snr"   # karras (EDM's) measured 3x worse with the default end point (docs/sampling.md)
    default_steps = 18
    options = {}
    supports_after_step = True

    def step(self, m: Evaluator, x, t, s, state):
        # EDM's Heun step on y = x / alpha against s = sigma / alpha, with the slopes
        # dy/ds = (y - D) / s = -sigma * score written out (the same step with fewer operations):
        #   x_e   = r x - h sigma_t score(x, t)                (Euler predictor; r = alpha_s / alpha_t)
        #   x_new = r x - h (sigma_t score(x, t) + sigma_s score(x_e, s)) / 2,  h = alpha_s (s_s - s_t)
        ct, cs = m.coef(t), m.coef(s)
        h = cs["alpha"] * (cs["sigma"] / cs["alpha"] - ct["sigma"] / ct["alpha"])
        r = cs["alpha"] / ct["alpha"]
        sc1 = m.score(x, t)
        rx = x if r == 1.0 else r * x
        x_e = torch.add(rx, sc1, alpha=-h * ct["sigma"])
        sc2 = m.score(x_e, s)
        out = torch.add(x_e, sc1, alpha=0.5 * h * ct["sigma"])
        return out.add_(sc2, alpha=-0.5 * h * cs["sigma"])


class DPMSolverPP(Solver):
    """Multistep DPM-Solver++ in data prediction; ``solver_order`` 1, 2 or 3.

    Options: ``solver_order`` (fixed by the registered names ``dpmpp_2m`` / ``dpmpp_3m``),
    ``lower_order_final`` (see the module docstring); ``corrector="unic"`` on ``dpmpp_2m`` /
    ``dpmpp_3m`` adds UniPC's corrector at no extra call (:mod:`score_sde.sampling.unipc`).
    """
    name = "dpmpp"
    ode = True
    default_grid = "log_snr"   # measured best with the default end point (docs/sampling.md)
    default_steps = 20
    solver_order = 2
    options = {"lower_order_final": True}

    @property
    def order(self):
        return self.solver_order

    def validate(self):
        if not isinstance(self.opts["lower_order_final"], bool):
            raise ValueError("lower_order_final must be True or False")

    def init_state(self, x, grid):
        return {"hist": []}

    def _order_now(self, state):
        k = min(self.solver_order, 1 + len(state["hist"]))
        n = len(state["grid"]) - 1
        if self.opts["lower_order_final"] and n < 10:
            k = min(k, n - state["index"])
        return max(k, 1)

    def step(self, m: Evaluator, x, t, s, state):
        if self.solver_order == 2 and self.opts.get("corrector", "none") == "none":
            return self._step_2m(m, x, t, s, state)   # fused form (UniC needs the denoise call below)
        ct, cs = m.coef(t), m.coef(s)
        lt, ls = 0.5 * ct["lam"], 0.5 * cs["lam"]
        h = ls - lt
        d0 = m.denoise(x, t)
        k = self._order_now(state)
        hist = state["hist"]
        phi1 = math.expm1(-h)
        x_new = (cs["sigma"] / ct["sigma"]) * x - cs["alpha"] * phi1 * d0
        if k >= 2:
            l1, d_1 = hist[-1]
            r0 = (lt - l1) / h
            d1_0 = (d0 - d_1) / r0
            if k == 2:
                x_new = x_new - 0.5 * cs["alpha"] * phi1 * d1_0
            else:
                l2, d_2 = hist[-2]
                r1 = (l1 - l2) / h
                d1_1 = (d_1 - d_2) / r1
                d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi2 = phi1 / h + 1.0
                phi3 = phi2 / h - 0.5
                x_new = x_new + cs["alpha"] * phi2 * d1 - cs["alpha"] * phi3 * d2
        hist.append((lt, d0))
        if len(hist) > 2:
            hist.pop(0)
        return x_new

    def _step_2m(self, m: Evaluator, x, t, s, state):
        # the order-1/2 update above with the data predictions D = u / alpha, u = x + sigma^2 score,
        # folded into the coefficients (fewer full-size operations, same step):
        #   x_s = (sigma_s / sigma_t) x - alpha_s phi1 [(1 + 1/(2 r0)) D_0 - D_-1 / (2 r0)]
        ct, cs = m.coef(t), m.coef(s)
        lt, ls = 0.5 * ct["lam"], 0.5 * cs["lam"]
        h = ls - lt
        u0 = torch.add(x, m.score(x, t), alpha=ct["sigma"] ** 2)
        b = -cs["alpha"] * math.expm1(-h)
        hist = state["hist"]
        x_new = (cs["sigma"] / ct["sigma"]) * x
        if self._order_now(state) >= 2:
            l1, u1, a1 = hist[-1]
            c = 0.5 / ((lt - l1) / h)
            x_new.add_(u0, alpha=b * (1.0 + c) / ct["alpha"]).add_(u1, alpha=-b * c / a1)
        else:
            x_new.add_(u0, alpha=b / ct["alpha"])
        hist.append((lt, u0, ct["alpha"]))
        if len(hist) > 2:
            hist.pop(0)
        return x_new


class DPMSolverPP2M(UniCAttachable, DPMSolverPP):
    """DPM-Solver++(2M): second order, one score call per step; default grid ``log_snr_late``
    (measured on sharp mixtures: its spread error falls 10 -> 20 -> 50 NFE there, not on ``log_snr``)."""
    name = "dpmpp_2m"
    solver_order = 2
    default_grid = "log_snr_late"
    options = {**DPMSolverPP.options, **UniCAttachable.corrector_options}


class DPMSolverPP3M(UniCAttachable, DPMSolverPP):
    """DPM-Solver++(3M): third order, one score call per step."""
    name = "dpmpp_3m"
    solver_order = 3
    options = {**DPMSolverPP.options, **UniCAttachable.corrector_options}


class DPMSolverPP2MSDE(Solver):
    """SDE-DPM-Solver++(2M), midpoint form, with ``eta`` (1: the reverse SDE; 0: like 2M)."""
    name = "dpmpp_2m_sde"
    order = 1
    stochastic = True
    default_grid = "log_snr"   # quadratic in t measured worse with the default end point (docs/sampling.md)
    default_steps = 30
    options = {"eta": 1.0}

    def validate(self):
        self.opts["eta"] = _check_eta(self.opts["eta"])
        self.stochastic = self.opts["eta"] > 0
        self.ode = not self.stochastic

    def init_state(self, x, grid):
        return {"prev": None}

    def step(self, m: Evaluator, x, t, s, state):
        ct, cs = m.coef(t), m.coef(s)
        lt, ls = 0.5 * ct["lam"], 0.5 * cs["lam"]
        h = ls - lt
        eta = self.opts["eta"]
        d0 = m.denoise(x, t)
        a = -math.expm1(-h * (1.0 + eta))
        x_new = (cs["sigma"] / ct["sigma"]) * math.exp(-eta * h) * x + cs["alpha"] * a * d0
        if state["prev"] is not None:
            l1, d_1 = state["prev"]
            r = (lt - l1) / h
            x_new = x_new + 0.5 * cs["alpha"] * a * (d0 - d_1) / r
        if eta > 0:
            x_new = x_new + cs["sigma"] * math.sqrt(-math.expm1(-2.0 * eta * h)) * m.randn_like(x)
        state["prev"] = (lt, d0)
        return x_new

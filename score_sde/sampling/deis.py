"""DEIS (Zhang & Chen 2023), the time-based Adams-Bashforth variant tAB, orders 1-3.

In the noise prediction ``eps = -sigma * score`` and ``rho = sigma / alpha``, the
probability-flow ODE is ``d(x / alpha) = eps d rho`` exactly. tAB extrapolates eps by the
Lagrange polynomial ``P(tau) = sum_j L_j(tau) eps_j`` through the last K grid times
``t_i, t_{i-1}, ...`` (polynomial in the time t itself) and integrates exactly in rho::

    x_s / alpha_s = x_t / alpha_t + sum_j C_j eps_j,   C_j = int_t^s L_j(tau) rho'(tau) dtau.

``C_j`` has no closed form for a general schedule; we integrate by parts,
``C_j = rho_s L_j(s) - rho_t L_j(t) - int_t^s rho(tau) L_j'(tau) dtau``, and evaluate the last
integral by Gauss-Legendre quadrature (``quad_nodes`` points, 32 by default: exact to float64
for smooth schedules). Order 1 is DDIM. One score call per step.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Evaluator, Solver
from .unipc import UniCAttachable, _order_now

__all__ = ["DEIS", "tab_coefficients"]


def _lagrange_deriv(nodes, j, tau):
    """Derivative of the j-th Lagrange basis polynomial on ``nodes`` at points ``tau`` (array)."""
    tau = np.asarray(tau, dtype=np.float64)
    K = len(nodes)
    out = np.zeros_like(tau)
    denom = np.prod([nodes[j] - nodes[m] for m in range(K) if m != j])
    for l in range(K):
        if l == j:
            continue
        prod = np.ones_like(tau)
        for m in range(K):
            if m != j and m != l:
                prod = prod * (tau - nodes[m])
        out = out + prod
    return out / denom


def _lagrange(nodes, j, tau):
    val = 1.0
    for m in range(len(nodes)):
        if m != j:
            val *= (tau - nodes[m]) / (nodes[j] - nodes[m])
    return val


def tab_coefficients(sde, t: float, s: float, nodes, quad_nodes: int = 32):
    """tAB coefficients ``C_j = int_t^s L_j(tau) d rho(tau)`` for Lagrange nodes ``nodes``
    (``nodes[0] == t``), ``rho = sigma/alpha`` of ``sde``; list of floats (float64 quadrature)."""
    xg, wg = np.polynomial.legendre.leggauss(quad_nodes)
    tau = 0.5 * (s - t) * xg + 0.5 * (s + t)
    w = 0.5 * (s - t) * wg
    rho = lambda v: torch.exp(-0.5 * sde.log_snr(torch.as_tensor(v, dtype=torch.float64))).numpy()
    rho_tau = rho(tau)
    rho_t, rho_s = float(rho(t)), float(rho(s))
    out = []
    for j in range(len(nodes)):
        c = rho_s * _lagrange(nodes, j, s) - rho_t * _lagrange(nodes, j, t)
        if len(nodes) > 1:
            c -= float(np.sum(w * rho_tau * _lagrange_deriv(nodes, j, tau)))
        out.append(c)
    return out


class _DEISTAB(Solver):
    """DEIS-tAB multistep, ``solver_order`` 1-3 (default 3), one call per step.

    Options: ``solver_order``, ``lower_order_final`` (as DPM-Solver++), ``quad_nodes``,
    ``corrector`` ("unic": UniC after each step, no extra call; see :mod:`.unipc`).
    """
    name = "deis"
    ode = True
    default_grid = "log_snr"
    default_steps = 20
    options = {"solver_order": 3, "lower_order_final": True, "quad_nodes": 32}

    @property
    def order(self):
        return self.opts["solver_order"]

    @property
    def solver_order(self):
        return self.opts["solver_order"]

    def validate(self):
        o = self.opts
        if o["solver_order"] not in (1, 2, 3) or isinstance(o["solver_order"], bool):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {o['solver_order']!r}")
        if not isinstance(o["lower_order_final"], bool):
            raise ValueError("lower_order_final must be True or False")
        if isinstance(o["quad_nodes"], bool) or not isinstance(o["quad_nodes"], int) or o["quad_nodes"] < 2:
            raise ValueError(f"quad_nodes must be an integer >= 2, got {o['quad_nodes']!r}")

    def init_state(self, x, grid):
        return {"eps_hist": []}

    def step(self, m: Evaluator, x, t, s, state):
        ct, cs = m.coef(t), m.coef(s)
        d = m.denoise(x, t)
        eps = (x - ct["alpha"] * d) / ct["sigma"]
        hist = state["eps_hist"]
        hist.append((t, eps))
        if len(hist) > 3:
            hist.pop(0)
        n = len(state["grid"]) - 1
        k = _order_now(self.opts["solver_order"], len(hist), state["index"], n, self.opts["lower_order_final"])
        pts = hist[::-1][:k]
        coeffs = tab_coefficients(self.sde, t, s, [p[0] for p in pts], self.opts["quad_nodes"])
        y = x / ct["alpha"]
        for c, (_, e) in zip(coeffs, pts):
            y = y + c * e
        return cs["alpha"] * y


class DEIS(UniCAttachable, _DEISTAB):
    __doc__ = _DEISTAB.__doc__
    options = {**_DEISTAB.options, **UniCAttachable.corrector_options}

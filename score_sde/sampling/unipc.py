"""UniPC (Zhao et al. 2023): the unified predictor UniP and corrector UniC, on any SDE's schedule view.

Notation as in :mod:`score_sde.sampling.fast`: ``l = lambda / 2 = log(alpha / sigma)`` (half
log-SNR), ``h = l_s - l_t > 0`` the step from t to s < t. A multistep solver keeps model
outputs ``v_i`` at earlier grid times (the data prediction ``D`` in the data form
``predict_x0=True``, the noise prediction ``eps = -sigma * score`` otherwise). With
``r_k = (l_{i-k} - l_i) / h`` and ``D1_k = (v_{i-k} - v_i) / r_k``, one UniP step of order K is::

    data form:   x_s = (sigma_s/sigma_t) x - alpha_s expm1(-h) v_i - alpha_s B(h) sum_k rho_k D1_k
    noise form:  x_s = (alpha_s/alpha_t) x - sigma_s expm1(h) v_i - sigma_s B(h) sum_k rho_k D1_k

where the ``rho`` solve the order conditions ``sum_k rho_k r_k^(j-1) = j! phi_{j+1}(hh) / B(hh)``
(``hh = -h`` in the data form, ``h`` in the noise form), and ``B(hh) = hh`` ("bh1") or
``expm1(hh)`` ("bh2"). UniC then re-uses the model output at the new point, ``v_s``, which the
next step needs anyway: it solves the same conditions with ``r = 1`` appended and replaces x_s
by the corrected value, so it raises the order by one **at no extra score call** (the model
output kept for the history is the one at the uncorrected point, as in the paper). No
correction follows the last step (it would cost a call).

:class:`UniCAttachable` adds the option ``corrector="unic"`` to other multistep solvers whose
``step`` starts with ``m.denoise(x, t)`` (DPM-Solver++ 2M/3M, DEIS): the corrector then runs in
the data form before each of their steps, on their own history.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch

from .base import Evaluator, Solver

__all__ = ["UniPC", "UniCAttachable", "uni_coefficients"]

VARIANTS = ("bh1", "bh2")


def uni_coefficients(h: float, rks: List[float], variant: str, predict_x0: bool):
    """UniPC's coefficients for a step of size h (half log-SNR) with nodes ``rks`` (the last one
    may be 1.0 for the corrector). Returns ``(hh, expm1(hh), B(hh), R, b)`` with the order
    conditions ``R rho = b`` (``R[j][k] = rks[k]^j``)."""
    hh = -h if predict_x0 else h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    fact = 1.0
    b_h = hh if variant == "bh1" else h_phi_1
    R, b = [], []
    for i in range(1, len(rks) + 1):
        R.append([r ** (i - 1) for r in rks])
        b.append(h_phi_k * fact / b_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    return hh, h_phi_1, b_h, R, b


def _solve(R, b) -> List[float]:
    return torch.linalg.solve(torch.tensor(R, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)).tolist()


def uni_update(x: torch.Tensor, ct: dict, cs: dict, hist: List[Tuple[float, torch.Tensor]], order: int,
               variant: str, predict_x0: bool, v_new: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One UniP step (``v_new`` None) or UniC correction (``v_new`` = model output at s) from x at t.

    ``hist``: ``(l_j, v_j)`` pairs, the last one at t; the ``order - 1`` before it are used.
    """
    lt, ls = 0.5 * ct["lam"], 0.5 * cs["lam"]
    h = ls - lt
    l0, v0 = hist[-1]
    rks, d1s = [], []
    for k in range(1, order):
        lk, vk = hist[-1 - k]
        rk = (lk - l0) / h
        rks.append(rk)
        d1s.append((vk - v0) / rk)
    corrector = v_new is not None
    nodes = rks + [1.0] if corrector else rks + [1.0]
    hh, h_phi_1, b_h, R, b = uni_coefficients(h, nodes, variant, predict_x0)
    if predict_x0:
        base = (cs["sigma"] / ct["sigma"]) * x - cs["alpha"] * h_phi_1 * v0
        scale = cs["alpha"] * b_h
    else:
        base = math.exp(cs["log_alpha"] - ct["log_alpha"]) * x - cs["sigma"] * h_phi_1 * v0
        scale = cs["sigma"] * b_h
    if not corrector:
        if order == 1:
            return base
        rhos = [0.5] if order == 2 else _solve([row[:-1] for row in R[:-1]], b[:-1])
        res = sum(r * d for r, d in zip(rhos, d1s))
        return base - scale * res
    rhos = [0.5] if order == 1 else _solve(R, b)
    res = rhos[-1] * (v_new - v0)
    for r, d in zip(rhos[:-1], d1s):
        res = res + r * d
    return base - scale * res


def _order_now(order: int, n_hist: int, index: int, n_steps: int, lower_order_final: bool) -> int:
    k = min(order, n_hist)
    if lower_order_final and n_steps < 10:
        k = min(k, n_steps - index)
    return max(k, 1)


def _check_variant(v):
    if v not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {v!r}")
    return v


class UniPC(Solver):
    """UniPC multistep, orders 1-3 (``solver_order``), data or noise prediction, B(h) bh1 / bh2.

    Options: ``solver_order`` (1, 2, 3 or None), ``variant`` ("bh1" / "bh2"), ``predict_x0``
    (True: data prediction), ``corrector`` ("unic" adds UniC at no extra call, "none": UniP
    alone, or None), ``lower_order_final``. One score call per step; order ``solver_order``
    (+1 with UniC).

    Defaults by step count (``None``; measured on sharp mixtures, docs/sampling.md): from
    :attr:`FEW_STEPS` = 15 steps on, order 3 with UniC on the ``log_snr_jump`` grid; below it,
    order 2 without UniC on the ``log_snr_late`` grid (order 3 and UniC overshoot with log-SNR
    steps above ~2). Named values are used as given at any step count.
    """
    name = "unipc"
    ode = True
    default_grid = "log_snr_jump"
    default_steps = 20
    FEW_STEPS = 15
    options = {"solver_order": None, "variant": "bh2", "predict_x0": True, "corrector": None,
               "lower_order_final": True}

    @property
    def order(self):
        o = self.opts
        k = 3 if o["solver_order"] is None else o["solver_order"]
        return k + ((o["corrector"] or "unic") == "unic")

    def validate(self):
        o = self.opts
        if o["solver_order"] is not None and (o["solver_order"] not in (1, 2, 3) or isinstance(o["solver_order"], bool)):
            raise ValueError(f"solver_order must be 1, 2, 3 or None (by step count), got {o['solver_order']!r}")
        _check_variant(o["variant"])
        if o["corrector"] not in ("unic", "none", None):
            raise ValueError(f"corrector must be 'unic', 'none' or None (by step count) for method 'unipc', "
                             f"got {o['corrector']!r}")
        for k in ("predict_x0", "lower_order_final"):
            if not isinstance(o[k], bool):
                raise ValueError(f"{k} must be True or False, got {o[k]!r}")

    def _few(self, steps: int) -> bool:
        return steps < self.FEW_STEPS

    def make_grid(self, grid, steps: int, eps: float) -> torch.Tensor:
        if grid is None:
            grid = "log_snr_late" if self._few(steps) else self.default_grid
        return super().make_grid(grid, steps, eps)

    def init_state(self, x, grid):
        o, few = self.opts, self._few(len(grid) - 1)
        order = o["solver_order"] if o["solver_order"] is not None else (2 if few else 3)
        corr = o["corrector"] if o["corrector"] is not None else ("none" if few else "unic")
        return {"hist": [], "pending": None, "order": order, "corrector": corr}

    def _model(self, m: Evaluator, x, t):
        if self.opts["predict_x0"]:
            return m.denoise(x, t)
        return -m.coef(t)["sigma"] * m.score(x, t)

    def step(self, m: Evaluator, x, t, s, state):
        o = self.opts
        ct, cs = m.coef(t), m.coef(s)
        v = self._model(m, x, t)
        hist = state["hist"]
        if state["pending"] is not None:
            x_prev, cp, k = state["pending"]
            x = uni_update(x_prev, cp, ct, hist, k, o["variant"], o["predict_x0"], v_new=v)
        hist.append((0.5 * ct["lam"], v))
        if len(hist) > 3:
            hist.pop(0)
        n = len(state["grid"]) - 1
        k = _order_now(state["order"], len(hist), state["index"], n, o["lower_order_final"])
        x_new = uni_update(x, ct, cs, hist, k, o["variant"], o["predict_x0"])
        last = state["index"] == n - 1
        state["pending"] = None if (last or state["corrector"] != "unic") else (x, ct, k)
        return x_new


class _FirstDenoiseCached:
    """Evaluator proxy whose first ``denoise(x, t)`` at time t returns a value already computed."""

    def __init__(self, m, t, d):
        self._m, self._t, self._d = m, t, d

    def __getattr__(self, name):
        return getattr(self._m, name)

    def denoise(self, x, t, score=None):
        if self._d is not None and score is None and float(t) == self._t:
            d, self._d = self._d, None
            return d
        return self._m.denoise(x, t, score)


class UniCAttachable:
    """Mixin giving a multistep data-prediction solver the option ``corrector`` ("none" / "unic")
    and ``corrector_variant`` ("bh2" / "bh1"). The wrapped ``step`` must call ``m.denoise(x, t)``
    first (its model output at t); UniC re-uses that value, so the NFE does not change."""

    corrector_options = {"corrector": "none", "corrector_variant": "bh2"}

    def validate(self):
        super().validate()
        if self.opts["corrector"] not in ("none", "unic"):
            raise ValueError(f"corrector must be 'none' or 'unic' for method {self.name!r}, "
                             f"got {self.opts['corrector']!r}")
        _check_variant(self.opts["corrector_variant"])

    def step(self, m, x, t, s, state):
        if self.opts["corrector"] != "unic":
            return super().step(m, x, t, s, state)
        uc = state.setdefault("unic", {"hist": [], "pending": None})
        ct = m.coef(t)
        d = m.denoise(x, t)
        if uc["pending"] is not None:
            x_prev, cp, k = uc["pending"]
            x = uni_update(x_prev, cp, ct, uc["hist"], k, self.opts["corrector_variant"], True, v_new=d)
        uc["hist"].append((0.5 * ct["lam"], d))
        if len(uc["hist"]) > 3:
            uc["hist"].pop(0)
        x_new = super().step(_FirstDenoiseCached(m, float(t), d), x, t, s, state)
        n = len(state["grid"]) - 1
        k = min(getattr(self, "solver_order", 1), len(uc["hist"]))
        uc["pending"] = None if state["index"] == n - 1 else (x, ct, k)
        return x_new

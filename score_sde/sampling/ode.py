"""Probability-flow ODE sampling through torchdiffeq, on the model's device, no numpy round-trip.

The ODE ``dx/dt = f(t) x - g(t)^2 score(x, t) / 2`` is integrated from t = T down to eps with
any torchdiffeq method. Adaptive methods (``dopri5``, the default; ``dopri8``, ``bosh3``,
``fehlberg2``, ``adaptive_heun``) take ``rtol``/``atol`` (default 1e-5 each, suited to sampling;
torchdiffeq's own 1e-7/1e-9 are far tighter than sample quality needs) and choose their own
steps, so ``steps`` must not be given. Fixed-step methods (``euler``, ``midpoint``, ``rk4``,
``heun3``, ``explicit_adams``, ``implicit_adams``) step on the sampler's time grid
(``steps`` intervals, grid ``uniform_t`` by default). The NFE is the number of score calls
actually made by the solver.
"""
from __future__ import annotations

import torch

from .base import Evaluator, NonFiniteError, Solver
from .. import utils

__all__ = ["ProbabilityFlowODE", "ADAPTIVE_METHODS", "FIXED_METHODS"]

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_METHODS = ("euler", "midpoint", "rk4", "heun3", "explicit_adams", "implicit_adams")


class ProbabilityFlowODE(Solver):
    """torchdiffeq on the probability-flow ODE.

    Options: ``ode_method`` (torchdiffeq method name, default "dopri5"), ``rtol``, ``atol``
    (adaptive methods only), ``ode_options`` (dict passed to ``torchdiffeq.odeint`` as
    ``options``).
    """
    supports_after_step = False  # keeps a history / integrates between steps itself
    name = "ode"
    ode = True
    default_grid = "uniform_t"
    default_steps = None
    options = {"ode_method": "dopri5", "rtol": 1e-5, "atol": 1e-5, "ode_options": None}

    def validate(self):
        o = self.opts
        meth = o["ode_method"]
        if meth not in ADAPTIVE_METHODS + FIXED_METHODS:
            raise ValueError(f"ode_method must be a torchdiffeq method, one of {ADAPTIVE_METHODS + FIXED_METHODS}; got {meth!r}")
        self.adaptive = meth in ADAPTIVE_METHODS
        utils.check_positive("rtol", o["rtol"])
        utils.check_positive("atol", o["atol"])
        if o["ode_options"] is not None and not isinstance(o["ode_options"], dict):
            raise ValueError("ode_options must be a dict of torchdiffeq solver options or None")
        self.evals_per_step = None if self.adaptive else {"euler": 1, "midpoint": 2, "rk4": 4, "heun3": 3}.get(meth)
        self.order = {"euler": 1, "midpoint": 2, "rk4": 4, "heun3": 3, "dopri5": 5, "dopri8": 8,
                      "bosh3": 3, "fehlberg2": 2, "adaptive_heun": 2}.get(meth, 1)

    @property
    def default_steps(self):
        return None if self.adaptive else 100

    def prepare(self, grid, steps, eps):
        if self.adaptive:
            if steps is not None:
                raise ValueError(f"ode_method {self.opts['ode_method']!r} is adaptive: it chooses its own steps; "
                                 "do not pass steps (tune rtol/atol), or pick a fixed-step ode_method such as 'rk4'")
            if grid is not None:
                raise ValueError("grid does not apply to an adaptive ode_method (it only needs T and eps)")
            return torch.tensor([self.sde.T, eps], dtype=torch.float64)
        return self.make_grid(grid, steps, eps)

    def solve(self, m: Evaluator, x, grid, callback=None):
        import torchdiffeq

        sde = self.sde
        shape = x.shape
        state = {"i": 0}

        def func(t, y):
            tv = t.to(torch.float64).reshape(1)
            f = float(sde.f(tv))
            g2 = float(sde.g2(tv))
            score = m.score(y, float(tv))
            dy = f * y - 0.5 * g2 * score
            if m.check_finite and not bool(torch.isfinite(dy).all()):
                raise NonFiniteError(f"method 'ode' ({self.opts['ode_method']}): non-finite values at score "
                                     f"evaluation {m.nfe} (t={float(tv):.6g}); use a larger eps or check score_fn")
            return dy

        ts = grid.to(device=x.device, dtype=x.dtype if x.dtype == torch.float64 else torch.float32)
        kw = {"method": self.opts["ode_method"]}
        if self.adaptive:
            kw.update(rtol=self.opts["rtol"], atol=self.opts["atol"])
        if self.opts["ode_options"]:
            kw["options"] = dict(self.opts["ode_options"])
        if self.adaptive:
            # land exactly on eps: torchdiffeq otherwise steps past the end and interpolates back,
            # which would evaluate the score at t < eps (even t < 0)
            kw.setdefault("options", {})["step_t"] = ts[-1:]
            out = torchdiffeq.odeint(func, x, ts, **kw)[-1]
        elif callback is None:
            # step on our grid; only the end point is stored (torchdiffeq may hand us -t when reversing)
            opts = kw.setdefault("options", {})
            opts["grid_constructor"] = lambda fn, y0, t: ts.to(t) if bool(t[0] == ts[0]) else -ts.to(t)
            out = torchdiffeq.odeint(func, x, ts[[0, -1]], **kw)[-1]
        else:
            traj = torchdiffeq.odeint(func, x, ts, **kw)
            for i in range(1, ts.shape[0]):
                callback({"step": i - 1, "t": float(grid[i]), "x": traj[i], "nfe": m.nfe})
            out = traj[-1]
        m.check(out, len(grid) - 2, float(grid[0]), float(grid[-1]))
        return out.reshape(shape)

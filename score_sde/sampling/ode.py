"""Probability-flow ODE sampling through torchdiffeq, on the model's device, no numpy round-trip.

The ODE ``dx/dt = f(t) x - g(t)^2 score(x, t) / 2`` is integrated from t = T down to eps with
any torchdiffeq method of the shared table :func:`score_sde.sde.torchdiffeq_methods` (the same
one the likelihood accepts). Adaptive methods (``dopri5``, the default; ``dopri8``,
``bosh3``, ``fehlberg2``, ``adaptive_heun``) take ``rtol``/``atol`` (default 1e-5 each, suited to sampling;
torchdiffeq's own 1e-7/1e-9 are far tighter than sample quality needs) and choose their own
steps, so ``steps`` must not be given. Fixed-step methods (``euler``, ``midpoint``, ``rk4``,
``heun2``, ``heun3``, ``explicit_adams``, ``implicit_adams``, ``fixed_adams``) step on the sampler's time grid
(``steps`` intervals, grid ``uniform_t`` by default). The NFE is the number of score calls
actually made by the solver.
"""
from __future__ import annotations

import torch

from .base import Evaluator, NonFiniteError, Solver
from .. import utils
from ..sde import torchdiffeq_methods

__all__ = ["ProbabilityFlowODE", "ADAPTIVE_METHODS", "FIXED_METHODS"]

_METHODS = torchdiffeq_methods()   # the one torchdiffeq table, shared with score_sde.likelihood
ADAPTIVE_METHODS = tuple(k for k, v in _METHODS.items() if v.adaptive)
FIXED_METHODS = tuple(k for k, v in _METHODS.items() if not v.adaptive)


class ProbabilityFlowODE(Solver):
    """torchdiffeq on the probability-flow ODE.

    Options: ``ode_method`` (torchdiffeq method name, default "dopri5"), ``rtol``, ``atol``
    (adaptive methods only), ``ode_options`` (dict passed to ``torchdiffeq.odeint`` as
    ``options``).
    """
    name = "ode"
    ode = True
    default_grid = "uniform_t"
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
        self.evals_per_step = _METHODS[meth].evals_per_step
        self.order = _METHODS[meth].order

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

        shape = x.shape

        lo, hi = float(grid.min()), float(grid.max())

        def func(t, y):
            # torchdiffeq's initial-step heuristic probes one trial step that it does not bound by the
            # interval (with an untrained model it reached t = -63): evaluate at the nearest end of
            # [eps, T] instead, as the likelihood's ODE does; the solver's own steps stay inside
            tf = min(max(float(t), lo), hi)
            dy = m.reverse_drift(y, tf, m.score(y, tf), probability_flow=True)
            if m.check_finite and not bool(torch.isfinite(dy).all()):
                raise NonFiniteError(f"method 'ode' ({self.opts['ode_method']}): non-finite values at score "
                                     f"evaluation {m.nfe} (t={tf:.6g}); use a larger eps or check score_fn")
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

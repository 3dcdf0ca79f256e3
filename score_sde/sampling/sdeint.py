"""Reverse-SDE integration through torchsde.

torchsde integrates forward in time over strictly increasing ``ts`` on 2-D states, so the reverse
SDE ``dx = [f(t) x - g(t)^2 score(x, t)] dt + g(t) dW_bar`` (t running from T down to eps) is
written in the reversed clock ``u = T - t`` (increasing from 0 to T - eps) on the flattened state
``(B, D)``::

    dx = -[f(T-u) x - g(T-u)^2 score(x, T-u)] du + g(T-u) dW_u     (diagonal noise).

Since g depends only on t, the Ito and Stratonovich forms coincide, so every torchsde scheme
applies: ``euler`` (Euler-Maruyama), ``milstein``, ``srk`` (strong order 1.5 for additive noise),
``reversible_heun``, ``heun``, ``midpoint``, ``euler_heun``; ``adaptive=True`` turns on
torchsde's step-size control (rtol/atol). Steps are uniform in t (``dt = (T - eps) / steps``).
The Brownian motion is a ``torchsde.BrownianInterval`` whose entropy is drawn from the sampler's
generator, so the same seed gives the same samples.
"""
from __future__ import annotations

import warnings

import torch

from .base import Evaluator, NonFiniteError, Solver
from .. import utils

__all__ = ["TorchSDE", "SDE_METHODS"]

_ITO = ("euler", "milstein", "srk")
_STRAT = ("reversible_heun", "heun", "midpoint", "euler_heun")
SDE_METHODS = _ITO + _STRAT


class TorchSDE(Solver):
    """torchsde on the reverse SDE.

    Options: ``sde_method`` (one of :data:`SDE_METHODS`, default "euler"), ``adaptive`` (False),
    ``rtol``/``atol`` (adaptive only, default 1e-3/1e-3), ``dt_min`` (adaptive only).
    """
    supports_after_step = False  # keeps a history / integrates between steps itself
    name = "sdeint"
    stochastic = True
    default_grid = "uniform_t"
    default_steps = 1000
    options = {"sde_method": "euler", "adaptive": False, "rtol": 1e-3, "atol": 1e-3, "dt_min": 1e-5}

    def validate(self):
        o = self.opts
        if o["sde_method"] not in SDE_METHODS:
            raise ValueError(f"sde_method must be one of {SDE_METHODS}, got {o['sde_method']!r}")
        if not isinstance(o["adaptive"], bool):
            raise ValueError("adaptive must be True or False")
        for k in ("rtol", "atol", "dt_min"):
            utils.check_positive(k, o[k])
        self.evals_per_step = None if o["adaptive"] else {"euler": 1, "milstein": 1, "euler_heun": 1,
                                                          "heun": 2, "midpoint": 2, "srk": 4}.get(o["sde_method"])
        self.order = 2 if o["sde_method"] == "srk" else 1

    def prepare(self, grid, steps, eps):
        if grid is not None and grid != "uniform_t":
            raise ValueError("method 'sdeint' steps uniformly in t (torchsde uses a fixed dt); use grid=None or "
                             "'uniform_t', or a fixed-grid method such as 'euler_maruyama' for other grids")
        return torch.tensor([self.sde.T, eps], dtype=torch.float64) if steps is None else \
            torch.linspace(self.sde.T, eps, steps + 1, dtype=torch.float64)

    def solve(self, m: Evaluator, x, grid, callback=None):
        import torchsde

        sde, o = self.sde, self.opts
        T, eps = float(grid[0]), float(grid[-1])
        steps = grid.numel() - 1
        shape = x.shape
        y0 = x.reshape(shape[0], -1)
        method = o["sde_method"]
        cache = []

        class _Reverse(torch.nn.Module):
            noise_type = "diagonal"
            sde_type = "ito" if method in _ITO else "stratonovich"

            def f(self, u, y):
                # torchsde re-evaluates f at identical (time, state) pairs (its contract check, the
                # stages of srk); reuse those results so every score call is a new one
                key = float(u)
                for k, yy, val in cache:
                    if k == key and yy is y:
                        return val
                t = T - key
                tt = torch.tensor(t, dtype=torch.float64)
                score = m.score(y.reshape(shape), t).reshape(y.shape)
                out = -(float(sde.f(tt)) * y - float(sde.g2(tt)) * score)
                if m.check_finite and not bool(torch.isfinite(out).all()):
                    raise NonFiniteError(f"method 'sdeint' ({method}): non-finite values at score evaluation "
                                         f"{m.nfe} (t={t:.6g}); use a larger eps or check score_fn")
                cache.append((key, y, out))
                if len(cache) > 8:
                    cache.pop(0)
                return out

            def g(self, u, y):
                t = T - float(u)
                return torch.full_like(y, float(sde.diffusion(torch.tensor(t, dtype=torch.float64))))

        seed = int(torch.randint(0, 2 ** 62, (1,), generator=m.generator, device=m.generator.device
                                 if m.generator is not None else None)) if m.generator is not None \
            else int(torch.randint(0, 2 ** 62, (1,)))
        span = T - eps
        dtype = y0.dtype
        bm = torchsde.BrownianInterval(t0=0.0, t1=span, size=y0.shape, dtype=dtype, device=y0.device,
                                       entropy=seed,
                                       levy_area_approximation="space-time" if method == "srk" else "none")
        # float64 clock, dt nudged up by 1e-9 so that rounding never leaves a sliver of an extra step
        ts = torch.tensor([0.0, span], dtype=torch.float64, device=y0.device)
        dt = span / steps * (1.0 + 1e-9)
        kw = dict(method=method, dt=dt, bm=bm, adaptive=o["adaptive"])
        if o["adaptive"]:
            kw.update(rtol=o["rtol"], atol=o["atol"], dt_min=o["dt_min"])
        with warnings.catch_warnings():
            # torchsde warns about adaptive Euler with non-additive noise; ours is additive (g = g(t))
            warnings.filterwarnings("ignore", message="Numerical solution is not guaranteed")
            ys = torchsde.sdeint(_Reverse(), y0, ts, **kw)
        out = ys[-1].reshape(shape)
        m.check(out, steps - 1, T, eps)
        if callback is not None:
            callback({"step": steps - 1, "t": eps, "x": out, "nfe": m.nfe})
        return out

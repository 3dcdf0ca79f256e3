"""The shared sampling loop: argument checks, score-call counting, time grid, final step.

A solver is a small class (:class:`Solver`): it declares what it is (``order``,
``stochastic``, ``evals_per_step``, ``default_grid``, accepted ``options``) and implements one
``step`` from time t to an earlier time s. The loop in :func:`sample` owns everything else:
the prior draw, the grid, the callbacks, the non-finite check, the NFE count and the final
denoising step. Integrator back-ends (torchdiffeq, torchsde) override ``solve`` instead.

Notation: ``x`` is ``(B, *event_shape)`` of any rank; times are in the forward clock t of
:mod:`score_sde.sde` and sampling runs from t = T down to the end time ``eps``; ``alpha(t)``,
``sigma(t)`` are the marginal coefficients (``x_t = alpha x_0 + sigma z``) and
``lambda(t) = log(alpha^2 / sigma^2)`` is ``sde.log_snr``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, NamedTuple, Optional

import torch

from . import defaults as _defaults
from . import grids as _grids

__all__ = ["SampleOutput", "Solver", "Evaluator", "NonFiniteError", "sample", "SOLVERS"]


class SampleOutput(NamedTuple):
    """Result of :func:`sample`: ``samples`` shaped like the request, ``nfe`` the number of
    ``score_fn`` calls actually made (each call evaluates the whole batch once)."""
    samples: torch.Tensor
    nfe: int


class NonFiniteError(FloatingPointError):
    """Raised when NaN or Inf appears during sampling; the message names the step and time."""


#: name -> solver class. Filled explicitly in :mod:`score_sde.sampling` (no import side effects).
SOLVERS: Dict[str, type] = {}


class Evaluator:
    """Wraps ``score_fn`` for a solver: counts calls, broadcasts scalar times, checks outputs.

    ``score(x, t)`` takes a Python float t and passes ``score_fn`` a ``(B,)`` tensor of it in
    x's dtype and device. ``denoise(x, t)`` is Tweedie's posterior mean
    ``(x + sigma^2 score) / alpha`` (one call). Scalar schedule values are computed in float64
    by :meth:`coef` and cached.
    """

    def __init__(self, sde, score_fn, generator: Optional[torch.Generator] = None,
                 check_finite: bool = True, method: str = ""):
        self.sde = sde
        self.score_fn = score_fn
        self.generator = generator
        self.check_finite = check_finite
        self.method = method
        self.nfe = 0
        self._cache: Dict[float, Dict[str, float]] = {}

    # -------------------------------------------------------------- schedule scalars
    def coef(self, t: float) -> Dict[str, float]:
        """float64 schedule values at t: alpha, sigma, log_alpha, lam (log-SNR), f, g2."""
        t = float(t)
        c = self._cache.get(t)
        if c is None:
            tt = torch.tensor(t, dtype=torch.float64)
            sde = self.sde
            la, sig = float(sde.log_alpha(tt)), float(sde.sigma(tt))
            c = {"alpha": math.exp(la), "sigma": sig, "log_alpha": la,
                 "lam": 2.0 * la - 2.0 * math.log(sig) if sig > 0 else math.inf,
                 "f": float(sde.f(tt)), "g2": float(sde.g2(tt))}
            self._cache[t] = c
        return c

    def posterior_std(self, t: float, s: float) -> float:
        """Std of ``q(x_s | x_t, x_0)`` (the ancestral step's noise), float64."""
        ct, cs = self.coef(t), self.coef(s)
        var_ts = float(self.sde.transition_var(torch.tensor(t, dtype=torch.float64),
                                               torch.tensor(s, dtype=torch.float64)))
        return math.sqrt(max(var_ts * cs["sigma"] ** 2 / ct["sigma"] ** 2, 0.0))

    def transition_std(self, t: float, s: float) -> float:
        """Std of the forward transition ``x_t | x_s`` (DDPM's sqrt(beta) for VP), float64."""
        var_ts = float(self.sde.transition_var(torch.tensor(t, dtype=torch.float64),
                                               torch.tensor(s, dtype=torch.float64)))
        return math.sqrt(max(var_ts, 0.0))

    # -------------------------------------------------------------- model calls
    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        """One call of ``score_fn`` at time t (float or ``(B,)`` tensor)."""
        if isinstance(t, torch.Tensor) and t.ndim == 1:
            tv = t.to(device=x.device, dtype=x.dtype)
        else:
            tv = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        out = self.score_fn(x, tv)
        self.nfe += 1
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"score_fn must return a tensor shaped like x {tuple(x.shape)}, got {got}")
        if out.dtype != x.dtype:
            out = out.to(x.dtype)
        return out

    def denoise(self, x: torch.Tensor, t: float, score: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Tweedie's ``E[x_0 | x_t] = (x + sigma^2 score) / alpha`` (calls score_fn unless given)."""
        c = self.coef(t)
        if score is None:
            score = self.score(x, t)
        return (x + c["sigma"] ** 2 * score) / c["alpha"]

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like x from the sampler's generator."""
        return torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)

    def check(self, x: torch.Tensor, step: int, t: float, s: float) -> None:
        if self.check_finite and not bool(torch.isfinite(x).all()):
            raise NonFiniteError(
                f"method {self.method!r}: non-finite values appeared at step {step} (from t={t:.6g} to "
                f"t={s:.6g}); check score_fn at these times, use a larger eps or more steps")


class Solver:
    """Base class of samplers. Subclasses set the class attributes and implement :meth:`step`.

    Class attributes:
        order: convergence order of the deterministic part (weak order 1 for stochastic
            predictors); informational and used by the tests.
        stochastic: draws noise (needs the generator).
        ode: integrates the probability-flow ODE (no corrector may be attached).
        evals_per_step: ``score_fn`` calls per step (``None`` for adaptive solvers).
        default_grid: grid name used when ``grid`` is not given.
        default_steps: steps used when ``steps`` is not given.
        options: accepted keyword options and their defaults.
    """

    name: str = ""
    order: int = 1
    stochastic: bool = False
    ode: bool = False
    evals_per_step: Optional[int] = 1
    default_grid: str = "uniform_t"
    default_steps: Optional[int] = 1000
    uses_grid: bool = True
    options: Dict[str, Any] = {}

    def __init__(self, sde, **options):
        unknown = sorted(set(options) - set(self.options))
        if unknown and ({"corrector", "predictor", "snr", "n_steps"} & set(unknown)):
            raise ValueError(f"method {self.name!r} does not accept option(s) {unknown}: predictors and correctors "
                             f"belong to the predictor-corrector methods ('pc', 'euler_maruyama', "
                             f"'reverse_diffusion', 'ancestral'); accepted options of {self.name!r}: "
                             f"{sorted(self.options) or 'none'}")
        if unknown:
            accepted = sorted(self.options) or "none"
            raise ValueError(f"method {self.name!r} does not accept option(s) {unknown}; accepted options: {accepted}")
        self.sde = sde
        self.opts = {**self.options, **options}
        self.validate()

    def validate(self) -> None:
        """Check ``self.opts`` (raise ValueError before any work)."""

    def nfe(self, steps: int) -> Optional[int]:
        """Score calls made by ``steps`` steps (not counting the final denoising call)."""
        return None if self.evals_per_step is None else steps * self.evals_per_step

    def make_grid(self, grid, steps: int, eps: float) -> torch.Tensor:
        return _grids.make_grid(self.default_grid if grid is None else grid, self.sde, steps, eps)

    def init_state(self, x: torch.Tensor, grid: torch.Tensor) -> Dict[str, Any]:
        return {}

    def step(self, m: Evaluator, x: torch.Tensor, t: float, s: float, state: Dict[str, Any]) -> torch.Tensor:
        """Advance x from time t to the earlier time s (t > s), using ``m`` for score calls."""
        raise NotImplementedError

    def solve(self, m: Evaluator, x: torch.Tensor, grid: torch.Tensor,
              callback: Optional[Callable] = None) -> torch.Tensor:
        """Run :meth:`step` over consecutive grid times; returns x at ``grid[-1]``."""
        ts = [float(v) for v in grid]
        state = self.init_state(x, grid)
        state["grid"] = ts
        for i in range(len(ts) - 1):
            state["index"] = i
            x = self.step(m, x, ts[i], ts[i + 1], state)
            m.check(x, i, ts[i], ts[i + 1])
            if callback is not None:
                callback({"step": i, "t": ts[i + 1], "x": x, "nfe": m.nfe})
        return x


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return steps


def sample(sde, score_fn, shape=None, method: str = "dpmpp_2m", steps: Optional[int] = None,
           eps: Optional[float] = None, generator: Optional[torch.Generator] = None, device=None,
           dtype: Optional[torch.dtype] = None, x_init: Optional[torch.Tensor] = None, grid=None,
           final_step: str = "denoise", callback: Optional[Callable] = None, check_finite: bool = True,
           **options) -> SampleOutput:
    """Draw samples from the reverse process of ``sde`` driven by ``score_fn``.

    Args:
        sde: a forward SDE (:class:`score_sde.sde.SDE`: VP, sub-VP, VE or your own).
        score_fn: plain callable ``score_fn(x, t) -> tensor shaped like x``; x is
            ``(B, *event_shape)``, t is ``(B,)`` (one time per sample).
        shape: ``(B, *event_shape)`` of the batch to draw (or give ``x_init``).
        method: a name in :data:`SOLVERS` (see ``docs/sampling.md``).
        steps: number of solver steps (grid intervals); the solver's default if omitted. The NFE
            is ``steps * evals_per_step`` (+1 for the final denoising step); adaptive solvers
            ("ode" with an adaptive method, "sdeint" with ``adaptive=True``) choose their own.
        eps: end time of the integration; default: where ``sigma/alpha`` reaches
            :data:`score_sde.sampling.defaults.END_SIGMA`; ``"paper"``: ``sde.sampling_eps``.
        generator: ``torch.Generator`` for the prior and all noise: the same seed gives the same
            samples. Its device is used when ``device`` is omitted.
        device, dtype: of the samples (default: the generator's device / x_init's; float32).
        x_init: start state at t = T instead of a prior draw (shape then taken from it).
        grid: time grid: a name in :data:`score_sde.sampling.grids.GRIDS` ("uniform_t",
            "quadratic", "log_snr", "karras"), a callable ``(sde, steps, eps)`` or explicit
            decreasing times; default per solver.
        final_step: ``"denoise"`` (default): replace x at eps by Tweedie's posterior mean
            ``E[x_0 | x_eps]`` (one more score call); ``"none"``: return x at eps.
        callback: called after every step with a dict ``{"step", "t", "x", "nfe"}``.
        check_finite: raise :class:`NonFiniteError` naming the step and time if NaN/Inf appears.
        **options: method options (e.g. ``predictor``, ``corrector``, ``snr``, ``n_steps``,
            ``eta``, ``rtol``, ``atol``); unknown ones raise ValueError listing the accepted ones.

    Returns:
        :class:`SampleOutput` ``(samples, nfe)``; samples shaped ``shape``.
    """
    # ---------------------------------------------------------------- check everything up front
    if not isinstance(method, str) or method not in SOLVERS:
        raise ValueError(f"unknown method {method!r}; available methods: {sorted(SOLVERS)}")
    if not callable(score_fn):
        raise ValueError("score_fn must be a callable score_fn(x, t) -> tensor shaped like x")
    if final_step not in ("denoise", "none"):
        raise ValueError(f"final_step must be 'denoise' or 'none', got {final_step!r}")
    if callback is not None and not callable(callback):
        raise ValueError("callback must be callable (it receives a dict with step, t, x, nfe)")
    solver = SOLVERS[method](sde, **options)
    eps = _defaults.resolve_eps(sde, eps, solver)
    if steps is None:
        steps = solver.default_steps
    if steps is not None:
        steps = _check_steps(steps)
    grid_t = solver.prepare(grid, steps, eps) if hasattr(solver, "prepare") else solver.make_grid(grid, steps, eps)

    if x_init is not None:
        if not isinstance(x_init, torch.Tensor) or not x_init.is_floating_point() or x_init.ndim < 1:
            raise ValueError("x_init must be a floating-point tensor shaped (B, *event_shape)")
        if shape is not None and tuple(shape) != tuple(x_init.shape):
            raise ValueError(f"shape {tuple(shape)} disagrees with x_init of shape {tuple(x_init.shape)}")
        x = x_init.to(device=device if device is not None else x_init.device,
                      dtype=dtype if dtype is not None else x_init.dtype)
    else:
        if shape is None:
            raise ValueError("give shape=(B, *event_shape) or x_init")
        try:
            shape = tuple(int(v) for v in shape)
        except TypeError:
            raise ValueError(f"shape must be a sequence of positive ints, got {shape!r}") from None
        if len(shape) < 1 or min(shape) < 1:
            raise ValueError(f"shape must be (B, *event_shape) with positive sizes, got {shape}")
        if device is None and generator is not None:
            device = generator.device
        if dtype is None:
            dtype = torch.get_default_dtype()
        if generator is not None and torch.device(device).type != generator.device.type:
            raise ValueError(f"generator is on {generator.device} but device is {device}; create the "
                             f"generator on the sampling device")
        x = sde.prior_sampling(shape, generator=generator, device=device, dtype=dtype)

    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(f"generator is on {generator.device} but the samples are on {x.device}; create the "
                         f"generator on the sampling device, e.g. torch.Generator(device={str(x.device)!r})")

    # ---------------------------------------------------------------- integrate
    m = Evaluator(sde, score_fn, generator=generator, check_finite=check_finite, method=method)
    with torch.no_grad():
        x = solver.solve(m, x, grid_t, callback)
        if final_step == "denoise":
            t_end = float(grid_t[-1])
            x = m.denoise(x, t_end)
            m.check(x, len(grid_t) - 1, t_end, 0.0)
    return SampleOutput(x, m.nfe)

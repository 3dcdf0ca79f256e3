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

from typing import Any, Callable, Dict, NamedTuple, Optional

import torch

from . import defaults as _defaults
from . import grids as _grids
from ..sde import CountingScoreFn

__all__ = ["SampleOutput", "Solver", "Evaluator", "NonFiniteError", "sample", "SOLVERS", "register",
           "supporting_after_step"]


class SampleOutput(NamedTuple):
    """Result of :func:`sample`: ``samples`` shaped like the request, ``nfe`` the number of
    ``score_fn`` calls actually made (each call evaluates the whole batch once)."""
    samples: torch.Tensor
    nfe: int


class NonFiniteError(FloatingPointError):
    """Raised when NaN or Inf appears during sampling; the message names the step and time."""


#: name -> solver class, built in :mod:`score_sde.sampling` from the classes' ``name`` attributes
#: (no import side effects); add yours with :func:`register`.
SOLVERS: Dict[str, type] = {}

#: the option that attaches a corrector to a solver; refused for solvers that integrate the ODE
CORRECTOR_OPTION = "corrector"

#: the loop checks its running non-finite record on the host every this many steps (and at the end)
FINITE_CHECK_EVERY = 64


def register(cls: type, registry: Optional[Dict[str, type]] = None) -> type:
    """Add a :class:`Solver` subclass to ``SOLVERS`` (or ``registry``) under ``cls.name``."""
    registry = SOLVERS if registry is None else registry
    if not (isinstance(cls, type) and issubclass(cls, Solver)) or not cls.name:
        raise ValueError(f"register takes a Solver subclass with a non-empty name, got {cls!r}")
    if cls.name in registry and registry[cls.name] is not cls:
        raise ValueError(f"a solver named {cls.name!r} is already registered ({registry[cls.name].__name__})")
    registry[cls.name] = cls
    return cls


class Evaluator:
    """What a solver's :meth:`Solver.step` may use: counted score calls and the float64 schedule.

    ``score(x, t)`` takes a Python float t (or a ``(B,)`` tensor) and calls ``score_fn`` with a
    ``(B,)`` tensor in x's dtype and device, through :class:`score_sde.sde.CountingScoreFn` (one
    count per call, shape and dtype checked). ``denoise(x, t)`` is Tweedie's posterior mean
    (one call). ``coef``, ``posterior_std``, ``transition_std``, ``posterior_mean``,
    ``reverse_drift`` and ``reverse_discrete_drift`` evaluate the SDE's formulas with float64
    scalars (:class:`score_sde.sde.ScalarSchedule`, cached per time). ``randn_like`` draws from the
    sampler's generator; ``after_step(x, t)`` applies the user's ``after_step`` hook (identity
    without one).

    Non-finite values: ``check(x, step, t, s)`` records, on the device, whether x is finite; the
    record is read on the host only every :data:`FINITE_CHECK_EVERY` steps and by
    :meth:`finish`, which raises :class:`NonFiniteError` naming the first bad step and its times.
    """

    def __init__(self, sde, score_fn, generator: Optional[torch.Generator] = None,
                 check_finite: bool = True, method: str = "", after_step: Optional[Callable] = None,
                 stochastic: bool = True):
        self.sde = sde
        self.counter = score_fn if isinstance(score_fn, CountingScoreFn) else CountingScoreFn(score_fn)
        self.score_fn = score_fn
        self.schedule = sde.scalars()
        self.generator = generator
        self.check_finite = check_finite
        self.method = method
        self.stochastic = stochastic
        self._after_step = after_step
        self._times: Dict[Any, torch.Tensor] = {}
        self._sums: list = []
        self._where: list = []
        # the float64 schedule, shared with the SDE's formulas
        self.coef = self.schedule.coef
        self.posterior_std = self.schedule.posterior_std
        self.transition_std = self.schedule.transition_std
        self.posterior_mean = self.schedule.posterior_mean
        self.reverse_drift = self.schedule.reverse_drift
        self.reverse_discrete_drift = self.schedule.reverse_discrete_drift

    @property
    def nfe(self) -> int:
        """Score calls made so far."""
        return self.counter.calls

    # -------------------------------------------------------------- model calls
    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        """One call of ``score_fn`` at time t (float or ``(B,)`` tensor)."""
        if isinstance(t, torch.Tensor) and t.ndim == 1:
            tv = t.to(device=x.device, dtype=x.dtype)
        else:
            key = (float(t), x.shape[0], x.dtype, x.device)
            tv = self._times.get(key)
            if tv is None:
                tv = torch.full((x.shape[0],), key[0], dtype=x.dtype, device=x.device)
                self._times[key] = tv
        return self.counter(x, tv)

    def denoise(self, x: torch.Tensor, t: float, score: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Tweedie's ``E[x_0 | x_t] = (x + sigma^2 score) / alpha`` (calls score_fn unless given)."""
        if score is None:
            score = self.score(x, t)
        return self.schedule.denoise(x, t, score)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like x from the sampler's generator."""
        if not self.stochastic:
            raise RuntimeError(f"method {self.method!r} declares stochastic=False but drew noise; "
                               f"set stochastic=True on the solver (class attribute or in validate)")
        return torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)

    def after_step(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Apply the user's ``after_step(x, t) -> x`` hook (t: the time x now lives at)."""
        if self._after_step is None:
            return x
        out = self._after_step(x, float(t))
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"after_step(x, t) must return a tensor shaped like x {tuple(x.shape)}, got {got}")
        return out

    # -------------------------------------------------------------- non-finite record (no sync per step)
    def check(self, x: torch.Tensor, step: int, t: float, s: float) -> None:
        """Record whether x (the state after ``step``, from t to s) is finite; no host sync."""
        if not self.check_finite:
            return
        # one reduction; float64 accumulation cannot overflow for float32 data, and any NaN or
        # inf in x makes the sum non-finite
        self._sums.append(x.sum(dtype=torch.float64))
        self._where.append((step, t, s))
        if len(self._sums) >= FINITE_CHECK_EVERY:
            self.finish(keep=True)

    def finish(self, keep: bool = False) -> None:
        """Read the non-finite record on the host (one sync); raise for the first bad step."""
        if not self._sums:
            return
        sums = torch.stack(self._sums)
        bad = ~torch.isfinite(sums)
        if bool(bad.any()):
            i = int(bad.to(torch.uint8).argmax())
            step, t, s = self._where[i]
            raise NonFiniteError(
                f"method {self.method!r}: non-finite values appeared at step {step} (from t={t:.6g} to "
                f"t={s:.6g}); check score_fn at these times, use a larger eps or more steps")
        if keep:
            self._sums.clear()
            self._where.clear()


class Solver:
    """Base class of samplers. Subclasses set the class attributes and implement :meth:`step`.

    Class attributes (the protocol):
        name: the key in :data:`SOLVERS` (:func:`register` uses it; nothing else repeats it).
        order: convergence order of the deterministic part (weak order 1 for stochastic
            predictors); informational (the convergence-slope tests check the claimed orders).
        stochastic: draws noise (``Evaluator.randn_like`` refuses to draw otherwise).
        ode: integrates the probability-flow ODE; a corrector (option ``corrector``) is refused
            unless the solver declares one of its own in ``options`` (an ODE corrector, e.g. UniC).
        evals_per_step: ``score_fn`` calls per step (``None`` for adaptive solvers); the tests
            check it against counted calls for every method.
        default_grid: grid name used when ``grid`` is not given.
        default_steps: steps used when ``steps`` is not given.
        options: accepted keyword options and their defaults.
        fixed: options a preset fixes (see :meth:`preset`); passing another value is an error.
        supports_after_step: ``sample(..., after_step=...)`` is allowed (single-step solvers;
            multistep histories would go stale, back-ends cannot take it).

    Hooks (override as needed): :meth:`validate`, :meth:`default_eps`, :meth:`prepare`,
    :meth:`init_state`, :meth:`step`, :meth:`solve`.
    """

    name: str = ""
    order: int = 1
    stochastic: bool = False
    ode: bool = False
    evals_per_step: Optional[int] = 1
    default_grid: str = "uniform_t"
    default_steps: Optional[int] = 1000
    options: Dict[str, Any] = {}
    fixed: Dict[str, Any] = {}
    supports_after_step: bool = False

    def __init__(self, sde, **options):
        name = self.name or type(self).__name__
        if CORRECTOR_OPTION in options and self.ode and CORRECTOR_OPTION not in self.options:
            raise ValueError(f"method {name!r} does not accept option(s) [{CORRECTOR_OPTION!r}]: it integrates the "
                             f"probability-flow ODE (ode=True), so no corrector may be attached; correctors belong "
                             f"to {_accepting(CORRECTOR_OPTION)}")
        for k in sorted(set(options) & set(self.fixed)):
            if options[k] != self.fixed[k]:
                raise ValueError(f"method {name!r} fixes {k}={self.fixed[k]!r}; use a method that lets you "
                                 f"choose it ({', '.join(repr(n) for n in _accepting(k)) or 'none'})")
        options = {k: v for k, v in options.items() if k not in self.fixed}
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            accepted = sorted(self.options) or "none"
            owners = _accepting(*unknown)
            hint = f"; they belong to {owners}" if owners else ""
            raise ValueError(f"method {name!r} does not accept option(s) {unknown}{hint}; accepted options of "
                             f"{name!r}: {accepted}")
        self.sde = sde
        self.opts = {**self.fixed, **self.options, **options}
        self.validate()

    @classmethod
    def preset(cls, name: str, doc: str, fixed: Optional[Dict[str, Any]] = None,
               accept: Optional[tuple] = None, class_name: Optional[str] = None, **defaults) -> type:
        """A registered variant of ``cls`` that fixes some options and changes some defaults.

        ``fixed``: options set and not choosable; ``accept``: the options the preset still
        accepts (default: all of ``cls.options`` not fixed); ``defaults``: new defaults. Other
        class attributes are inherited; validation is ``cls.validate`` on the full option set.
        ``class_name``: the new class's ``__name__``.
        """
        fixed = dict(fixed or {})
        base = {**cls.fixed, **cls.options, **defaults}
        keep = [k for k in base if k not in fixed] if accept is None else list(accept)
        attrs = {"name": name, "__doc__": doc, "__module__": cls.__module__,
                 "options": {k: base[k] for k in keep},
                 "fixed": {**{k: v for k, v in base.items() if k not in keep}, **fixed}}
        new = type(class_name or f"{cls.__name__}_{name}", (cls,), attrs)
        new.__qualname__ = new.__name__
        return new

    def validate(self) -> None:
        """Check ``self.opts`` (raise ValueError before any work); may set instance metadata
        (``stochastic``, ``ode``, ``evals_per_step``, ``order``) that depends on the options."""

    def nfe(self, steps: int) -> Optional[int]:
        """Score calls made by ``steps`` steps (not counting the final denoising call)."""
        return None if self.evals_per_step is None else steps * self.evals_per_step

    def default_eps(self) -> float:
        """End time used when ``eps`` is not given: the time where the noise level
        ``sigma/alpha`` is :data:`score_sde.sampling.defaults.END_SIGMA` (override for a solver
        with its own fixed end, as ``ddpm``)."""
        return _defaults.eps_at_noise_level(self.sde, _defaults.END_SIGMA)

    def make_grid(self, grid, steps: int, eps: float) -> torch.Tensor:
        return _grids.make_grid(self.default_grid if grid is None else grid, self.sde, steps, eps)

    def prepare(self, grid, steps: Optional[int], eps: float) -> torch.Tensor:
        """The float64 time grid from T to eps (argument checks that need the grid go here)."""
        if steps is None:
            raise ValueError(f"method {self.name!r} needs steps")
        return self.make_grid(grid, steps, eps)

    def init_state(self, x: torch.Tensor, grid: torch.Tensor) -> Dict[str, Any]:
        return {}

    def step(self, m: Evaluator, x: torch.Tensor, t: float, s: float, state: Dict[str, Any]) -> torch.Tensor:
        """Advance x from time t to the earlier time s (t > s), using ``m`` for score calls."""
        raise NotImplementedError

    #: the solver's :meth:`step` calls ``m.after_step`` itself (after each of its sub-updates)
    after_step_inside: bool = False

    def solve(self, m: Evaluator, x: torch.Tensor, grid: torch.Tensor,
              callback: Optional[Callable] = None) -> torch.Tensor:
        """Run :meth:`step` over consecutive grid times; returns x at ``grid[-1]``."""
        ts = grid.tolist()
        m.schedule.prefetch(grid)
        state = self.init_state(x, grid)
        state["grid"] = ts
        hook = m._after_step is not None and not self.after_step_inside
        for i in range(len(ts) - 1):
            state["index"] = i
            x = self.step(m, x, ts[i], ts[i + 1], state)
            m.check(x, i, ts[i], ts[i + 1])
            if hook:
                x = m.after_step(x, ts[i + 1])
            if callback is not None:
                callback({"step": i, "t": ts[i + 1], "x": x, "nfe": m.nfe})
        return x


def _accepting(*option_names) -> list:
    """Registered methods that accept any of ``option_names``."""
    return sorted(n for n, c in SOLVERS.items() if set(option_names) & set(c.options))


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return steps


def _check_placement(generator, device, dtype):
    """ValueError for a generator that is not a torch.Generator, a non-floating dtype, or a device
    this machine lacks (e.g. cuda on a CPU-only build)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)), "
                         f"got {type(generator).__name__} {generator!r}")
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise ValueError(f"dtype must be a real floating-point torch dtype (torch.float32, torch.float64), got {dtype!r}")
    if device is not None:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"unknown device {device!r}: {e}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(dev)!r} requested but CUDA is not available here; use device='cpu'")


def sample(sde, score_fn, shape=None, method: str = "dpmpp_2m", steps: Optional[int] = None,
           eps: Optional[float] = None, generator: Optional[torch.Generator] = None, device=None,
           dtype: Optional[torch.dtype] = None, x_init: Optional[torch.Tensor] = None, grid=None,
           final_step: str = "denoise", callback: Optional[Callable] = None, check_finite: bool = True,
           after_step: Optional[Callable] = None, **options) -> SampleOutput:
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
            "quadratic", "log_snr", "log_snr_early", "log_snr_late", "log_snr_jump", "karras"), a callable
            ``(sde, steps, eps)`` or explicit decreasing times; default per solver (UniPC's
            depends on the step count; see docs/sampling.md).
        final_step: ``"denoise"`` (default): replace x at eps by Tweedie's posterior mean
            ``E[x_0 | x_eps]`` (one more score call); ``"none"``: return x at eps.
        callback: called after every step with a dict ``{"step", "t", "x", "nfe"}`` (read-only).
        check_finite: raise :class:`NonFiniteError` naming the step and time if NaN/Inf appears.
            Fixed-grid solvers keep a device-side record and read it on the host only every
            :data:`FINITE_CHECK_EVERY` steps and at the end (no synchronisation per step).
        after_step: ``after_step(x, t) -> x`` called after every update that moves the state to
            time t (a float, the time x now lives at); the solver continues from what it
            returns (e.g. inpainting's replacement). Predictor-corrector calls it after the
            predictor and after each corrector iteration. Not called after the final denoising
            step. Only solvers with ``supports_after_step`` take it (see
            :func:`supporting_after_step`); others raise ValueError.
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
    if after_step is not None:
        if not callable(after_step):
            raise ValueError("after_step must be a callable after_step(x, t) -> x")
        if not SOLVERS[method].supports_after_step:
            raise ValueError(f"method {method!r} does not support after_step (multistep solvers keep a history "
                             f"that a modified state makes stale; adaptive back-ends cannot take it); methods "
                             f"that support it: {supporting_after_step()}")
    _check_placement(generator, device, dtype)
    solver = SOLVERS[method](sde, **options)
    eps = _defaults.resolve_eps(sde, eps, solver)
    if steps is None:
        steps = solver.default_steps
    if steps is not None:
        steps = _check_steps(steps)
    grid_t = solver.prepare(grid, steps, eps)

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
    m = Evaluator(sde, score_fn, generator=generator, check_finite=check_finite, method=method,
                  after_step=after_step, stochastic=bool(solver.stochastic))
    with torch.no_grad():
        x = solver.solve(m, x, grid_t, callback)
        if final_step == "denoise":
            t_end = float(grid_t[-1])
            x = m.denoise(x, t_end)
            m.check(x, len(grid_t) - 1, t_end, 0.0)
        m.finish()
    return SampleOutput(x, m.nfe)


def supporting_after_step() -> list:
    """Names of the registered methods that accept ``sample(..., after_step=...)``."""
    return sorted(n for n, c in SOLVERS.items() if c.supports_after_step)

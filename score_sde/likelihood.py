"""Exact log-likelihoods, bits/dim and latent codes through the probability-flow ODE.

Notation (see :mod:`score_sde.sde`): the probability-flow ODE of a forward SDE
``dx = f(x, t) dt + g(t) dW`` is::

    dx/dt = v(x, t) = f(x, t) - g(t)^2 / 2 * score(x, t),          t in [eps, T].

It transports p_eps to p_T (~ the prior), and along a trajectory the log-density obeys
``d log p_t(x_t) / dt = -div_x v(x_t, t)`` (instantaneous change of variables). Integrating the
augmented state ``(x_t, delta_t)`` with ``d delta / dt = div v`` from ``t = eps`` (``x_eps = x``,
``delta = 0``) up to ``t = T`` gives::

    log p_eps(x) = log p_T(z) + delta_T,           z = x_T,

with p_T replaced by the prior ``N(0, prior_std^2 I)`` (the model's likelihood; the difference,
``log p_T(z) - log prior(z)``, averages to KL(p_T || prior) >= 0 and is small for the default SDEs).

**What is measured is log p_eps, the density of the data perturbed up to time eps**, not p_0:
``x`` is taken as a point of p_eps. With the default ``eps = sde.likelihood_eps = 1e-5`` the
perturbation std is about 1e-3 (VP), 1e-6 (sub-VP) and 1.3e-4 (VE with sigma_min = 0.01), far
below the 1/255 spacing of 8-bit data, so for smooth densities the two agree closely; the
benchmark (``benchmarks/likelihood_benchmark.py``) reports the gap.

Divergence ``div v = tr(dv/dx)``:

* ``"exact"``: the trace of the Jacobian from D vector-Jacobian products of ONE forward pass,
  batched with ``is_grads_batched`` (chunked to bound memory). Deterministic; meant for small D.
* ``"hutchinson"``: the Hutchinson-Skilling estimator ``E[e^T (dv/dx) e]`` with ``n_probes``
  Rademacher or Gaussian probes ``e``, drawn ONCE per solve (which keeps the estimate unbiased,
  and the ODE smooth so the adaptive solver is not fooled), one forward plus one
  vector-Jacobian product per probe.
* ``"auto"`` (default): exact for ``D <= 64`` values per sample, Hutchinson otherwise.

Either way the score network is evaluated exactly once per ODE function evaluation; the
returned ``nfe`` counts the calls of ``score_fn`` actually made (the reference code calls its
network twice per evaluation: once for the drift, once again for the divergence).

Discrete data (bits/dim): integer codes ``k in {0, ..., L-1}`` per dimension are mapped to data
space by an affine map onto ``[lo, hi]``. Uniform dequantisation draws ``y = lo + (hi - lo)
(k + u) / L`` with ``u ~ U[0, 1)^D``; each code owns a cell of width ``w = (hi - lo) / L`` in
data space, and by Jensen's inequality::

    log P(k) >= E_u[ log p(y) ] + D log w,

so ``log p_eps(y) + D log w`` (one draw of u) is an unbiased estimate of a lower bound on the
discrete log-probability, and ``bpd = -(log p_eps(y) + D log w) / (D ln 2)``. For 8-bit data
(L = 256) scaled to [-1, 1], ``-log2 w = 7``; scaled to [0, 1], 8: the reference code's
``7 - inverse_scaler(-1)`` offset is the special case, computed here for any L and range.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping, NamedTuple, Optional, Union

import torch
from torchdiffeq import odeint

from .sde import SDE, CountingScoreFn, torchdiffeq_methods

from .quantization import Dequantization, dequantize  # the shared quantisation convention (re-exported)

_METHODS = torchdiffeq_methods()
_ADAPTIVE = frozenset(k for k, v in _METHODS.items() if v.adaptive)
_ODE_SOLVERS = frozenset(_METHODS)

__all__ = [
    "LikelihoodOutput", "Dequantization", "log_likelihood", "encode", "decode", "dequantize",
    "bits_per_dim", "ODE_METHODS", "DIVERGENCES", "PROBES",
]

#: ODE solvers accepted as ``method``: the torchdiffeq table of :func:`score_sde.sde.torchdiffeq_methods`
ODE_METHODS = tuple(sorted(_ODE_SOLVERS))
#: accepted ``divergence`` values
DIVERGENCES = ("auto", "exact", "hutchinson")
#: accepted Hutchinson ``probe`` distributions
PROBES = ("rademacher", "gaussian")
#: ``divergence="auto"`` uses the exact trace up to this many values per sample
AUTO_EXACT_MAX_DIM = 64
# cotangents per batched vector-Jacobian product call are limited to this many elements
_VJP_CHUNK_ELEMENTS = 1 << 24
# Several vector-Jacobian products of one forward: batched through vmap (``is_grads_batched``,
# ~3x faster than a loop of backward passes for an MLP score net at D = 16 on the CPU, see
# ``benchmarks/likelihood_benchmark.py --vjp``; torch initialises vmap once per process, ~4 s) or,
# if the model has an op without a batching rule, a loop (same result). Tests force either.
_BATCHED_VJP: bool = True


class LikelihoodOutput(NamedTuple):
    """Result of :func:`log_likelihood`.

    Attributes:
        logp: ``(B,)`` log-likelihood in nats. Continuous data: ``log p_eps(x)``. With
            ``dequantization``: ``log p_eps(y) + D log w``, an unbiased estimate of a lower bound
            on the log-probability of the discrete data (see the module docstring).
        bpd: ``(B,)`` bits per dimension, ``-logp / (D ln 2)`` with ``D`` values per sample.
        z: the latent ``x_T``, shaped like ``x``.
        nfe: number of ``score_fn`` calls made (each a batch of B).
    """

    logp: torch.Tensor
    bpd: torch.Tensor
    z: torch.Tensor
    nfe: int


def bits_per_dim(logp: torch.Tensor, dim: int) -> torch.Tensor:
    """``-logp / (dim ln 2)``: nats per sample to bits per dimension."""
    return -logp / (dim * math.log(2.0))


# ---------------------------------------------------------------------------- the ODE
class _ProbabilityFlow:
    """The probability-flow ODE on a flattened state ``(B, D)``, optionally augmented with the
    divergence ``(x, delta)``; one score evaluation per call."""

    def __init__(self, sde: SDE, score_fn: Callable, shape, dtype, divergence: Optional[str] = None,
                 probes: Optional[torch.Tensor] = None):
        self.counter = CountingScoreFn(score_fn)   # shared with sampling: counts, checks shape and dtype
        self.rsde = sde.reverse(self.counter, probability_flow=True)
        self.shape, self.dtype = tuple(shape), dtype
        self.divergence, self.probes = divergence, probes
        self.batched_vjp = _BATCHED_VJP
        self.t_range = (0.0, sde.T)
        self.clamped = 0       # calls whose time was clamped (a tensor after the first one; no sync)

    def drift(self, t, x_flat):
        x = x_flat.reshape(self.shape)
        # With step_t the solver's steps stay inside [eps, T]; only torchdiffeq's initial-step
        # heuristic may probe outside (it does not bound its trial step by the interval), so its
        # probe time is clamped to the interval (tests check that this happens at most once).
        lo, hi = self.t_range
        if not bool(torch.isfinite(t)):   # one scalar read; as_time below reads t on the host anyway
            # an adaptive step size turns NaN once a drift (i.e. the score) was NaN or inf
            raise FloatingPointError("the score became non-finite (NaN or inf) during the probability-flow ODE "
                                     "solve, so the solver's next time is NaN: check the model and its weights (a "
                                     "diverged checkpoint?) and that the data are finite")
        self.clamped = self.clamped + ((t < lo) | (t > hi)).to(torch.int64)
        tt = t.clamp(lo, hi).to(device=x.device, dtype=self.dtype).expand(x.shape[0]).contiguous()
        v, _ = self.rsde.sde(x, tt)
        return v.reshape(x_flat.shape).to(self.dtype)

    def __call__(self, t, state):
        if self.divergence is None:            # plain ODE (encode / decode)
            return self.drift(t, state)
        x_flat = state[0]
        self.counter.need_grad = True
        with torch.enable_grad():
            x_flat = x_flat.detach().requires_grad_(True)
            v = self.drift(t, x_flat)
            if self.divergence == "exact":
                div = self._exact_div(v, x_flat)
            else:
                div = self._hutchinson_div(v, x_flat)
        return v.detach(), div.detach()

    def _batched(self, x) -> bool:
        return self.batched_vjp

    def _grad(self, v, x, cot, batched: bool):
        return torch.autograd.grad(v, x, cot, retain_graph=True, is_grads_batched=batched)[0]

    def _exact_div(self, v, x):
        """``tr(dv/dx)`` per sample from D vector-Jacobian products of the one forward ``v(x)``."""
        B, D = x.shape
        div = torch.zeros(B, dtype=v.dtype, device=v.device)
        if self._batched(x) and D > 1:
            chunk = max(1, min(D, _VJP_CHUNK_ELEMENTS // max(1, B * D)))
            try:
                for start in range(0, D, chunk):
                    idx = torch.arange(start, min(D, start + chunk), device=x.device)
                    ar = torch.arange(len(idx), device=x.device)
                    cot = torch.zeros(len(idx), B, D, dtype=v.dtype, device=v.device)
                    cot[ar, :, idx] = 1.0
                    rows = self._grad(v, x, cot, batched=True)          # (c, B, D): rows idx of dv/dx
                    div = div + rows[ar, :, idx].sum(0)
                return div
            except (RuntimeError, NotImplementedError):   # no vmap rule for an op: loop (same result)
                self.batched_vjp = False
                div = torch.zeros(B, dtype=v.dtype, device=v.device)
        cot = torch.zeros_like(x)
        for i in range(D):
            cot[:, i] = 1.0
            div = div + self._grad(v, x, cot, batched=False)[:, i]
            cot[:, i] = 0.0
        return div

    def _hutchinson_div(self, v, x):
        """Mean over the fixed probes e of ``e^T (dv/dx) e``, per sample."""
        e = self.probes                                                # (K, B, D)
        if e.shape[0] > 1 and self._batched(x):
            try:
                return (self._grad(v, x, e, batched=True) * e).sum(-1).mean(0)
            except (RuntimeError, NotImplementedError):
                self.batched_vjp = False
        return sum((self._grad(v, x, ek, batched=False) * ek).sum(-1) for ek in e) / e.shape[0]


def _rand_like(ref: torch.Tensor, generator, dtype, kind: str) -> torch.Tensor:
    """Random tensor shaped like ref, drawn on the generator's device, moved to ref's device."""
    dev = generator.device if generator is not None else ref.device
    shape = tuple(ref.shape)
    if kind == "uniform":
        r = torch.rand(shape, generator=generator, device=dev, dtype=dtype)
    elif kind == "gaussian":
        r = torch.randn(shape, generator=generator, device=dev, dtype=dtype)
    else:  # rademacher
        r = torch.randint(0, 2, shape, generator=generator, device=dev).to(dtype) * 2 - 1
    return r.to(ref.device)


def _check_finite(x: torch.Tensor, name: str):
    if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite (no NaN or inf); got {int((~torch.isfinite(x)).sum())} non-finite values")


def _check_batch(x, name: str):
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a tensor shaped (B, *event_shape), got {type(x).__name__}")
    if x.ndim < 2 or x.shape[0] == 0 or x[0].numel() == 0:
        raise ValueError(f"{name} must be shaped (B, *event_shape) with B >= 1 and a non-empty event; got shape "
                         f"{tuple(x.shape)} (add a batch dimension with x[None])")


def _ode_args(sde: SDE, eps, method: str, rtol, atol, options: Optional[Mapping[str, Any]]):
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be a score_sde.sde.SDE, got {type(sde).__name__}")
    eps = sde.likelihood_eps if eps is None else eps
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (0.0 < float(eps) < sde.T):
        raise ValueError(f"eps (the small start time) must be a number in (0, T) = (0, {sde.T}), got {eps!r}")
    if method not in _ODE_SOLVERS:
        raise ValueError(f"method must be one of torchdiffeq's solvers {ODE_METHODS}, got {method!r}")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (0.0 < float(tol) < 1.0):
            raise ValueError(f"{name} must be a number in (0, 1), e.g. 1e-5; got {tol!r}")
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(f"options must be a dict of torchdiffeq solver options, got {type(options).__name__}")
    return float(eps), dict(options or {})


def _solve(func, y0, t0: float, t1: float, method, rtol, atol, options, device):
    func.t_range = (min(t0, t1), max(t0, t1))
    # torchdiffeq's adaptive solvers step past the end time and interpolate back, which would
    # evaluate the score at t > T (outside the model's domain); step_t makes the last step land
    # exactly on the end time.
    if method in _ADAPTIVE:
        extra = options.pop("step_t", None)
        stops = [t1] + ([] if extra is None else [float(s) for s in torch.as_tensor(extra).reshape(-1)
                                                  if float(s) != t1])
        options["step_t"] = torch.tensor(stops, dtype=torch.float64)
    ts = torch.tensor([t0, t1], dtype=torch.float64, device=device)
    with torch.no_grad():
        sol = odeint(func, y0, ts, rtol=float(rtol), atol=float(atol), method=method, options=options)
    if isinstance(sol, tuple):
        return tuple(s[-1] for s in sol)
    return sol[-1]


# ---------------------------------------------------------------------------- public API
def log_likelihood(sde: SDE, score_fn: Callable, x: torch.Tensor, *, eps: Optional[float] = None,
                   method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                   divergence: str = "auto", probe: str = "rademacher", n_probes: int = 1,
                   generator: Optional[torch.Generator] = None,
                   dequantization: Union[None, Dequantization, Mapping[str, Any]] = None,
                   options: Optional[Mapping[str, Any]] = None) -> LikelihoodOutput:
    """Per-sample log-likelihood through the probability-flow ODE.

    Integrates ``(x_t, delta_t)`` with torchdiffeq on x's device and dtype from ``t = eps``
    (``x_eps = x``) to ``t = T`` and returns ``log p_eps(x) = log p_T(z) + delta_T``. The
    error control (``rtol``/``atol``) is torchdiffeq's mixed norm: the larger of the RMS errors
    of x and of delta, so the log-likelihood itself is held to the tolerance whatever D is.

    Args:
        sde: the forward SDE (gives the drift, g(t) and the prior).
        score_fn: ``score_fn(x, t) -> like x`` with ``x (B, *event_shape)``, ``t (B,)``; it must be
            differentiable in x (do not wrap it in ``torch.no_grad``).
        x: data ``(B, *event_shape)`` of any rank. Continuous data must be finite floats.
            With ``dequantization``: integer codes or floats on the quantisation grid.
        eps: start time (default ``sde.likelihood_eps``); the result is the density at t=eps.
        method, rtol, atol, options: torchdiffeq ``odeint`` arguments (``options`` e.g.
            ``{"step_size": 0.01}`` for fixed-step methods).
        divergence: ``"exact"`` (D vector-Jacobian products of one forward), ``"hutchinson"``
            or ``"auto"`` (exact when D <= 64).
        probe, n_probes: Hutchinson probe distribution (``"rademacher"`` or ``"gaussian"``) and
            number of probes averaged; probes are drawn once per call from ``generator``.
        generator: randomness for the probes and the dequantisation noise.
        dequantization: ``None`` for continuous data, or a :class:`Dequantization` (or its
            arguments as a dict ``{"levels": 256, "data_range": (-1, 1)}`` or a tuple
            ``(256, (-1, 1))``): x is then dequantised with uniform noise and ``logp`` / ``bpd``
            refer to the discrete data.

    Returns:
        :class:`LikelihoodOutput` ``(logp (B,) nats, bpd (B,), z like x, nfe)``; ``nfe`` is the
        number of ``score_fn`` calls made (one per ODE function evaluation).
    """
    eps, options = _ode_args(sde, eps, method, rtol, atol, options)
    _check_batch(x, "x")
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    if isinstance(n_probes, bool) or not isinstance(n_probes, numbers.Integral) or n_probes < 1:
        raise ValueError(f"n_probes must be an integer >= 1, got {n_probes!r}")
    if dequantization is not None:
        if isinstance(dequantization, Mapping):
            dequantization = Dequantization(**dequantization)
        elif isinstance(dequantization, (tuple, list)):
            dequantization = Dequantization(*dequantization)
        if not isinstance(dequantization, Dequantization):
            raise ValueError("dequantization must be None, a Dequantization, a dict of its arguments or a "
                             f"tuple (levels, data_range); got {type(dequantization).__name__}")
        x = dequantization.dequantize(x, generator=generator)
    elif not x.is_floating_point():
        raise ValueError(f"x must be floating point, got dtype {x.dtype}; for discrete data pass "
                         "dequantization=Dequantization(levels, data_range)")
    _check_finite(x, "x")

    B, D = x.shape[0], x[0].numel()
    if divergence == "auto":
        divergence = "exact" if D <= AUTO_EXACT_MAX_DIM else "hutchinson"
    x_flat = x.detach().reshape(B, D)
    probes = None
    if divergence == "hutchinson":
        ref = x_flat.new_empty(n_probes, B, D)
        probes = _rand_like(ref, generator, x.dtype, kind=probe)
    flow = _ProbabilityFlow(sde, score_fn, x.shape, x.dtype, divergence, probes)
    y0 = (x_flat, torch.zeros(B, dtype=x.dtype, device=x.device))
    z_flat, delta = _solve(flow, y0, eps, sde.T, method, rtol, atol, options, x.device)
    z = z_flat.reshape(x.shape)
    logp = sde.prior_logp(z).to(delta.dtype) + delta
    if dequantization is not None:
        logp = dequantization.discrete_logp(logp, D)
    return LikelihoodOutput(logp, bits_per_dim(logp, D), z, flow.counter.calls)


def encode(sde: SDE, score_fn: Callable, x: torch.Tensor, *, eps: Optional[float] = None,
           method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
           options: Optional[Mapping[str, Any]] = None, return_nfe: bool = False):
    """Map data to the latent: integrate the probability-flow ODE from ``t = eps`` to ``T``.

    ``x (B, *event_shape)`` -> ``z`` shaped like x (or ``(z, nfe)`` with ``return_nfe``); one
    ``score_fn`` call per ODE evaluation. Inverse of :func:`decode` up to the solver tolerance.
    """
    return _transport(sde, score_fn, x, eps, method, rtol, atol, options, return_nfe, forward=True)


def decode(sde: SDE, score_fn: Callable, z: torch.Tensor, *, eps: Optional[float] = None,
           method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
           options: Optional[Mapping[str, Any]] = None, return_nfe: bool = False):
    """Map latents to data: integrate the probability-flow ODE from ``t = T`` down to ``eps``.

    ``z (B, *event_shape)`` (e.g. ``sde.prior_sampling(shape)``) -> ``x`` shaped like z (or
    ``(x, nfe)`` with ``return_nfe``). Deterministic sampling when z is drawn from the prior.
    """
    return _transport(sde, score_fn, z, eps, method, rtol, atol, options, return_nfe, forward=False)


def _transport(sde, score_fn, x, eps, method, rtol, atol, options, return_nfe, forward):
    name = "x" if forward else "z"
    eps, options = _ode_args(sde, eps, method, rtol, atol, options)
    _check_batch(x, name)
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {x.dtype}")
    _check_finite(x, name)
    B = x.shape[0]
    flow = _ProbabilityFlow(sde, score_fn, x.shape, x.dtype)
    t0, t1 = (eps, sde.T) if forward else (sde.T, eps)
    out = _solve(flow, x.detach().reshape(B, -1), t0, t1, method, rtol, atol, options, x.device).reshape(x.shape)
    return (out, flow.counter.calls) if return_nfe else out

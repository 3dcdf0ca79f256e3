"""Predictor-corrector samplers of the reverse SDE (Song et al. 2021, Algorithms 2-3), for every SDE.

Predictors (one score call each, step from t to s < t, ``dt = t - s``):

``euler_maruyama``     ``x <- x - drift(x, t) dt + g(t) sqrt(dt) z`` with the reverse drift
                       ``f(t) x - g(t)^2 score`` (probability flow: ``- g^2 score / 2``, no noise).
``reverse_diffusion``  the reverse of the SDE's exact discretisation (``sde.discretize`` between
                       s and t): ``x <- x - F + G^2 score + G z`` (no beta > 1 problem).
``ancestral``          sample ``q(x_s | x_t, x_0 = E[x_0 | x_t])`` (``sde.posterior``): DDPM's step
                       for VP, SMLD's for VE, the same exact rule for sub-VP.
``none``               no predictor (corrector-only sampling).

Correctors (``n_steps`` score calls each, at the time the predictor reached):

``langevin``           ``x <- x + e score + sqrt(2 e) z`` with
                       ``e = 2 a (snr ||z|| / ||score||)^2`` computed **per sample** by default
                       (the reference code uses batch means, so its step depends on the batch
                       and on the other samples; ``langevin_norm="batch"`` reproduces it);
                       ``a`` is DDPM's ``1 - beta`` of one step of the SDE's own discretisation
                       (``sde.N`` steps), 1 for VE. ``snr`` is dimension dependent: 0.16 suits
                       CIFAR-10 (D = 3072); low-dimensional data needs a smaller one.
``annealed_langevin``  ``e = 2 a (snr sigma(t))^2`` (Song & Ermon's annealed Langevin dynamics).
``none``               no corrector.

Order: by default each step runs the **predictor first**, then the corrector at the new time,
as in the paper's Algorithms; ``order="corrector_first"`` reproduces the reference code, which
corrects at t before predicting.
"""
from __future__ import annotations

import math

import torch

from .base import Evaluator, Solver
from .. import utils

__all__ = ["PredictorCorrector", "EulerMaruyama", "ReverseDiffusion", "Ancestral", "ProbabilityFlowEuler",
           "DDPM", "PREDICTORS", "CORRECTORS"]

PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral", "none")
CORRECTORS = ("langevin", "annealed_langevin", "none")


def _per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], -1).norm(dim=1)


class PredictorCorrector(Solver):
    """Predictor-corrector sampling (see the module docstring for the rules).

    Options: ``predictor`` (one of :data:`PREDICTORS`), ``corrector`` (one of
    :data:`CORRECTORS`), ``snr`` (corrector signal-to-noise ratio, 0.16), ``n_steps``
    (corrector steps per step, 1), ``probability_flow`` (use the probability-flow drift in the
    euler_maruyama / reverse_diffusion predictor: deterministic predictor), ``order``
    ("predictor_first" as in the paper, or "corrector_first" as in the reference code),
    ``langevin_norm`` ("sample" or "batch", see above), ``variance`` for the ancestral predictor ("posterior": the posterior variance, DDPM's
    beta-tilde; "transition": the forward step variance, DDPM's beta).
    """

    name = "pc"
    order = 1
    stochastic = True
    default_grid = "uniform_t"
    default_steps = 1000
    after_step_in_step = True
    options = {"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16, "n_steps": 1,
               "probability_flow": False, "order": "predictor_first", "variance": "posterior",
               "langevin_norm": "sample"}

    def validate(self):
        o = self.opts
        if o["predictor"] not in PREDICTORS:
            raise ValueError(f"predictor must be one of {PREDICTORS}, got {o['predictor']!r}")
        if o["corrector"] not in CORRECTORS:
            raise ValueError(f"corrector must be one of {CORRECTORS}, got {o['corrector']!r}")
        if o["predictor"] == "none" and o["corrector"] == "none":
            raise ValueError("predictor='none' with corrector='none' does nothing; choose a predictor or a corrector")
        if isinstance(o["n_steps"], bool) or not isinstance(o["n_steps"], int) or o["n_steps"] < 1:
            raise ValueError(f"n_steps (corrector steps per step) must be an integer >= 1, got {o['n_steps']!r}")
        utils.check_positive("snr", o["snr"])
        if o["langevin_norm"] not in ("sample", "batch"):
            raise ValueError(f"langevin_norm must be 'sample' (per-sample norms) or 'batch' (batch means, as the "
                             f"reference code), got {o['langevin_norm']!r}")
        if o["order"] not in ("predictor_first", "corrector_first"):
            raise ValueError(f"order must be 'predictor_first' or 'corrector_first', got {o['order']!r}")
        if o["variance"] not in ("posterior", "transition"):
            raise ValueError(f"variance must be 'posterior' or 'transition', got {o['variance']!r}")
        if o["probability_flow"] and o["predictor"] == "ancestral":
            raise ValueError("probability_flow=True has no ancestral predictor (it is a stochastic "
                             "posterior draw); use predictor='euler_maruyama' or 'reverse_diffusion', or method='ddim'")
        if o["predictor"] != "ancestral" and o["variance"] != "posterior":
            raise ValueError("variance applies only to predictor='ancestral'")
        if o["probability_flow"] and o["predictor"] == "none":
            raise ValueError("probability_flow=True needs a predictor ('euler_maruyama' or 'reverse_diffusion')")
        self.stochastic = not (o["probability_flow"] and o["corrector"] == "none")
        self.evals_per_step = (o["predictor"] != "none") + (o["corrector"] != "none") * o["n_steps"]

    # ------------------------------------------------------------------ predictors
    def predict(self, m: Evaluator, x, t, s):
        o = self.opts
        p = o["predictor"]
        if p == "none":
            return x
        ct = m.coef(t)
        if p == "euler_maruyama":
            c = 0.5 if o["probability_flow"] else 1.0
            score = m.score(x, t)
            dt = t - s
            x_mean = x - dt * (ct["f"] * x - c * ct["g2"] * score)
            if o["probability_flow"]:
                return x_mean
            return x_mean + math.sqrt(ct["g2"] * dt) * m.randn_like(x)
        if p == "reverse_diffusion":
            # exact forward step s -> t: x_t = r x_s + G z with r = alpha_t / alpha_s
            cs = m.coef(s)
            r = math.exp(ct["log_alpha"] - cs["log_alpha"])
            G2 = m.transition_std(t, s) ** 2
            c = 0.5 if o["probability_flow"] else 1.0
            score = m.score(x, t)
            x_mean = x - (r - 1.0) * x + c * G2 * score
            if o["probability_flow"]:
                return x_mean
            return x_mean + math.sqrt(G2) * m.randn_like(x)
        # ancestral: draw from q(x_s | x_t, x0_hat)
        x0 = m.denoise(x, t)
        mean = self._posterior_mean(m, x, x0, t, s)
        std = m.posterior_std(t, s) if o["variance"] == "posterior" else m.transition_std(t, s)
        return mean + std * m.randn_like(x)

    @staticmethod
    def _posterior_mean(m: Evaluator, x, x0, t, s):
        # sde.posterior's mean with float64 scalar coefficients
        ct, cs = m.coef(t), m.coef(s)
        var_ts = m.transition_std(t, s) ** 2
        r = math.exp(ct["log_alpha"] - cs["log_alpha"])
        c_xt = r * cs["sigma"] ** 2 / ct["sigma"] ** 2
        c_x0 = cs["alpha"] * var_ts / ct["sigma"] ** 2
        return c_xt * x + c_x0 * x0

    # ------------------------------------------------------------------ correctors
    def _langevin_alpha(self, m: Evaluator, t):
        # DDPM's 1 - beta_i for one step of the SDE's own discretisation at t
        t_up = min(t + self.sde.T / self.sde.N, self.sde.T)
        return math.exp(2.0 * (m.coef(t_up)["log_alpha"] - m.coef(t)["log_alpha"])) if t_up > t else 1.0

    def correct(self, m: Evaluator, x, t, after_step=None):
        o = self.opts
        if o["corrector"] == "none":
            return x
        a = self._langevin_alpha(m, t)
        for _ in range(o["n_steps"]):
            grad = m.score(x, t)
            z = m.randn_like(x)
            if o["corrector"] == "langevin":
                nz, ng = _per_sample_norm(z), _per_sample_norm(grad)
                if o["langevin_norm"] == "batch":
                    nz, ng = nz.mean().expand_as(nz), ng.mean().expand_as(ng)
                ratio = o["snr"] * nz / ng.clamp_min(1e-30)
                e = utils.append_dims(2.0 * a * ratio ** 2, x.ndim)
                x = x + e * grad + torch.sqrt(2.0 * e) * z
            else:
                e = 2.0 * a * (o["snr"] * m.coef(t)["sigma"]) ** 2
                x = x + e * grad + math.sqrt(2.0 * e) * z
            if after_step is not None:
                x = after_step(x, t)
        return x

    def step(self, m, x, t, s, state):
        # the after_step hook (if any) runs after the predictor and after each corrector iteration
        hook = state.get("after_step")
        if self.opts["order"] == "corrector_first":
            x = self.predict(m, self.correct(m, x, t, hook), t, s)
            return x if hook is None else hook(x, s)
        x = self.predict(m, x, t, s)
        if hook is not None:
            x = hook(x, s)
        return self.correct(m, x, s, hook)


class EulerMaruyama(PredictorCorrector):
    """Euler-Maruyama on the reverse SDE (``pc`` with predictor ``euler_maruyama``, corrector
    ``none`` by default); ``probability_flow=True`` gives Euler on the probability-flow ODE."""
    name = "euler_maruyama"
    options = {**PredictorCorrector.options, "predictor": "euler_maruyama", "corrector": "none"}

    def validate(self):
        if self.opts["predictor"] != "euler_maruyama":
            raise ValueError(f"method {self.name!r} fixes predictor='euler_maruyama'; use method='pc' to choose")
        super().validate()


class ReverseDiffusion(PredictorCorrector):
    """The reverse-diffusion predictor alone (``pc`` with corrector ``none`` by default)."""
    name = "reverse_diffusion"
    options = {**PredictorCorrector.options, "predictor": "reverse_diffusion", "corrector": "none"}

    def validate(self):
        if self.opts["predictor"] != "reverse_diffusion":
            raise ValueError(f"method {self.name!r} fixes predictor='reverse_diffusion'; use method='pc' to choose")
        super().validate()


class Ancestral(PredictorCorrector):
    """Ancestral sampling between arbitrary grid times: DDPM for VP, SMLD for VE, and the same
    exact posterior step for sub-VP (``pc`` with predictor ``ancestral``, corrector ``none``)."""
    name = "ancestral"
    options = {**PredictorCorrector.options, "predictor": "ancestral", "corrector": "none"}

    def validate(self):
        if self.opts["predictor"] != "ancestral":
            raise ValueError(f"method {self.name!r} fixes predictor='ancestral'; use method='pc' to choose")
        super().validate()


class ProbabilityFlowEuler(PredictorCorrector):
    """Euler's method on the probability-flow ODE in t: ``x <- x - dt (f x - g^2 score / 2)``."""
    name = "euler"
    ode = True
    stochastic = False
    options = {}

    def __init__(self, sde, **options):
        Solver.__init__(self, sde, **options)
        self.opts = {**PredictorCorrector.options, "predictor": "euler_maruyama", "corrector": "none",
                     "probability_flow": True}
        PredictorCorrector.validate(self)

    def validate(self):
        pass  # checked in __init__ once the full option set is built


class DDPM(Ancestral):
    """Discrete DDPM ancestral sampling: the SDE's own grid ``t_i = T (i+1) / N``.

    With ``steps = sde.N`` (the default) it visits every ``t_i`` from ``t_{N-1} = T`` down to
    ``t_0 = T/N`` and the final denoising step is the posterior step to ``t_{-1} = 0``, so it makes
    exactly N score calls like DDPM; fewer ``steps`` use evenly strided timesteps. ``variance``:
    "posterior" (beta-tilde, default) or "transition" (beta). ``grid`` and ``eps`` do not apply.
    """
    name = "ddpm"
    options = {"variance": "posterior"}

    def __init__(self, sde, **options):
        Solver.__init__(self, sde, **options)
        variance = self.opts["variance"]
        self.opts = {**PredictorCorrector.options, "predictor": "ancestral", "corrector": "none", "variance": variance}
        PredictorCorrector.validate(self)

    def validate(self):
        pass  # checked in __init__ once the full option set is built

    @property
    def default_steps(self):
        return self.sde.N

    def default_eps(self):
        return self.sde.T / self.sde.N

    def prepare(self, grid, steps, eps):
        if grid is not None:
            raise ValueError("method 'ddpm' uses the SDE's discrete grid t_i = T (i+1) / N; do not pass grid "
                             "(use method='ancestral' with a grid instead)")
        N = self.sde.N
        if steps > N:
            raise ValueError(f"steps must be <= sde.N = {N} for method 'ddpm', got {steps}")
        if abs(eps - self.sde.T / N) > 1e-12 * self.sde.T:
            raise ValueError(f"method 'ddpm' ends at t_0 = T/N = {self.sde.T / N}; do not pass eps")
        # steps grid points -> steps - 1 ancestral steps + the final denoising (posterior) step
        idx = torch.linspace(N - 1, 0, steps, dtype=torch.float64).round().long().unique_consecutive()
        return (idx.to(torch.float64) + 1.0) * (self.sde.T / N)

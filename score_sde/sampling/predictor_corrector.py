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

Corrector step and the step count: with a fixed ``snr`` the corrector's step ``e`` does not shrink
as the predictor's does, so its bias stays as steps grow, and on sharp data the error *grows* with
steps (VP, sharp 64-D mixture: 8.5% spread error at 1000 steps, 9.3% at 2000). Two biases add up:
Langevin at a finite step over-spreads a Gaussian's variance by a factor ``1 / (1 - snr^2)``, and
the per-sample step ``e(x)`` (through ``||score(x)||``) is a state-dependent step size, whose
continuous-time Langevin dynamics targets ``p(x) / e(x)`` instead of ``p`` (for a D-dimensional
Gaussian about ``2 / D`` too wide per unit of Langevin time); neither vanishes when ``e`` merely
shrinks like the predictor's step. By default (``snr_scaling="steps"``) the corrector uses
``snr * min(1, N / steps)`` with ``N = sde.N`` (1000 for the shipped SDEs): the paper's snr up to N
steps, and beyond N a Langevin time ``e / v`` per step falling like ``1 / steps^2``, so the
corrector's total effect, and its bias, vanish as steps grow (the predictor alone then sets the
limit). ``snr_scaling="paper"`` keeps ``snr`` fixed at every step count, as the paper and its code do.

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
#: values of the ``snr_scaling`` option (see the module docstring)
SNR_SCALINGS = ("steps", "paper")


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
    # equal log-SNR steps: with the default end point (sigma/alpha = 1e-3, t ~ 1e-5 on VP) equal
    # t steps put one step across the whole low-noise end, where the score is stiffest; measured
    # on sharp mixtures (docs/sampling.md) the error then falls with steps (1000 -> 2000)
    default_grid = "log_snr"
    default_steps = 1000
    supports_after_step = True
    after_step_inside = True
    options = {"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16, "n_steps": 1,
               "probability_flow": False, "order": "predictor_first", "variance": "posterior",
               "langevin_norm": "sample", "snr_scaling": "steps"}

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
        if o["snr_scaling"] not in SNR_SCALINGS:
            raise ValueError(f"snr_scaling must be one of {SNR_SCALINGS} ('steps': the corrector's snr shrinks "
                             f"beyond sde.N steps; 'paper': fixed snr as in the paper), got {o['snr_scaling']!r}")
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
        pf = o["probability_flow"]
        if p == "euler_maruyama":
            # x_s = x_t - drift dt + g sqrt(dt) z, drift the reverse(-flow) drift at t
            dt = t - s
            if pf:
                return m.schedule.euler_step(x, t, s, m.score(x, t), probability_flow=True)
            x_mean = x - dt * m.reverse_drift(x, t, m.score(x, t), pf)
            return x_mean + math.sqrt(m.coef(t)["g2"] * dt) * m.randn_like(x)
        if p == "reverse_diffusion":
            # reverse of the exact forward step s -> t: x_s = x_t - rev_f + G z
            x_mean = x - m.reverse_discrete_drift(x, t, s, m.score(x, t), pf)
            if pf:
                return x_mean
            return x_mean + m.transition_std(t, s) * m.randn_like(x)
        # ancestral: draw from q(x_s | x_t, x0_hat)
        x0 = m.denoise(x, t)
        mean = m.posterior_mean(x, x0, t, s)
        std = m.posterior_std(t, s) if o["variance"] == "posterior" else m.transition_std(t, s)
        return mean + std * m.randn_like(x)

    # ------------------------------------------------------------------ correctors
    def _langevin_alpha(self, m: Evaluator, t):
        # DDPM's 1 - beta_i for one step of the SDE's own discretisation at t
        t_up = min(t + self.sde.T / self.sde.N, self.sde.T)
        return math.exp(2.0 * (m.coef(t_up)["log_alpha"] - m.coef(t)["log_alpha"])) if t_up > t else 1.0

    def corrector_snr(self, steps: int) -> float:
        """The snr the corrector uses in a run of ``steps`` steps (see ``snr_scaling``)."""
        snr = float(self.opts["snr"])
        if self.opts["snr_scaling"] == "paper":
            return snr
        return snr * min(1.0, self.sde.N / max(int(steps), 1))

    def init_state(self, x, grid):
        return {"snr": self.corrector_snr(len(grid) - 1)}

    def correct(self, m: Evaluator, x, t, snr=None):
        o = self.opts
        if o["corrector"] == "none":
            return x
        snr = float(o["snr"]) if snr is None else snr
        a = self._langevin_alpha(m, t)
        for _ in range(o["n_steps"]):
            grad = m.score(x, t)
            z = m.randn_like(x)
            if o["corrector"] == "langevin":
                nz, ng = _per_sample_norm(z), _per_sample_norm(grad)
                if o["langevin_norm"] == "batch":
                    nz, ng = nz.mean().expand_as(nz), ng.mean().expand_as(ng)
                ratio = snr * nz / ng.clamp_min(1e-30)
                e = utils.append_dims(2.0 * a * ratio ** 2, x.ndim)
                x = x + e * grad + torch.sqrt(2.0 * e) * z
            else:
                e = 2.0 * a * (snr * m.coef(t)["sigma"]) ** 2
                x = x + e * grad + math.sqrt(2.0 * e) * z
            x = m.after_step(x, t)
        return x

    def step(self, m, x, t, s, state):
        # after_step runs after each corrector iteration (in correct) and after the predictor
        snr = state["snr"]
        if self.opts["order"] == "corrector_first":
            return m.after_step(self.predict(m, self.correct(m, x, t, snr), t, s), s)
        return self.correct(m, m.after_step(self.predict(m, x, t, s), s), s, snr)


_PC_DOC = " Equivalent to ``method='pc'`` with the options below fixed or defaulted."

#: ``pc`` with predictor ``euler_maruyama`` (corrector ``none`` by default)
EulerMaruyama = PredictorCorrector.preset(
    "euler_maruyama", "Euler-Maruyama on the reverse SDE (corrector 'none' by default); "
    "``probability_flow=True`` gives Euler on the probability-flow ODE." + _PC_DOC,
    fixed={"predictor": "euler_maruyama"}, class_name="EulerMaruyama", corrector="none")

#: ``pc`` with predictor ``reverse_diffusion`` (corrector ``none`` by default)
ReverseDiffusion = PredictorCorrector.preset(
    "reverse_diffusion", "The reverse-diffusion predictor (corrector 'none' by default)." + _PC_DOC,
    fixed={"predictor": "reverse_diffusion"}, class_name="ReverseDiffusion", corrector="none")

#: ``pc`` with predictor ``ancestral`` (corrector ``none`` by default)
Ancestral = PredictorCorrector.preset(
    "ancestral", "Ancestral sampling between arbitrary grid times: DDPM for VP, SMLD for VE, and the same "
    "exact posterior step for sub-VP (corrector 'none' by default)." + _PC_DOC,
    fixed={"predictor": "ancestral"}, class_name="Ancestral", corrector="none")


class ProbabilityFlowEuler(PredictorCorrector.preset(
        "euler", "", fixed={"predictor": "euler_maruyama", "corrector": "none", "probability_flow": True},
        accept=())):
    """Euler's method on the probability-flow ODE in t: ``x <- x - dt (f x - g^2 score / 2)``
    (``pc`` with predictor ``euler_maruyama``, ``probability_flow=True``, no corrector)."""
    ode = True
    stochastic = False


class DDPM(PredictorCorrector.preset("ddpm", "", fixed={"predictor": "ancestral", "corrector": "none"},
                                     accept=("variance",))):
    """Discrete DDPM ancestral sampling: the SDE's own grid ``t_i = T (i+1) / N``.

    With ``steps = sde.N`` (the default) it visits every ``t_i`` from ``t_{N-1} = T`` down to
    ``t_0 = T/N`` and the final denoising step is the posterior step to ``t_{-1} = 0``, so it makes
    exactly N score calls like DDPM; fewer ``steps`` use evenly strided timesteps. ``variance``:
    "posterior" (beta-tilde, default) or "transition" (beta). ``grid`` and ``eps`` do not apply.
    """

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

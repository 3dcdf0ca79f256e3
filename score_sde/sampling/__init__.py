"""Samplers for score SDEs: one entry point, a name -> solver registry, time grids.

>>> import torch, score_sde
>>> from score_sde.sampling import sample
>>> sde = score_sde.VPSDE()
>>> gm = score_sde.GaussianMixture.random(dim=2, n_components=4, seed=0)
>>> out = sample(sde, gm.score_fn(sde), (256, 2), method="dpmpp_2m", steps=9,
...              generator=torch.Generator().manual_seed(0))
>>> out.samples.shape, out.nfe
(torch.Size([256, 2]), 10)

Methods (``SOLVERS``): ``euler_maruyama``, ``reverse_diffusion``, ``ancestral``, ``pc``
(predictor-corrector), ``ddpm`` (discrete DDPM ancestral on the SDE's own grid), ``euler``
(probability-flow Euler), ``ddim`` (eta), ``heun`` (EDM), ``dpmpp_2m``, ``dpmpp_3m``,
``dpmpp_2m_sde``, ``ode`` (torchdiffeq), ``sdeint`` (torchsde), ``unipc``, ``deis``,
``dpm_solver_2s``, ``dpm_solver_3s``, ``dpmpp_2s``, ``edm`` (EDM's stochastic sampler).
See ``docs/sampling.md``.
"""
from . import defaults, grids
from .base import Evaluator, NonFiniteError, SampleOutput, Solver, SOLVERS, sample
from .fast import DDIM, DPMSolverPP, DPMSolverPP2M, DPMSolverPP2MSDE, DPMSolverPP3M, Heun
from .grids import GRIDS, karras, log_snr, make_grid, quadratic, uniform_t
from .deis import DEIS
from .edm import EDMStochastic
from .ode import ProbabilityFlowODE
from .predictor_corrector import (CORRECTORS, DDPM, PREDICTORS, Ancestral, EulerMaruyama,
                                  PredictorCorrector, ProbabilityFlowEuler, ReverseDiffusion)
from .sdeint import TorchSDE
from .singlestep import DPMSolver2S, DPMSolver3S, DPMSolverPP2S
from .unipc import UniPC

SOLVERS.update({
    "euler_maruyama": EulerMaruyama,
    "reverse_diffusion": ReverseDiffusion,
    "ancestral": Ancestral,
    "pc": PredictorCorrector,
    "ddpm": DDPM,
    "euler": ProbabilityFlowEuler,
    "ddim": DDIM,
    "heun": Heun,
    "dpmpp_2m": DPMSolverPP2M,
    "dpmpp_3m": DPMSolverPP3M,
    "dpmpp_2m_sde": DPMSolverPP2MSDE,
    "ode": ProbabilityFlowODE,
    "sdeint": TorchSDE,
    "unipc": UniPC,
    "deis": DEIS,
    "dpm_solver_2s": DPMSolver2S,
    "dpm_solver_3s": DPMSolver3S,
    "dpmpp_2s": DPMSolverPP2S,
    "edm": EDMStochastic,
})

__all__ = [
    "sample", "SampleOutput", "SOLVERS", "Solver", "Evaluator", "NonFiniteError",
    "grids", "GRIDS", "uniform_t", "quadratic", "log_snr", "karras", "make_grid",
    "PREDICTORS", "CORRECTORS", "PredictorCorrector", "EulerMaruyama", "ReverseDiffusion", "Ancestral",
    "ProbabilityFlowEuler", "DDPM", "DDIM", "Heun", "DPMSolverPP", "DPMSolverPP2M", "DPMSolverPP3M",
    "DPMSolverPP2MSDE", "ProbabilityFlowODE", "TorchSDE", "UniPC", "DEIS", "DPMSolver2S", "DPMSolver3S",
    "DPMSolverPP2S", "EDMStochastic", "defaults",
]

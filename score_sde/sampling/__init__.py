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
from .base import (Evaluator, NonFiniteError, SampleOutput, Solver, SOLVERS, register, sample,
                   supporting_after_step)
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

for _cls in (EulerMaruyama, ReverseDiffusion, Ancestral, PredictorCorrector, DDPM, ProbabilityFlowEuler, DDIM,
             Heun, DPMSolverPP2M, DPMSolverPP3M, DPMSolverPP2MSDE, ProbabilityFlowODE, TorchSDE,
             UniPC, DEIS, DPMSolver2S, DPMSolver3S, DPMSolverPP2S, EDMStochastic):
    register(_cls)
del _cls

__all__ = [
    "sample", "SampleOutput", "SOLVERS", "Solver", "Evaluator", "NonFiniteError", "register",
    "supporting_after_step",
    "grids", "GRIDS", "uniform_t", "quadratic", "log_snr", "karras", "make_grid",
    "PREDICTORS", "CORRECTORS", "PredictorCorrector", "EulerMaruyama", "ReverseDiffusion", "Ancestral",
    "ProbabilityFlowEuler", "DDPM", "DDIM", "Heun", "DPMSolverPP", "DPMSolverPP2M", "DPMSolverPP3M",
    "DPMSolverPP2MSDE", "ProbabilityFlowODE", "TorchSDE", "UniPC", "DEIS", "DPMSolver2S", "DPMSolver3S",
    "DPMSolverPP2S", "EDMStochastic", "defaults",
]

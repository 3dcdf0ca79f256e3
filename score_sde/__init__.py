"""score_sde: continuous-time score-based generative models (score SDEs) in PyTorch.

See README.md for a tour. Notation: ``x`` is ``(B, *event_shape)`` of any rank, ``t`` one time per
sample ``(B,)``; ``x_t = alpha(t) x_0 + sigma(t) z`` (see :mod:`score_sde.sde`).
"""
__version__ = "0.1.0"

from . import (analytic, builders, conditional, config, data, evaluation, interop, likelihood, losses, models, quantization, sampling,
               schedules, sde, training, utils)
from .analytic import Gaussian, GaussianMixture
from .config import default_config, get_model, load_config
from .likelihood import Dequantization, LikelihoodOutput, bits_per_dim, decode, dequantize, encode, log_likelihood
from .losses import DSMLoss, ddpm_loss, flow_matching_loss, smld_loss
from .models import MLP, ScoreModel
from .sampling import SOLVERS, SampleOutput, sample
from .schedules import CosineVPSDE, DiscreteVPSDE, EDMSDE, LinearInterpolantSDE, ScheduleSDE
from .sde import SDE, VESDE, VPSDE, ReverseSDE, subVPSDE
from .training import EMA, CheckpointError, load_model, train

__all__ = [
    "__version__",
    "SDE", "VPSDE", "subVPSDE", "VESDE", "ReverseSDE",
    "CosineVPSDE", "EDMSDE", "LinearInterpolantSDE", "ScheduleSDE", "DiscreteVPSDE",
    "DSMLoss", "ddpm_loss", "smld_loss", "flow_matching_loss",
    "ScoreModel", "MLP", "get_model",
    "sample", "SampleOutput", "SOLVERS",
    "log_likelihood", "LikelihoodOutput", "encode", "decode", "Dequantization", "dequantize", "bits_per_dim",
    "train", "EMA", "load_model", "CheckpointError",
    "Gaussian", "GaussianMixture",
    "load_config", "default_config",
    "analytic", "builders", "conditional", "config", "data", "evaluation", "interop", "likelihood", "losses", "models",
    "quantization", "sampling", "schedules", "sde", "training", "utils",
]

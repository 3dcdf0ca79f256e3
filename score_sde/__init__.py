"""score_sde: continuous-time score-based generative models (score SDEs) in PyTorch.

See README.md for a tour. Notation: ``x`` is ``(B, *event_shape)`` of any rank, ``t`` one time per
sample ``(B,)``; ``x_t = alpha(t) x_0 + sigma(t) z`` (see :mod:`score_sde.sde`).
"""
__version__ = "0.1.0"

from . import analytic, builders, data, evaluation, likelihood, losses, models, sampling, sde, training, utils
from .analytic import Gaussian, GaussianMixture
from .builders import default_config, load_config
from .likelihood import Dequantization, LikelihoodOutput, bits_per_dim, decode, dequantize, encode, log_likelihood
from .losses import DSMLoss, ddpm_loss, smld_loss
from .models import MLP, ScoreModel, get_model
from .sampling import SOLVERS, SampleOutput, sample
from .sde import SDE, VESDE, VPSDE, ReverseSDE, subVPSDE
from .training import EMA, CheckpointError, load_model, train
from . import conditional  # noqa: E402  (controllable generation; imports sampling)

__all__ = [
    "__version__",
    "SDE", "VPSDE", "subVPSDE", "VESDE", "ReverseSDE",
    "DSMLoss", "ddpm_loss", "smld_loss",
    "ScoreModel", "MLP", "get_model",
    "sample", "SampleOutput", "SOLVERS",
    "log_likelihood", "LikelihoodOutput", "encode", "decode", "Dequantization", "dequantize", "bits_per_dim",
    "train", "EMA", "load_model", "CheckpointError",
    "Gaussian", "GaussianMixture",
    "load_config", "default_config",
    "analytic", "conditional", "builders", "data", "evaluation", "likelihood", "losses", "models", "sampling", "sde", "training", "utils",
]

"""score_sde: continuous-time score-based generative models (score SDEs) in PyTorch.

See README.md for a tour. Notation: ``x`` is ``(B, *event_shape)`` of any rank, ``t`` one time per
sample ``(B,)``; ``x_t = alpha(t) x_0 + sigma(t) z`` (see :mod:`score_sde.sde`).
"""
__version__ = "0.1.0"

from . import analytic, losses, sde, utils
from .analytic import Gaussian, GaussianMixture
from .losses import DSMLoss, ddpm_loss, smld_loss
from .models import ScoreModel
from .sde import SDE, VESDE, VPSDE, ReverseSDE, subVPSDE

__all__ = [
    "__version__",
    "SDE", "VPSDE", "subVPSDE", "VESDE", "ReverseSDE",
    "DSMLoss", "ddpm_loss", "smld_loss",
    "ScoreModel",
    "Gaussian", "GaussianMixture",
    "analytic", "losses", "sde", "utils",
]

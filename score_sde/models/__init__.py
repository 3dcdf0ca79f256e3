"""Score networks (backbones ``net(x, labels)``) and the wrappers that read their output.

Backbones: ``MLP`` (vectors of any event shape), ``DDPM`` (the DDPM U-Net), ``NCSNpp`` (DDPM++ and
NCSN++). ``get_model(config)`` builds one from an ml_collections config with the paper's key
names; ``MODELS`` maps names to classes; ``default_model_config`` / ``reference_config`` give the
paper's CIFAR-10 settings; ``load_reference_checkpoint`` loads the paper's released checkpoints.
Nothing is compiled or allocated at import.
"""
from .wrappers import OUTPUTS, TIME_LABELS, ScoreModel
from .mlp import MLP
from .ddpm import DDPM
from .ncsnpp import NCSNpp
from .factory import MODELS, REFERENCE_CONFIGS, default_model_config, get_model, model_kwargs, reference_config

_LAZY = {"load_reference_checkpoint", "reference_score_model"}


def __getattr__(name):
    # the converter is imported on first use, so that ``python -m score_sde.models.convert`` runs cleanly
    if name in _LAZY:
        from . import convert
        return getattr(convert, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ScoreModel", "OUTPUTS", "TIME_LABELS", "MLP", "DDPM", "NCSNpp", "MODELS", "get_model", "model_kwargs",
    "default_model_config", "reference_config", "REFERENCE_CONFIGS", "load_reference_checkpoint",
    "reference_score_model",
]

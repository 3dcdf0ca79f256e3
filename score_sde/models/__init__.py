"""Score networks (backbones ``net(x, labels)``) and the wrappers that read their output.

Backbones: ``MLP`` (vectors of any event shape), ``DDPM`` (the DDPM U-Net), ``NCSNpp`` (DDPM++ and
NCSN++). ``MODELS`` maps config names to classes; :func:`score_sde.config.get_model` builds one
from a config (constructor arguments read from the class signature), and
:mod:`score_sde.interop` loads the paper's released checkpoints into them. This subpackage
imports only the SDE layer and the utilities. Nothing is compiled or allocated at import.
"""
from .wrappers import OUTPUTS, TIME_LABELS, ScoreModel
from .mlp import MLP
from .ddpm import DDPM
from .ncsnpp import NCSNpp

#: ``config.model.name`` -> backbone class (adding a network: its module plus one line here)
MODELS = {"mlp": MLP, "ddpm": DDPM, "ncsnpp": NCSNpp}

__all__ = ["ScoreModel", "OUTPUTS", "TIME_LABELS", "MLP", "DDPM", "NCSNpp", "MODELS"]

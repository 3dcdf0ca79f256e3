"""Score networks (backbones ``net(x, labels)``) and the wrappers that read their output."""
from .wrappers import OUTPUTS, TIME_LABELS, ScoreModel

__all__ = ["ScoreModel", "OUTPUTS", "TIME_LABELS"]

"""Sub-VP SDE on scikit-learn's bundled 8x8 digits: configs/vp/digits.py with the sub-VP SDE (same data, model, training)."""
from pathlib import Path

from score_sde.config import load_config


def get_config():
    config = load_config(Path(__file__).resolve().parent.parent / "vp" / "digits.py")
    config.sde.name = "subvpsde"
    return config

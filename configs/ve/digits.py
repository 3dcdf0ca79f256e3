"""VE SDE on scikit-learn's bundled 8x8 digits: configs/vp/digits.py with the VE SDE (same data, model, training)."""
from pathlib import Path

from score_sde.config import load_config


def get_config():
    config = load_config(Path(__file__).resolve().parent.parent / "vp" / "digits.py")
    config.sde.name = "vesde"
    config.sde.sigma_max = 16.0  # about the largest distance between two images in [-1, 1]^64
    return config

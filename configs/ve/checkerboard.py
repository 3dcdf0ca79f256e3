"""VE SDE on the 2-D checkerboard: configs/vp/checkerboard.py with the VE SDE (same data, model, training)."""
from pathlib import Path

from score_sde.config import load_config


def get_config():
    config = load_config(Path(__file__).resolve().parent.parent / "vp" / "checkerboard.py")
    config.sde.name = "vesde"
    config.sde.sigma_max = 5.0  # about the largest distance between data points
    return config

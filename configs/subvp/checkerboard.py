"""Sub-VP SDE on the 2-D checkerboard: configs/vp/checkerboard.py with the sub-VP SDE (same data, model, training)."""
from pathlib import Path

from score_sde.config import load_config


def get_config():
    config = load_config(Path(__file__).resolve().parent.parent / "vp" / "checkerboard.py")
    config.sde.name = "subvpsde"
    return config

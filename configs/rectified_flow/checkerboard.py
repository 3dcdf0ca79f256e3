"""Rectified flow (linear interpolant, alpha = 1 - t, sigma = t, T = 0.99) on the 2-D checkerboard:
configs/vp/checkerboard.py with a flow-velocity network trained by conditional flow matching
(DSM with the 'flow' weighting, t uniform on [1e-3, T]); same data, model size and optimiser."""
from pathlib import Path

from score_sde.config import load_config


def get_config():
    config = load_config(Path(__file__).resolve().parent.parent / "vp" / "checkerboard.py")
    config.sde.name = "rectified_flow"
    config.model.output = "flow"
    config.training.weighting = "flow"
    config.training.time_sampling = "uniform"
    config.training.eps = 1e-3
    config.sampling.method = "heun"
    config.sampling.steps = 18
    return config

"""Cosine VP schedule (improved DDPM, s = 0.008, T = 0.9946) on the 2-D checkerboard:
configs/vp/checkerboard.py with the cosine SDE (same data, model, likelihood-weighted training)."""
from pathlib import Path

from score_sde.config import load_config


def get_config():
    config = load_config(Path(__file__).resolve().parent.parent / "vp" / "checkerboard.py")
    config.sde.name = "cosine"
    return config

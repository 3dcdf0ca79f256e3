"""DDPM++ (continuous) on CIFAR-10 with the sub-VP SDE, as in the paper (about 62M parameters):
configs/vp/cifar10_ddpmpp_continuous.py with the sub-VP SDE.
Data: --config.data.root=DIR with DIR/cifar-10-batches-py (the python version of CIFAR-10).
"""
from pathlib import Path

from score_sde.config import load_config


def get_config():
    config = load_config(Path(__file__).resolve().parent.parent / "vp" / "cifar10_ddpmpp_continuous.py")
    config.sde.name = "subvpsde"
    return config

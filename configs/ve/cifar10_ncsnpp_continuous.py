"""NCSN++ (continuous) on CIFAR-10 with the VE SDE, as in the paper.

Gaussian Fourier embedding of log sigma, FIR up/down-sampling, progressive residual input path,
output divided by sigma (the net predicts the score), data in [0, 1] (the net centres it),
sum-reduced sigma^2-weighted DSM, EMA 0.999; PC sampling (reverse diffusion + Langevin).
Data: --config.data.root=DIR with DIR/cifar-10-batches-py (the python version of CIFAR-10).
"""
from score_sde.config import cifar10_config


def get_config():
    config = cifar10_config("ve_cifar10_ncsnpp_continuous", sde="vesde", centered=False, output="score",
                            time_label="sigma")
    config.sde.sigma_min = 0.01
    config.sde.sigma_max = 50.0
    config.training.reduce_mean = False
    return config

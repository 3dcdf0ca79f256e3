"""DDPM++ (continuous) on CIFAR-10 with the VP SDE, as in the paper (about 62M parameters).

NCSN++ backbone with DDPM++ settings: positional embedding of 999 t, noise prediction, BigGAN
residual blocks, skip rescaling, no FIR; sigma^2-weighted continuous DSM with mean reduction;
EMA 0.9999; data in [-1, 1] with random flips.
Data: --config.data.root=DIR with DIR/cifar-10-batches-py (the python version of CIFAR-10).
"""
from score_sde.config import cifar10_config


def get_config():
    config = cifar10_config("vp_cifar10_ddpmpp_continuous", sde="vpsde", centered=True, output="eps",
                            time_label="t", label_scale=999.0)
    config.training.reduce_mean = True
    config.sampling.method = "euler_maruyama"
    return config

"""Class-conditional VP model of the 8x8 digits for classifier-free guidance (issue 15).

The digits MLP with a class embedding (10 classes and a null class) trained with label dropout
0.2, so one network gives both ``score(x, t, label)`` and the unconditional ``score(x, t, None)``.
EDM preconditioning (``output="edm"``, ``time_label="edm"``) keeps the denoiser's error bounded at
every t, which deterministic solvers and guidance need (see docs/conditional.md).

    score-sde train  --config vp/digits_conditional --workdir runs/digits_cond
    score-sde sample --workdir runs/digits_cond --label 3 --guidance 2
"""
from score_sde.config import default_config


def get_config():
    config = default_config()
    config.sde.name = "vpsde"
    config.data.dataset = "digits"
    config.data.image_size = 8
    config.data.num_channels = 1
    config.model.num_classes = 10
    config.model.output = "edm"
    config.model.time_label = "edm"
    config.model.hidden = 256
    config.model.num_blocks = 4
    config.model.dropout = 0.1
    config.model.fourier_scale = 8.0
    config.training.label_dropout = 0.2
    config.training.weighting = "sigma2"
    config.training.time_sampling = "uniform"
    config.training.batch_size = 128
    config.training.n_iters = 10000
    config.training.snapshot_freq = 2000
    config.optim.lr = 1e-3
    config.sampling.method = "euler_maruyama"
    config.sampling.steps = 200
    config.eval.divergence = "hutchinson"
    return config

"""VP SDE on the 2-D checkerboard (uniform on 8 unit squares of [-2, 2]^2, entropy log 8).

The EDM recipe (``score_sde.config.RECIPES["edm"]``: preconditioned output, EDM weighting, log-normal
noise levels, sigma_data measured from 10000 points) and an MLP; other toy sets by override:
``--config.data.dataset=moons`` (swiss_roll, 8gaussians, rings).
"""
from score_sde.config import apply_recipe, default_config


def get_config():
    config = default_config()
    config.sde.name = "vpsde"
    config.data.dataset = "checkerboard"
    config.data.image_size = 0
    config.data.num_channels = 0
    config.data.uniform_dequantization = False
    apply_recipe(config, "edm")
    config.model.hidden = 128
    config.model.num_blocks = 4
    config.training.batch_size = 384
    config.training.n_iters = 25000
    config.training.snapshot_freq = 5000
    config.optim.lr = 1e-3
    config.sampling.n = 2000
    config.sampling.batch_size = 2000
    config.eval.num_points = 5000
    return config

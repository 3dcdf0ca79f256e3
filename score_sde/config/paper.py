"""The paper's configs in one place (Song et al. 2021, App. H; yang-song/score_sde_pytorch).

* :func:`reference_config` / :data:`REFERENCE_CONFIGS`: the reference code's CIFAR-10 model
  sections with the paper's key names (what builds and conditions the released networks);
* :func:`cifar10_config`: a full training config for one of them (used by
  ``configs/*/cifar10_*.py``).
"""
from __future__ import annotations

import ml_collections
from ml_collections import ConfigDict

from .schema import default_config

__all__ = ["REFERENCE_CONFIGS", "reference_config", "default_model_config", "cifar10_config", "reference_names"]


def _cifar10_model(**over) -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    # the reference's get_default_configs() model section
    m.sigma_min, m.sigma_max, m.num_scales = 0.01, 50.0, 1000
    m.beta_min, m.beta_max = 0.1, 20.0
    m.dropout = 0.1
    m.embedding_type = "fourier"
    m.name = "ncsnpp"
    m.scale_by_sigma = False
    m.ema_rate = 0.9999
    m.normalization = "GroupNorm"
    m.nonlinearity = "swish"
    m.nf = 128
    m.ch_mult = (1, 2, 2, 2)
    m.num_res_blocks = 4
    m.attn_resolutions = (16,)
    m.resamp_with_conv = True
    m.conditional = True
    m.fir = False
    m.fir_kernel = [1, 3, 3, 1]
    m.skip_rescale = True
    m.resblock_type = "biggan"
    m.progressive = "none"
    m.progressive_input = "none"
    m.progressive_combine = "sum"
    m.attention_type = "ddpm"
    m.init_scale = 0.0
    m.fourier_scale = 16
    m.conv_size = 3
    for k, v in over.items():
        m[k] = v
    return m


_DDPMPP = dict(embedding_type="positional")
_NCSNPP = dict(scale_by_sigma=True, ema_rate=0.999, fir=True, progressive_input="residual", embedding_type="fourier")

# name -> (sde, model overrides, data.centered)
REFERENCE_CONFIGS = {
    "vp_cifar10_ddpmpp_continuous": ("vpsde", dict(**_DDPMPP), True),
    "vp_cifar10_ddpmpp_deep_continuous": ("vpsde", dict(**_DDPMPP, num_res_blocks=8), True),
    "subvp_cifar10_ddpmpp_deep_continuous": ("subvpsde", dict(**_DDPMPP, num_res_blocks=8), True),
    "ve_cifar10_ncsnpp_continuous": ("vesde", dict(**_NCSNPP), False),
    "ve_cifar10_ncsnpp_deep_continuous": ("vesde", dict(**_NCSNPP, num_res_blocks=8), False),
    "vp_ddpm_cifar10_continuous": ("vpsde", dict(name="ddpm", num_res_blocks=2), True),
}
_ALIASES = {
    "ddpmpp_cifar10": "vp_cifar10_ddpmpp_continuous",
    "ddpmpp_deep_cifar10": "vp_cifar10_ddpmpp_deep_continuous",
    "ncsnpp_cifar10": "ve_cifar10_ncsnpp_continuous",
    "ncsnpp_deep_cifar10": "ve_cifar10_ncsnpp_deep_continuous",
    "ddpm_cifar10": "vp_ddpm_cifar10_continuous",
}


def reference_names():
    """Every accepted reference-config name (file names, then aliases)."""
    return sorted(REFERENCE_CONFIGS) + sorted(_ALIASES)


def reference_config(name: str) -> ml_collections.ConfigDict:
    """The paper's config ``name`` reduced to what builds and conditions its network.

    Returns a ConfigDict with ``model`` (every model key of the reference config), ``data``
    (``dataset, image_size, num_channels, centered``) and ``training`` (``sde, continuous``).
    ``name`` is a reference file name (``"vp_cifar10_ddpmpp_continuous"``, the names of
    ``shared/reference_checkpoints``) or an alias (``"ddpmpp_cifar10"``, ``"ncsnpp_cifar10"``,
    ``"ddpm_cifar10"``, ``"ddpmpp_deep_cifar10"``, ``"ncsnpp_deep_cifar10"``).
    """
    key = _ALIASES.get(name, name)
    if key not in REFERENCE_CONFIGS:
        raise ValueError(f"unknown reference config {name!r}; choose one of {reference_names()}")
    sde, over, centered = REFERENCE_CONFIGS[key]
    cfg = ml_collections.ConfigDict()
    cfg.model = _cifar10_model(**over)
    cfg.data = ml_collections.ConfigDict(dict(dataset="CIFAR10", image_size=32, num_channels=3, centered=centered))
    cfg.training = ml_collections.ConfigDict(dict(sde=sde, continuous=True))
    return cfg


def default_model_config(name: str) -> ml_collections.ConfigDict:
    """The ``config.model`` section of the paper's config ``name`` (see ``reference_config``).

    Remember the matching ``config.data.centered``: True for the DDPM/DDPM++ (VP, sub-VP) models,
    False for NCSN++ (VE), whose net maps [0, 1] inputs to [-1, 1] itself.
    """
    return reference_config(name).model


def cifar10_config(reference: str, sde: str, centered: bool, output: str, time_label: str,
                   label_scale: float = 1.0) -> ConfigDict:
    """A full training config for the reference model ``reference`` (a name of REFERENCE_CONFIGS):
    CIFAR-10 in ``config.data.root``, the paper's optimiser and training schedule."""
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

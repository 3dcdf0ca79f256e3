"""Build backbones from ml_collections configs (the paper's key names) and the paper's model configs.

``get_model(config)`` reads ``config.model.name`` (``"mlp" | "ddpm" | "ncsnpp"``; DDPM++ is
``"ncsnpp"`` with the DDPM++ settings) and the keys below, and returns an ``nn.Module``
``net(x, labels)``. This is the one place where a config becomes a network; the network classes
themselves take plain keyword arguments.

Keys read (absent keys take the class defaults):

* ``ncsnpp``: ``model.{nf, ch_mult, num_res_blocks, attn_resolutions, dropout, resamp_with_conv,
  conditional, fir, fir_kernel, skip_rescale, resblock_type, progressive, progressive_input,
  progressive_combine, embedding_type, init_scale, fourier_scale, scale_by_sigma, nonlinearity,
  num_scales, sigma_min, sigma_max}``, checked: ``model.{normalization="GroupNorm",
  attention_type="ddpm", conv_size=3}``; ``data.{image_size, num_channels, centered}``.
* ``ddpm``: the same minus the NCSN++-only keys.
* ``mlp``: ``model.{hidden, num_blocks, embedding_type, embedding_dim, fourier_scale, layer_norm,
  dropout, nonlinearity, log_labels}``; the event shape from ``model.event_shape`` or
  ``data.event_shape``, else ``data.dim`` (vectors), else ``(data.num_channels, data.image_size,
  data.image_size)``.
"""
from __future__ import annotations

from typing import Any, Dict

import ml_collections

from .ddpm import DDPM
from .mlp import MLP
from .ncsnpp import NCSNpp

__all__ = ["MODELS", "get_model", "model_kwargs", "default_model_config", "reference_config", "REFERENCE_CONFIGS"]

MODELS = {"mlp": MLP, "ddpm": DDPM, "ncsnpp": NCSNpp}

_DDPM_KEYS = ("nf", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "resamp_with_conv", "conditional",
              "scale_by_sigma", "nonlinearity", "num_scales", "sigma_min", "sigma_max")
_NCSNPP_KEYS = _DDPM_KEYS + ("fir", "fir_kernel", "skip_rescale", "resblock_type", "progressive",
                             "progressive_input", "progressive_combine", "embedding_type", "init_scale",
                             "fourier_scale")
_MLP_KEYS = ("hidden", "num_blocks", "embedding_type", "embedding_dim", "fourier_scale", "layer_norm", "dropout",
             "nonlinearity", "log_labels")
_FIXED = {"normalization": ("groupnorm",), "attention_type": ("ddpm",), "conv_size": (3,)}


def _get(section, key, default=None):
    if section is None:
        return default
    try:
        return section[key]
    except (KeyError, AttributeError, TypeError):
        return default


def _has(section, key) -> bool:
    return _get(section, key, _MISSING) is not _MISSING


_MISSING = object()


def _plain(v):
    return tuple(v) if isinstance(v, list) else v


def model_kwargs(config) -> Dict[str, Any]:
    """The constructor keyword arguments ``get_model`` would use for ``config`` (name excluded)."""
    model, data = _get(config, "model"), _get(config, "data")
    if model is None:
        raise ValueError("config.model is missing: get_model needs config.model.name and the model keys")
    name = str(_get(model, "name", "")).lower()
    if name not in MODELS:
        raise ValueError(f"config.model.name must be one of {sorted(MODELS)}, got {_get(model, 'name')!r}")
    kw: Dict[str, Any] = {}
    if name == "mlp":
        for k in _MLP_KEYS:
            if _has(model, k):
                kw[k] = _plain(model[k])
        for src in (model, data):
            if _has(src, "event_shape"):
                kw["event_shape"] = _plain(src["event_shape"])
                break
        else:
            if _has(data, "dim"):
                kw["event_shape"] = int(data["dim"])
            elif _has(data, "image_size"):
                kw["event_shape"] = (int(_get(data, "num_channels", 1)), int(data["image_size"]), int(data["image_size"]))
            else:
                raise ValueError("mlp needs the event shape: set config.data.dim (vectors), config.data.event_shape "
                                 "or config.data.image_size and config.data.num_channels")
        return kw
    for k, allowed in _FIXED.items():
        if _has(model, k):
            v = model[k]
            if (v.lower() if isinstance(v, str) else v) not in allowed:
                raise ValueError(f"config.model.{k}={v!r} is not supported; use one of {allowed}")
    for k in (_NCSNPP_KEYS if name == "ncsnpp" else _DDPM_KEYS):
        if _has(model, k):
            kw[k] = _plain(model[k])
    for k in ("image_size", "num_channels", "centered"):
        if _has(data, k):
            kw[k] = data[k]
        elif k != "centered":
            raise ValueError(f"config.data.{k} is required to build {name!r}")
    return kw


def get_model(config):
    """Build the backbone named by ``config.model.name`` (see the module docstring for the keys).

    Unknown names raise ValueError listing ``MODELS``. Use ``with torch.device("meta"):`` around
    the call to inspect a large model without allocating it.
    """
    kw = model_kwargs(config)
    return MODELS[str(config.model.name).lower()](**kw)


# ----------------------------------------------------------------------------------------------
# the paper's configs (model + the data keys the model reads)


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


def _names():
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
        raise ValueError(f"unknown reference config {name!r}; choose one of {_names()}")
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

"""Networks from configs, without hand-kept key lists: a backbone's constructor arguments are read
from its signature.

``get_model(config)`` looks ``config.model.name`` up in :data:`score_sde.models.MODELS` and calls
the class with every constructor argument that the config sets: each parameter ``p`` of
``cls.__init__`` is taken from ``config.model.p`` if present, else (for the data-shaped
parameters ``image_size``, ``num_channels``, ``centered``, ``event_shape``) from ``config.data``;
absent keys take the class defaults. Image backbones require ``config.data.image_size`` and
``config.data.num_channels``. The MLP's ``event_shape`` comes from ``model.event_shape`` or
``data.event_shape``, else ``data.dim`` (vectors), else ``(data.num_channels, data.image_size,
data.image_size)``. A backbone may instead define a classmethod ``from_config(config)``.

So adding a network is its module plus one line in ``MODELS`` (see docs/models.md).
"""
from __future__ import annotations

import inspect
from typing import Any, Dict

from ..models import MODELS

__all__ = ["get_model", "model_kwargs", "CHECKED_KEYS"]

#: reference-config keys that no backbone takes, checked to hold the only supported value
CHECKED_KEYS = {"normalization": ("groupnorm",), "attention_type": ("ddpm",), "conv_size": (3,)}
#: constructor parameters read from ``config.data`` when ``config.model`` does not set them
_DATA_PARAMS = ("image_size", "num_channels", "centered")
#: of those, the ones an image backbone cannot do without
_REQUIRED_DATA = ("image_size", "num_channels")

_MISSING = object()


def _get(section, key, default=None):
    if section is None:
        return default
    try:
        return section[key]
    except (KeyError, AttributeError, TypeError):
        return default


def _has(section, key) -> bool:
    return _get(section, key, _MISSING) is not _MISSING


def _plain(v):
    return tuple(v) if isinstance(v, list) else v


def _event_shape(model, data):
    for src in (model, data):
        if _has(src, "event_shape"):
            return _plain(src["event_shape"])
    if _has(data, "dim"):
        return int(data["dim"])
    if _has(data, "image_size"):
        return (int(_get(data, "num_channels", 1)), int(data["image_size"]), int(data["image_size"]))
    raise ValueError("the network needs the event shape: set config.data.dim (vectors), config.data.event_shape "
                     "or config.data.image_size and config.data.num_channels")


def _backbone(config):
    model = _get(config, "model")
    if model is None:
        raise ValueError("config.model is missing: get_model needs config.model.name and the model keys")
    name = str(_get(model, "name", "")).lower()
    if name not in MODELS:
        raise ValueError(f"config.model.name must be one of {sorted(MODELS)}, got {_get(model, 'name')!r}")
    return name, MODELS[name]


def model_kwargs(config) -> Dict[str, Any]:
    """The constructor keyword arguments ``get_model`` would use for ``config`` (name excluded)."""
    model, data = _get(config, "model"), _get(config, "data")
    name, cls = _backbone(config)
    for k, allowed in CHECKED_KEYS.items():
        if _has(model, k):
            v = model[k]
            if (v.lower() if isinstance(v, str) else v) not in allowed:
                raise ValueError(f"config.model.{k}={v!r} is not supported; use one of {allowed}")
    params = [p for p in inspect.signature(cls.__init__).parameters.values()
              if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    kw: Dict[str, Any] = {}
    for p in params:
        if p.name == "event_shape":
            kw["event_shape"] = _event_shape(model, data)
        elif _has(model, p.name):
            kw[p.name] = _plain(model[p.name])
        elif p.name in _DATA_PARAMS and _has(data, p.name):
            kw[p.name] = data[p.name]
        elif p.name in _REQUIRED_DATA:
            raise ValueError(f"config.data.{p.name} is required to build {name!r}")
    return kw


def get_model(config):
    """Build the backbone named by ``config.model.name`` (see the module docstring for the keys).

    Unknown names raise ValueError listing ``MODELS``. Use ``with torch.device("meta"):`` around
    the call to inspect a large model without allocating it.
    """
    _, cls = _backbone(config)
    if hasattr(cls, "from_config"):
        return cls.from_config(config)
    return cls(**model_kwargs(config))

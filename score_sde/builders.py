"""Deprecated: the config functions moved to :mod:`score_sde.config` (same names).

Kept so that ``from score_sde import builders; builders.build_sde(cfg)`` and config files
doing ``from score_sde.builders import default_config`` keep working; new code imports
:mod:`score_sde.config`. Nothing in the package imports this module.
"""
from .config import (CONFIG_DIR, SDES, apply_overrides, build_data, build_loss, build_model, build_net,  # noqa: F401
                     build_sde, config_keys, default_config, event_shape, find_config, list_configs, load_config,
                     load_run_config, parse_override_args, sampler_kwargs, train_kwargs)

__all__ = [
    "default_config", "load_config", "apply_overrides", "parse_override_args", "config_keys",
    "build_sde", "build_data", "build_net", "build_model", "build_loss", "train_kwargs", "sampler_kwargs",
    "event_shape", "CONFIG_DIR", "find_config", "list_configs", "load_run_config",
]

"""The config package: experiment configs and everything that turns them into objects.

* :mod:`.schema`: :func:`default_config` (every key, with its meaning), config files
  (:func:`load_config`, :func:`find_config`, :func:`list_configs`), overrides
  (:func:`apply_overrides`, :func:`parse_override_args`) and a run's saved config
  (:func:`load_run_config`, JSON configs read as data by :func:`config_from_json`, schema versions
  and migration: :data:`SCHEMA_VERSION`, :func:`migrate_config_dict`);
* :mod:`.networks`: :func:`get_model` builds a backbone of :data:`score_sde.models.MODELS` from
  its constructor's signature (no key lists);
* :mod:`.factories`: ``build_sde``, ``build_data``, ``build_net``, ``build_model``,
  ``build_loss``, ``train_kwargs``, ``sampler_kwargs``, ``solver_options``;
* :mod:`.recipes`: :data:`RECIPES`, :func:`apply_recipe` (the EDM and likelihood training recipes);
* :mod:`.paper`: the paper's configs (:func:`reference_config`, :func:`cifar10_config`).
"""
from .factories import (SCHEDULE_SDES, SDES, build_data, build_loss, build_model, build_net, build_sde, event_shape,
                        resolve_data_shape,
                        sampler_kwargs, sigma_data, solver_options, train_kwargs)
from .networks import get_model, model_kwargs
from .recipes import RECIPES, apply_recipe
from .paper import REFERENCE_CONFIGS, cifar10_config, default_model_config, reference_config, reference_names
from .schema import (CONFIG_DIR, SCHEMA_VERSION, apply_overrides, config_from_json, config_keys, default_config,
                     find_config, list_configs, load_config, load_run_config, migrate_config_dict, parse_override_args)

__all__ = [
    "default_config", "load_config", "apply_overrides", "parse_override_args", "config_keys", "CONFIG_DIR",
    "find_config", "list_configs", "load_run_config", "SCHEMA_VERSION", "migrate_config_dict", "config_from_json",
    "get_model", "model_kwargs", "RECIPES", "apply_recipe",
    "SDES", "SCHEDULE_SDES", "sigma_data", "build_sde", "build_data", "build_net", "build_model", "build_loss", "train_kwargs", "sampler_kwargs", "solver_options",
    "event_shape", "resolve_data_shape",
    "REFERENCE_CONFIGS", "reference_config", "default_model_config", "cifar10_config", "reference_names",
]

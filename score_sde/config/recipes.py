"""Training recipes: the keys that must change together, in one place (issue 13).

* ``"edm"`` (the default of the shipped toy, digits and folder configs and of the demo): EDM's
  preconditioned output (``model.output="edm"``, ``model.time_label="edm"``) with its loss weighting
  (unit weight on the preconditioned output) and log-normal noise levels ``log(sigma/alpha) ~
  N(p_mean, p_std^2)``; ``model.sigma_data = 0`` measures the data's std from the train split. The
  data prediction's error stays bounded at every t, so every solver (ODE or SDE, discrete or
  continuous) samples the same model well.
* ``"likelihood"``: a noise-predicting network trained with likelihood weighting and
  importance-sampled t (Song et al. 2021, "maximum likelihood training"): the variance-reduced bound
  on the negative log-likelihood; its data prediction is off by several units near t = T, which
  deterministic solvers carry to the end (see docs/training.md).

Use in a config file: ``apply_recipe(config, "edm")``; on the command line the same keys as
overrides, e.g. ``--config.model.output=eps --config.model.time_label=t
--config.training.weighting=likelihood --config.training.time_sampling=importance``.
"""
from __future__ import annotations

from typing import Dict

from ml_collections import ConfigDict

__all__ = ["RECIPES", "apply_recipe"]

#: recipe name -> {"section.key": value}
RECIPES: Dict[str, Dict[str, object]] = {
    "edm": {"model.output": "edm", "model.time_label": "edm", "model.sigma_data": 0.0,
            "training.weighting": "edm", "training.time_sampling": "lognormal",
            "training.p_mean": -0.8, "training.p_std": 1.6},
    "likelihood": {"model.output": "eps", "model.time_label": "t", "training.weighting": "likelihood",
                   "training.time_sampling": "importance"},
}


def apply_recipe(config: ConfigDict, name: str) -> ConfigDict:
    """Set the keys of recipe ``name`` (a key of :data:`RECIPES`) on ``config`` in place; returns it."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; recipes: {sorted(RECIPES)}")
    for key, value in RECIPES[name].items():
        section, k = key.split(".")
        config[section][k] = value
    return config

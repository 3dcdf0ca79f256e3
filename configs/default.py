"""The default config: every key a config may set, with its meaning (see score_sde.config).

Experiment files under configs/<sde>/ start from this and change what differs. Load one with
``score-sde train --config configs/vp/digits.py`` or ``score_sde.config.load_config(path)``.
"""
from score_sde.config import default_config


def get_config():
    return default_config()

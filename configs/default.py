"""The default config: every key a config may set, with its meaning (see score_sde.builders).

Experiment files under configs/<sde>/ start from this and change what differs. Load one with
``score-sde train --config configs/vp/digits.py`` or ``score_sde.builders.load_config(path)``.
"""
from score_sde.builders import default_config


def get_config():
    return default_config()

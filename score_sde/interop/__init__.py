"""Interop with other codebases' files: the paper's released checkpoints (yang-song/score_sde_pytorch).

:func:`load_reference_checkpoint` loads a released ``checkpoint_N.pth`` into our network (strict,
``weights_only``), :func:`reference_score_model` wraps it as the paper conditioned it, and
:func:`convert` writes it in this package's checkpoint format (``score-sde convert SRC DST
--config NAME`` on the command line, or ``python -m score_sde.interop``). See docs/models.md.
"""
from .reference import (ClampedSigma, convert, load_reference_checkpoint, parse_config_arg, reference_score_model,
                        strip_prefix)

__all__ = ["load_reference_checkpoint", "reference_score_model", "convert", "strip_prefix", "ClampedSigma",
           "parse_config_arg"]

"""Interop with the paper's code: load its released checkpoints (``checkpoint_N.pth`` of yang-song/score_sde_pytorch).

A released checkpoint is ``{"model": state_dict, "ema": {"decay", "num_updates",
"shadow_params": [...]}, "optimizer": ..., "step": ...}``. Its model keys carry DataParallel's
``module.`` prefix in front of names that are exactly ours (``sigmas``, ``all_modules.N....``); the
EMA holds ``shadow_params``, one tensor per *trainable* parameter in ``parameters()`` order (the
fixed Fourier features ``all_modules.0.W`` of NCSN++ are not in it). So conversion is: strip the
prefix, load strictly, and put the shadow tensors in place of the trainable parameters.

How the paper's networks are conditioned, in this package's terms
(``reference_score_model`` builds these):

* VP and sub-VP (DDPM++, DDPM; continuous training): the reference computes
  ``score = -net(x, 999 t) / std(t)``, i.e. the net predicts the noise:
  ``ScoreModel(net, sde, output="eps", time_label="t", label_scale=999)``. Data in [-1, 1].
* VE (NCSN++): the reference calls ``net(x, sigma_ref(t))`` with
  ``sigma_ref(t) = sigma_min (sigma_max/sigma_min)^t`` (our ``VESDE.noise_level``) and the net
  divides by its label itself (``scale_by_sigma``), so its output is the score of data noised
  with std = label. Our ``VESDE.sigma(t) = sqrt(sigma_ref(t)^2 - sigma_min^2)`` is the exact std
  of the noise actually present, so pass the label ``sigma(t)``, clamped below at ``sigma_min``
  (the smallest noise level the net was trained on): ``output="score"`` with that label. The
  VE nets were trained on data in [0, 1] (``config.data.centered=False``), so sample and score
  data in [0, 1] with them.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from torch import nn

from ..config import get_model, load_config, reference_config
from ..models import ScoreModel
from ..training.checkpoint import FORMAT, atomic_save
from ..training.lock import RunLock

__all__ = ["load_reference_checkpoint", "reference_score_model", "convert", "strip_prefix", "ClampedSigma",
           "parse_config_arg", "add_arguments", "main"]

PathLike = Union[str, os.PathLike]


def strip_prefix(state: Dict[str, torch.Tensor], prefixes=("module.", "_orig_mod.")) -> Dict[str, torch.Tensor]:
    """Remove DataParallel / DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes."""
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def _short(items, n=6):
    items = list(items)
    s = ", ".join(map(str, items[:n]))
    return s + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def _as_config(config):
    return reference_config(config) if isinstance(config, str) else config


def _mismatch(path, own: Dict[str, torch.Tensor], state: Dict[str, torch.Tensor]) -> Optional[str]:
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_short(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches ({len(shapes)}): {_short(shapes)}")
    if not parts:
        return None
    return (f"checkpoint {path} does not match the model built from the config: " + "; ".join(parts)
            + ". Pass the config the checkpoint was trained with (see reference_config names).")


def load_reference_checkpoint(path: PathLike, config, map_location="cpu") -> Tuple[nn.Module, Optional[Dict]]:
    """Load a checkpoint of the paper's code into our network.

    Args:
        path: the released ``checkpoint_N.pth`` (or a bare state dict saved with ``torch.save``).
        config: the experiment config it was trained with: an ml_collections config with the
            paper's ``model`` and ``data`` keys, or a name for ``reference_config`` (e.g.
            ``"vp_cifar10_ddpmpp_continuous"``, ``"ncsnpp_cifar10"``).
        map_location: passed to ``torch.load``.

    Returns:
        ``(net, ema_state)``: the network (built by ``get_model``) holding the raw trained weights,
        and a full state dict with the EMA weights (what the paper samples from; load it with
        ``net.load_state_dict(ema_state)``), or None when the file has no EMA.

    Raises:
        FileNotFoundError naming the file if it does not exist; ValueError naming the file if it
        cannot be read with ``weights_only=True`` (corrupt, truncated, pickled code), or if its
        keys, shapes or EMA length do not match the model (strict; the message lists them).
    """
    from ..safe_pickle import load_weights_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    obj = load_weights_file(path, "reference checkpoint of the paper's code",
                            "a checkpoint_N.pth of score_sde_pytorch (a dict with 'model', 'ema', 'step') or a "
                            "bare state dict", map_location=map_location)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        state, ema = obj["model"], obj.get("ema")
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, ema = obj, None
    else:
        got = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"checkpoint {path} is neither a reference checkpoint (a dict with 'model') nor a state "
                         f"dict; found {got}")
    state = strip_prefix(state)
    net = get_model(_as_config(config))
    own = net.state_dict()
    msg = _mismatch(path, own, state)
    if msg:
        raise ValueError(msg)
    net.load_state_dict(state, strict=True)

    ema_state = None
    if ema is not None:
        shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
        if shadow is None:
            raise ValueError(f"checkpoint {path}: 'ema' has no 'shadow_params' list (keys {sorted(ema)[:8]})")
        trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
        if len(shadow) != len(trainable):
            raise ValueError(f"checkpoint {path}: the EMA holds {len(shadow)} tensors but the model has "
                             f"{len(trainable)} trainable parameters")
        bad = [f"{n}: {tuple(s.shape)} in the EMA, {tuple(p.shape)} in the model"
               for (n, p), s in zip(trainable, shadow) if tuple(s.shape) != tuple(p.shape)]
        if bad:
            raise ValueError(f"checkpoint {path}: EMA shape mismatches ({len(bad)}): {_short(bad)}")
        ema_state = {k: v.clone() for k, v in own.items()}
        for (n, p), s in zip(trainable, shadow):
            ema_state[n] = s.detach().to(dtype=p.dtype, device=p.device).clone()
    return net, ema_state


class ClampedSigma:
    """Time label ``max(sde.sigma(t), sigma_floor)`` (a picklable callable for ``ScoreModel``)."""

    def __init__(self, sde, sigma_floor: float):
        self.sde, self.sigma_floor = sde, float(sigma_floor)

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return self.sde.sigma(t).clamp_min(self.sigma_floor)


def reference_score_model(net: nn.Module, sde, config) -> ScoreModel:
    """Wrap a network of the paper into a ``score_fn(x, t)`` conditioned as the paper trained it.

    ``config`` (a config or a ``reference_config`` name) tells which: a net with a Fourier
    (noise-level) embedding is a VE net (``output="score"``, label ``max(sigma(t), sigma_min)``);
    otherwise a VP / sub-VP net (``output="eps"``, label ``999 t``).
    """
    cfg = _as_config(config)
    m = cfg.model
    emb = str(m.get("embedding_type", "positional")).lower() if str(m.name).lower() == "ncsnpp" else "positional"
    if emb == "fourier":
        if not m.get("scale_by_sigma", False):
            raise ValueError("a Fourier-embedding net without scale_by_sigma is not one of the paper's VE nets; "
                             "wrap it with ScoreModel yourself")
        return ScoreModel(net, sde, output="score", time_label=ClampedSigma(sde, m.get("sigma_min", 0.01)))
    num_scales = int(m.get("num_scales", 1000))
    return ScoreModel(net, sde, output="eps", time_label="t", label_scale=float(num_scales - 1))


def convert(src: PathLike, dst: PathLike, config, step: Optional[int] = None) -> Path:
    """Convert a reference checkpoint ``src`` into this package's training-checkpoint format at ``dst``.

    When ``dst`` lies in a run directory (``WORKDIR/checkpoints/``), that directory's lock is held
    while writing (:func:`run_directory_lock`). The output (written atomically) holds ``model`` (raw weights), ``ema`` (the EMA weights as a
    full state dict, decay = ``config.model.ema_rate``) and ``config`` (``config.to_dict()``), and
    loads with ``score_sde.training.checkpoint.load_model``. Command line: ``score-sde convert SRC DST
    --config NAME_OR_FILE`` (or ``python -m score_sde.interop``).
    """
    cfg = _as_config(config)
    net, ema_state = load_reference_checkpoint(src, cfg)
    raw = torch.load(src, map_location="cpu", weights_only=True)
    if step is None:
        s = raw.get("step", 0) if isinstance(raw, dict) else 0
        step = int(s.item()) if isinstance(s, torch.Tensor) else int(s)
    ema = raw.get("ema") if isinstance(raw, dict) else None
    obj = {
        "format": FORMAT,
        "step": int(step),
        "model": net.state_dict(),
        "ema": None if ema_state is None else {
            "module": ema_state, "decay": float(cfg.model.get("ema_rate", ema.get("decay", 0.9999))),
            "warmup": False, "num_updates": int(ema.get("num_updates") or 0)},
        "optimizer": None,
        "scaler": None,
        "rng": {"torch": torch.get_rng_state(), "cuda": []},
        "meta": {"converted_from": str(src)},
        "config": cfg.to_dict() if hasattr(cfg, "to_dict") else cfg,
    }
    obj["config"] = json.loads(json.dumps(obj["config"]))
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with run_directory_lock(dst):
        atomic_save(obj, dst)
    return dst


def run_directory_lock(dst: PathLike):
    """The lock of the run directory ``dst`` is written into (``WORKDIR/checkpoints/NAME.pt``:
    :class:`score_sde.training.RunLock` of WORKDIR, RunLockedError while a trainer runs there);
    a no-op context for a file anywhere else."""
    dst = Path(dst)
    if dst.parent.name == "checkpoints":
        return RunLock(dst.parent.parent, purpose="convert")
    return contextlib.nullcontext()


def parse_config_arg(config: str):
    """A ``--config`` value: a config file (``.py``, ``.json`` or a path) is loaded, anything else is a
    :func:`score_sde.config.reference_config` name."""
    if config.endswith((".py", ".json")) or os.path.sep in config:
        return load_config(config)
    return config


def add_arguments(p):
    """The arguments of ``score-sde convert`` (also ``python -m score_sde.interop``)."""
    p.add_argument("src", help="the released checkpoint_N.pth")
    p.add_argument("dst", help="where to write the converted checkpoint")
    p.add_argument("--config", required=True,
                   help="a reference config name (e.g. vp_cifar10_ddpmpp_continuous, ncsnpp_cifar10) or a config "
                        "file defining get_config()")
    return p


def main(argv=None) -> Path:
    """Command line: ``python -m score_sde.interop SRC DST --config NAME_OR_FILE``."""
    import argparse

    p = add_arguments(argparse.ArgumentParser(
        prog="python -m score_sde.interop",
        description="Convert a checkpoint of the paper's code (yang-song/score_sde_pytorch) into this package's "
                    "checkpoint format."))
    args = p.parse_args(argv)
    out = convert(args.src, args.dst, parse_config_arg(args.config))
    print(f"wrote {out}")
    return out

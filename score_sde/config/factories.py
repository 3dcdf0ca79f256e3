"""Config -> objects: the SDE, data set, network, score model, loss and the keyword arguments of
training and sampling. The one place where a config becomes objects; library code takes
explicit arguments.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

from pathlib import Path

import numpy as np
import torch
from ml_collections import ConfigDict

from .. import data as data_lib
from .. import schedules
from ..losses import DSMLoss, ddpm_loss, smld_loss
from ..models import ScoreModel
from ..sde import SDE, VESDE, VPSDE, subVPSDE
from .networks import get_model

__all__ = ["SDES", "SCHEDULE_SDES", "build_sde", "build_data", "build_net", "build_model", "build_loss", "sigma_data", "train_kwargs",
           "sampler_kwargs", "solver_options", "event_shape"]

SDES = {"vpsde": VPSDE, "subvpsde": subVPSDE, "vesde": VESDE}


def _load_betas(spec: str, N: int) -> torch.Tensor:
    """``config.sde.betas``: 'ddpm_linear' | 'iddpm_cosine' (N steps) or a .pt / .npy / text file of betas."""
    if spec == "ddpm_linear":
        return schedules.ddpm_linear_betas(N)
    if spec == "iddpm_cosine":
        return schedules.iddpm_cosine_betas(N)
    p = Path(spec).expanduser()
    if not p.is_file():
        raise ValueError(f"config.sde.betas must be 'ddpm_linear', 'iddpm_cosine' or a file of betas "
                         f"(.pt, .npy or text), got {spec!r}")
    if p.suffix == ".pt":
        return torch.load(p, weights_only=True)
    return torch.as_tensor(np.load(p, allow_pickle=False) if p.suffix == ".npy" else np.loadtxt(p)).reshape(-1)


def _schedule_T(s, default: float) -> float:
    return float(s.T) if s.get("T", 0.0) else default


#: the schedules of :mod:`score_sde.schedules` by ``config.sde.name``: name -> builder from ``config.sde``
SCHEDULE_SDES = {
    "cosine": lambda s: schedules.CosineVPSDE(s=s.cosine_s, T=_schedule_T(s, 0.9946), N=s.N),
    "edm": lambda s: schedules.EDMSDE(sigma_min=s.edm_sigma_min, sigma_max=s.edm_sigma_max, N=s.N),
    "rectified_flow": lambda s: schedules.LinearInterpolantSDE(T=_schedule_T(s, 0.99), N=s.N),
    "discrete": lambda s: schedules.DiscreteVPSDE(_load_betas(s.betas, s.N), T=_schedule_T(s, 1.0)),
}


def build_sde(cfg: ConfigDict) -> SDE:
    """The forward SDE of ``cfg.sde``."""
    s = cfg.sde
    name = s.name.lower()
    if name in SCHEDULE_SDES:
        return SCHEDULE_SDES[name](s)
    if name not in SDES:
        raise ValueError(f"config.sde.name must be one of {sorted(SDES) + sorted(SCHEDULE_SDES)}, got {s.name!r}")
    if name == "vesde":
        return VESDE(sigma_min=s.sigma_min, sigma_max=s.sigma_max, N=s.N)
    return SDES[name](beta_min=s.beta_min, beta_max=s.beta_max, N=s.N)


def resolve_data_shape(cfg: ConfigDict) -> ConfigDict:
    """Fill ``cfg.data.image_size`` / ``num_channels`` in place when they are <= 0 ("read from the
    data"): an image folder's are read from its images (:func:`score_sde.data.image_folder_shape`).
    A no-op for set values and for data sets of a fixed shape. Returns ``cfg``."""
    d = cfg.data
    if d.dataset == "folder" and (int(d.image_size) <= 0 or int(d.num_channels) <= 0) and d.root:
        channels, size = data_lib.image_folder_shape(d.root)
        if int(d.num_channels) <= 0:
            d.num_channels = channels
        if int(d.image_size) <= 0:
            d.image_size = size
    return cfg


def build_data(cfg: ConfigDict) -> data_lib.Dataset:
    """The :class:`score_sde.data.Dataset` of ``cfg.data`` (files are read on first use; an image
    folder's size and channels, when <= 0, are read from its images first: :func:`resolve_data_shape`)."""
    d = resolve_data_shape(cfg).data
    ds = data_lib.make_dataset(d.dataset, root=d.root or None, image_size=d.image_size, channels=d.num_channels,
                               centered=d.centered, dequantize=d.uniform_dequantization, flip=d.random_flip)
    if ds.kind == "image" and (ds.event_shape[0] != d.num_channels or ds.event_shape[-1] != d.image_size):
        raise ValueError(f"config.data says {d.num_channels} channels of {d.image_size}x{d.image_size} but "
                         f"{d.dataset!r} has shape {ds.event_shape}; fix config.data.num_channels / image_size")
    return ds


def event_shape(cfg: ConfigDict) -> Tuple[int, ...]:
    """Shape of one model input for ``cfg.data``."""
    if cfg.data.dataset in data_lib.TOY_DATASETS:
        return (2,)
    resolve_data_shape(cfg)
    return (cfg.data.num_channels, cfg.data.image_size, cfg.data.image_size)


def build_net(cfg: ConfigDict, device=None, seed: Optional[int] = None) -> torch.nn.Module:
    """The backbone ``net(x, labels)`` named by ``cfg.model.name`` (:func:`score_sde.config.get_model`).

    The initial weights are drawn from ``torch.manual_seed(seed)`` (``seed=None``: ``cfg.seed``)
    inside ``torch.random.fork_rng``, so the same config gives the same network and the global
    random state is left as it was."""
    seed = cfg.get("seed", 0) if seed is None else seed
    cfg = ConfigDict(cfg.to_dict())          # a copy that also carries the event shape
    cfg.data.event_shape = event_shape(cfg)
    with torch.random.fork_rng(devices=[]):   # the net is built on the CPU
        torch.manual_seed(int(seed))
        net = get_model(cfg)
    return net.to(device) if device is not None else net


def build_model(cfg: ConfigDict, sde: Optional[SDE] = None, device=None, seed: Optional[int] = None):
    """``ScoreModel(net, sde, output, time_label, label_scale)``: a plain ``score_fn(x, t)``.

    ``seed`` seeds the network's initialisation (``None``: ``cfg.seed``); see :func:`build_net`."""
    sde = build_sde(cfg) if sde is None else sde
    m = cfg.model
    return ScoreModel(build_net(cfg, device, seed=seed), sde, output=m.output, time_label=m.time_label,
                      label_scale=m.label_scale, sigma_data=sigma_data(cfg))


def sigma_data(cfg: ConfigDict) -> float:
    """``config.model.sigma_data``, or when it is <= 0 the pixel std of the (undequantised,
    preprocessed) train split, rounded to 3 digits (toy data: of 10000 fresh points)."""
    v = float(cfg.model.get("sigma_data", 0.5))
    if v > 0:
        return v
    ds = build_data(cfg)
    if ds.kind == "points":
        x = ds.sample(10000, generator=torch.Generator().manual_seed(0))
    else:
        x = ds.preprocess(ds.raw("train").float(), train=False, dequantize=False)
    return round(float(x.double().std()), 3)


def build_loss(cfg: ConfigDict, sde: Optional[SDE] = None) -> DSMLoss:
    """The training loss of ``cfg.training`` (per-sample; average at the call site)."""
    sde = build_sde(cfg) if sde is None else sde
    t = cfg.training
    reduce = "mean" if t.reduce_mean else "sum"
    if t.loss == "ddpm":
        return ddpm_loss(sde, reduce=reduce)
    if t.loss == "smld":
        return smld_loss(sde, reduce=reduce)
    if t.loss != "dsm":
        raise ValueError(f"config.training.loss must be 'dsm', 'ddpm' or 'smld', got {t.loss!r}")
    return DSMLoss(sde, weighting=t.weighting, time_sampling=t.time_sampling, eps=t.eps, reduce=reduce,
                   sigma_data=sigma_data(cfg) if t.weighting == "edm" else 0.5,
                   p_mean=t.get("p_mean", -1.2), p_std=t.get("p_std", 1.2))


def train_kwargs(cfg: ConfigDict) -> Dict:
    """Keyword arguments of :func:`score_sde.training.train` from ``cfg.training`` / ``cfg.optim``.

    (Model, loss, data, workdir and the data transform are passed separately; see
    :func:`score_sde.experiment.train_run`.)
    """
    o, t = cfg.optim, cfg.training
    if not o.lr > 0:
        raise ValueError(f"config.optim.lr must be positive, got {o.lr}")
    if not 0.0 <= cfg.model.ema_rate < 1.0:
        raise ValueError(f"config.model.ema_rate must lie in [0, 1), got {cfg.model.ema_rate}")
    if t.mixed_precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"config.training.mixed_precision must be 'no', 'bf16' or 'fp16', got {t.mixed_precision!r}")
    return {
        "n_steps": int(t.n_iters), "batch_size": int(t.batch_size), "lr": float(o.lr), "warmup": int(o.warmup),
        "lr_decay": str(o.get("decay", "none")), "lr_final": float(o.get("decay_final", 0.1)),
        "grad_clip": float(o.grad_clip) if o.grad_clip > 0 else None, "ema_rate": float(cfg.model.ema_rate),
        "weight_decay": float(o.weight_decay), "betas": (float(o.beta1), float(o.beta2)), "adam_eps": float(o.eps),
        "log_every": int(t.log_freq), "checkpoint_every": int(t.snapshot_freq),
        "snapshot_every": int(t.snapshot_freq) if t.snapshot_sampling else None,
        "seed": int(cfg.seed), "amp": None if t.mixed_precision == "no" else t.mixed_precision,
        "label_dropout": float(t.get("label_dropout", 0.0)),
    }


def sampler_kwargs(cfg: ConfigDict, method: Optional[str] = None, steps: Optional[int] = None) -> Dict:
    """``method``, ``steps`` and ``eps`` for ``score_sde.sampling.sample`` from ``cfg.sampling``."""
    s = cfg.sampling
    if s.eps is not None and not math.isfinite(float(s.eps)):
        raise ValueError(f"config.sampling.eps must be a finite end time (<= 0: the SDE's default), got {s.eps!r}")
    out = {"method": method or s.method, "steps": int(steps if steps is not None else s.steps)}
    if s.eps and s.eps > 0:
        out["eps"] = float(s.eps)
    return out


def solver_options(cfg: ConfigDict, method: str, options: Optional[Dict] = None) -> Dict:
    """``options`` for ``sample(..., method=method)`` plus what ``cfg.sampling`` sets for that solver.

    ``config.sampling.snr > 0`` is the Langevin corrector's snr of every solver that takes an ``snr``
    option (the ``pc`` family) unless ``options`` gives one or a preset fixes it; other solvers
    ignore it. The snr is dimension and model dependent (see ``score_sde.sampling.predictor_corrector``):
    the demo's config sets the value measured for its digits model."""
    from ..sampling import SOLVERS

    out = dict(options or {})
    snr = float(cfg.sampling.get("snr", 0.0) or 0.0)
    cls = SOLVERS.get(method)
    if snr > 0 and cls is not None and "snr" in cls.options and "snr" not in getattr(cls, "fixed", {}):
        out.setdefault("snr", snr)
    return out

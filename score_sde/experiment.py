"""The application layer: operations on a run directory.

A run directory (``WORKDIR``) holds ``config.json``, ``log.jsonl``, ``checkpoints/`` and the
outputs below. The command line (:mod:`score_sde.cli`) and the demo (:mod:`score_sde.demo`) are
thin layers over these functions; call them from Python the same way::

    from score_sde import experiment as ex
    from score_sde.config import load_config

    cfg = load_config("vp/digits", ["training.n_iters=2000"])
    ex.run_train(cfg, "runs/digits")                        # train (resumes)
    run = ex.load_trained("runs/digits")                    # the checkpoint is read once
    x, nfe = run.draw(64, method="dpmpp_2m", steps=50, seed=0)
    ex.run_likelihood(run.cfg, "runs/digits", run=run)      # bits/dim, reusing the loaded model

Operations: :func:`pick_device`, :func:`load_trained` (-> :class:`TrainedRun`),
:func:`draw_samples` (batched, per-batch seeds), :func:`run_train`, :func:`run_sample`,
:func:`run_likelihood`, :func:`run_evaluate`, :func:`evaluate_model_samples`,
:func:`save_samples`, :func:`convert_checkpoint`. What differs between data sets (extra metrics, the feature space of the
metrics, how samples are drawn on screen) is asked of the data set
(:class:`score_sde.data.Dataset`).
"""
from __future__ import annotations

import math
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from ml_collections import ConfigDict

from . import config as config_lib
from .data import Dataset
from .evaluation import evaluate_samples
from .interop import convert, parse_config_arg
from .io import save_npz, save_visual
from .likelihood import log_likelihood
from .sampling import SOLVERS, sample
from .sde import SDE
from .training import (CheckpointError, ConfigMismatchError, RunLockedError, check_state_dict,
                       latest_checkpoint, load_checkpoint, train, unwrap_model)
from .training import check_config_compatible as _check_config_compatible

__all__ = ["USER_ERRORS", "pick_device", "TrainedRun", "load_trained", "draw_samples", "save_samples", "run_train", "run_sample",
           "run_likelihood", "run_evaluate", "evaluate_model_samples", "convert_checkpoint"]


#: Exceptions that mean bad input or a bad environment, not a bug: the command line prints them as
#: one line (``score-sde: error: ...``) and exits 1 (``--debug`` / ``SCORE_SDE_DEBUG=1``: the
#: traceback). ValueError covers CheckpointError, ConfigMismatchError and WeightsFileError; OSError
#: covers missing files and WorkdirWriteError (full or read-only disk); FloatingPointError covers
#: TrainingDivergedError and the samplers' NonFiniteError; RunLockedError: a busy run directory;
#: pickle.UnpicklingError: a data file refused by the restricted unpickler. Any other exception
#: type is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, FloatingPointError, RunLockedError, pickle.UnpicklingError,
               torch.OutOfMemoryError)


def pick_device(name=None) -> torch.device:
    """``torch.device(name)``, or cuda when available else cpu when ``name`` is None.

    Raises ValueError for a name torch does not know and for a device this machine lacks
    (``cuda`` on a CPU-only build or without a GPU, ``cuda:3`` with two GPUs, ``mps`` off macOS)."""
    if name is None or name == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(name, torch.device):
        dev = name
    else:
        try:
            dev = torch.device(str(name))
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"unknown device {name!r}: use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device {str(dev)!r} requested but {why}; use --device cpu (or omit --device)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(dev)!r} requested but only {torch.cuda.device_count()} CUDA device(s) "
                             f"exist (cuda:0 ... cuda:{torch.cuda.device_count() - 1})")
        return dev
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {str(dev)!r} requested but MPS is not available here; use --device cpu")
        return dev
    backend = getattr(torch, dev.type, None)
    if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
        raise ValueError(f"device {str(dev)!r} is not available here; use cpu or cuda")
    return dev


def _solver_takes_steps(sde: SDE, method: str, options: Dict) -> bool:
    """Whether ``method`` (with ``options``) integrates on a fixed grid (takes ``steps``); adaptive
    solvers (``ode`` with an adaptive ``ode_method``, ``sdeint`` with ``adaptive=True``) do not.
    Unknown methods or options answer True and are left for :func:`score_sde.sampling.sample` to refuse."""
    if method not in SOLVERS:
        return True
    try:
        return SOLVERS[method](sde, **options).default_steps is not None
    except (TypeError, ValueError):
        return True


def _check_count(name: str, value, minimum: int = 1):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def draw_samples(sde: SDE, model, event_shape: Sequence[int], n: int, method: str, steps: int, seed: int, device,
                 batch_size: int, eps: Optional[float] = None, **options) -> Tuple[torch.Tensor, int]:
    """``n`` samples ``(n, *event_shape)`` (float32) in batches of ``batch_size``, and the NFE of one
    batch. Batch ``i`` uses a generator seeded with ``seed * 1_000_003 + i`` on ``device``."""
    n = _check_count("n (the number of samples)", n)
    batch_size = _check_count("config.sampling.batch_size", batch_size)
    out, nfe = [], 0
    kw = {} if eps is None else {"eps": eps}
    for i, start in enumerate(range(0, n, batch_size)):
        b = min(batch_size, n - start)
        g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + i)
        with torch.no_grad():
            res = sample(sde, model, (b, *event_shape), method=method, steps=steps, generator=g, device=device,
                         **kw, **options)
        out.append(res.samples.float())
        nfe = res.nfe
    return torch.cat(out), nfe


@dataclass
class TrainedRun:
    """A trained run loaded once: its config, SDE, data set, EMA score model (eval mode, no grads,
    on ``device``), the checkpoint it came from and that checkpoint's step."""

    cfg: ConfigDict
    workdir: Path
    sde: SDE
    model: torch.nn.Module
    data: Dataset
    checkpoint: Path
    step: int
    device: torch.device

    def sampler(self, method: Optional[str] = None, steps: Optional[int] = None, **options) -> Dict:
        """``method``, ``steps`` and maybe ``eps`` for a draw: what is None comes from
        ``config.sampling``; ``steps`` stays None for an adaptive solver unless given (the
        config's steps apply to fixed-step solvers only)."""
        steps = _check_count("steps", steps)
        kw = config_lib.sampler_kwargs(self.cfg, method, steps)
        if steps is None and not _solver_takes_steps(self.sde, kw["method"], options):
            kw["steps"] = None
        return kw

    def draw(self, n: int, method: Optional[str] = None, steps: Optional[int] = None, seed: int = 0,
             **options) -> Tuple[torch.Tensor, int]:
        """``(samples (n, *event_shape), nfe)`` with the config's sampler defaults for what is None."""
        n = _check_count("n (the number of samples)", n)
        kw = self.sampler(method, steps, **options)
        options = config_lib.solver_options(self.cfg, kw["method"], options)
        return draw_samples(self.sde, self.model, self.data.event_shape, n, kw["method"], kw["steps"], seed,
                            self.device, self.cfg.sampling.batch_size, eps=kw.get("eps"), **options)


def load_trained(workdir, cfg: Optional[ConfigDict] = None, device=None, checkpoint: Optional[str] = None,
                 allow_config_mismatch: bool = False) -> TrainedRun:
    """Load a run: ``cfg`` (default: ``WORKDIR/config.json``), the EMA weights of ``checkpoint``
    (default: the newest in ``WORKDIR/checkpoints``), read from disk once.

    The checkpoint's own stored config is checked against ``cfg``
    (:func:`score_sde.training.check_config_compatible`): another SDE (or SDE parameters),
    network, output parameterisation or data shape raises ConfigMismatchError naming the keys,
    unless ``allow_config_mismatch`` (then a warning). Sampling and evaluation settings may differ."""
    workdir = Path(workdir)
    cfg = config_lib.load_run_config(workdir) if cfg is None else cfg
    device = pick_device(device)
    path = Path(checkpoint) if checkpoint else latest_checkpoint(workdir / "checkpoints")
    if path is None:
        raise FileNotFoundError(f"no checkpoint under {workdir / 'checkpoints'}: train first with "
                                f"score-sde train --workdir {workdir}")
    sde = config_lib.build_sde(cfg)
    model = config_lib.build_model(cfg, sde)
    obj = load_checkpoint(path)
    saved = _comparable(obj.get("config"))
    check_config_compatible(saved, cfg.to_dict(), where=f"checkpoint {path}", allow_mismatch=allow_config_mismatch)
    if not obj.get("ema"):
        raise CheckpointError(f"checkpoint {path} has no EMA weights to sample from")
    state = obj["ema"]["module"]
    check_state_dict(state, model, where=f"checkpoint {path} (EMA)")
    unwrap_model(model).load_state_dict(state, strict=True)
    model.to(device).eval().requires_grad_(False)
    return TrainedRun(cfg, workdir, sde, model, config_lib.build_data(cfg), path, int(obj["step"]), device)


def save_samples(samples: torch.Tensor, ds: Dataset, out_stem, title: str = "") -> Dict[str, str]:
    """Write ``out_stem.npz`` (``samples``, and ``levels`` for quantised data) and ``out_stem.png``
    (drawn as the data set shows its samples) for model-space samples."""
    out_stem = Path(out_stem)
    arrays = {"samples": samples.detach().cpu().float().numpy()}
    if ds.levels is not None:
        arrays["levels"] = ds.levels_of(samples).numpy()
    png = save_visual(ds.visual(samples), out_stem.with_suffix(".png"), title=title)
    npz = save_npz(out_stem.with_suffix(".npz"), **arrays)
    return {"png": str(png), "npz": str(npz)}


def run_train(cfg: ConfigDict, workdir, device=None, progress: bool = True, allow_config_mismatch: bool = False):
    """Train the model of ``cfg`` in ``workdir`` (resuming); returns the TrainResult. With
    ``config.training.snapshot_sampling`` every checkpoint also writes a sample picture.

    Resuming under another SDE, network or data shape than the checkpoint's raises
    ConfigMismatchError unless ``allow_config_mismatch``; training settings may change (a warning)."""
    workdir = Path(workdir)
    if device is not None:
        device = pick_device(device)
    sde = config_lib.build_sde(cfg)
    ds = config_lib.build_data(cfg)
    model = config_lib.build_model(cfg, sde)
    loss_fn = config_lib.build_loss(cfg, sde)
    n_classes = int(cfg.model.get("num_classes", 0) or 0)
    if n_classes and n_classes != getattr(ds, "num_classes", 0):
        raise ValueError(f"config.model.num_classes={n_classes} but the data set {ds.name!r} has "
                         f"{getattr(ds, 'num_classes', 0)} classes; set --config.model.num_classes="
                         f"{getattr(ds, 'num_classes', 0)}")
    data, transform = ds.training_data(labels=bool(n_classes))
    s = cfg.sampling
    kw = config_lib.sampler_kwargs(cfg)

    def snapshot(ema_model, step, wd):
        was = ema_model.training
        ema_model.eval()
        dev = next(ema_model.parameters()).device
        x, _ = draw_samples(sde, ema_model, ds.event_shape, min(s.n, ds.snapshot_samples), kw["method"],
                            kw["steps"], seed=step, device=dev, batch_size=s.batch_size, eps=kw.get("eps"),
                            **config_lib.solver_options(cfg, kw["method"]))
        save_samples(x, ds, Path(wd) / "snapshots" / f"samples_{step:08d}", title=f"step {step}")
        ema_model.train(was)

    return train(model, loss_fn, data, workdir=workdir, transform=transform, config=cfg.to_dict(),
                 snapshot_fn=snapshot, device=device, progress=progress, allow_config_mismatch=allow_config_mismatch,
                 **config_lib.train_kwargs(cfg))


def _loaded(run, cfg, workdir, device, checkpoint, allow_config_mismatch=False) -> TrainedRun:
    return run if run is not None else load_trained(workdir, cfg, device, checkpoint, allow_config_mismatch)


def _steps_name(steps) -> str:
    return "adaptive" if steps is None else f"{steps}steps"


def run_sample(cfg: ConfigDict, workdir, method: Optional[str] = None, steps: Optional[int] = None,
               n: Optional[int] = None, seed: int = 0, device=None, out: Optional[str] = None,
               checkpoint: Optional[str] = None, run: Optional[TrainedRun] = None, allow_config_mismatch: bool = False,
               **options) -> Dict:
    """Sample ``n`` points/images with ``method``; writes npz + png and returns a summary dict
    (plus the data set's own sample metrics). ``run``: an already loaded run to reuse.

    ``n`` and ``steps`` must be positive when given (None: the config's); ``steps`` is passed to
    fixed-step solvers only (``method="ode"`` with its adaptive default chooses its own)."""
    n, steps = _check_count("n (the number of samples)", n), _check_count("steps", steps)
    run = _loaded(run, cfg, workdir, device, checkpoint, allow_config_mismatch)
    n = int(n if n is not None else cfg.sampling.n)
    kw = run.sampler(method, steps, **options)
    t0 = time.perf_counter()
    x, nfe = run.draw(n, kw["method"], kw["steps"], seed, **options)
    secs = time.perf_counter() - t0
    stem = Path(out) if out else Path(workdir) / "samples" / f"{kw['method']}_{_steps_name(kw['steps'])}_seed{seed}"
    what = "adaptive steps" if kw["steps"] is None else f"{kw['steps']} steps"
    files = save_samples(x, run.data, stem, title=f"{kw['method']}, {what}, NFE {nfe}")
    return {"method": kw["method"], "steps": kw["steps"], "nfe": nfe, "n": n, "seed": seed, "seconds": secs,
            "checkpoint": str(run.checkpoint), "step": run.step, **files, **run.data.sample_metrics(x)}


def run_likelihood(cfg: ConfigDict, workdir, split: Optional[str] = None, n: Optional[int] = None, seed: int = 0,
                   device=None, checkpoint: Optional[str] = None, run: Optional[TrainedRun] = None,
                   allow_config_mismatch: bool = False) -> Dict:
    """Negative log-likelihood through the probability-flow ODE.

    Images: bits/dim of the ``split`` (discrete data, uniform dequantisation). Toy data: NLL in
    nats of ``n`` fresh points (plus what the data set adds, e.g. the checkerboard's gap to its
    entropy log 8). The density is that of the data at t = eps (``sde.likelihood_eps``).
    """
    n = _check_count("n (the number of examples)", n)
    run = _loaded(run, cfg, workdir, device, checkpoint, allow_config_mismatch)
    ds, dev, e = run.data, run.device, cfg.eval
    _check_count("config.eval.batch_size", e.batch_size)
    g = torch.Generator(device=dev).manual_seed(seed)
    x, deq, what = ds.likelihood_data(split or e.split, n, seed, e.num_points)
    logps, nfes = [], []
    t0 = time.perf_counter()
    for start in range(0, x.shape[0], e.batch_size):
        xb = x[start:start + e.batch_size].to(dev)
        res = log_likelihood(run.sde, run.model, xb, rtol=e.rtol, atol=e.atol, generator=g, dequantization=deq,
                             divergence=e.divergence, n_probes=e.n_probes)
        logps.append(res.logp.detach().double().cpu())
        nfes.append(res.nfe)
    logp = torch.cat(logps)
    D = ds.dim
    out = {"split": what, "n": int(logp.numel()),
           "nll_nats": float(-logp.mean()), "nll_nats_stderr": float(logp.std() / math.sqrt(logp.numel())),
           "bits_per_dim": float(-logp.mean() / (D * math.log(2))),
           "bits_per_dim_stderr": float(logp.std() / math.sqrt(logp.numel()) / (D * math.log(2))),
           "nfe_mean": float(np.mean(nfes)), "rtol": e.rtol, "atol": e.atol, "t_eps": run.sde.likelihood_eps,
           "seconds": time.perf_counter() - t0, "checkpoint": str(run.checkpoint), "step": run.step}
    out.update(ds.likelihood_metrics(out["nll_nats"]))
    return out


def run_evaluate(cfg: ConfigDict, workdir, method: Optional[str] = None, steps: Optional[int] = None,
                 n: Optional[int] = None, seed: int = 0, device=None, checkpoint: Optional[str] = None,
                 run: Optional[TrainedRun] = None, allow_config_mismatch: bool = False) -> Dict:
    """Sample-quality metrics of the run's model against its data (see :func:`evaluate_model_samples`)."""
    n, steps = _check_count("n (the number of samples)", n), _check_count("steps", steps)
    run = _loaded(run, cfg, workdir, device, checkpoint, allow_config_mismatch)
    n = int(n if n is not None else cfg.eval.num_samples)
    kw = run.sampler(method, steps)
    t0 = time.perf_counter()
    x, nfe = run.draw(n, kw["method"], kw["steps"], seed)
    secs = time.perf_counter() - t0
    metrics = evaluate_model_samples(x, run.data, cfg, workdir, seed=seed, device=run.device)
    return {"method": kw["method"], "steps": kw["steps"], "nfe": nfe, "n": n, "sampling_seconds": secs,
            "checkpoint": str(run.checkpoint), "step": run.step, "metrics": metrics}


def evaluate_model_samples(x: torch.Tensor, ds: Dataset, cfg: ConfigDict, workdir, seed: int = 0,
                           device=None) -> Dict:
    """Metrics of model-space samples ``x`` against the data (:func:`score_sde.evaluation.evaluate_samples`).

    The data set picks the feature space and reference (:meth:`Dataset.evaluation_kwargs`):
    digits: the digits-classifier Frechet distance / KID / classifier score against the test
    split; other images: FID / IS / KID against the ``config.eval.split`` split (Inception
    weights needed; statistics cached in WORKDIR); toy data: raw Frechet distance and sliced
    Wasserstein against fresh points. Then the data set's own sample metrics (the checkerboard's
    fraction on the board).
    """
    kw = ds.evaluation_kwargs(x.shape[0], seed, workdir, split=cfg.eval.split)
    out = evaluate_samples(x, seed=seed, device=device, **kw)   # a space without a network ignores device
    out.update(ds.sample_metrics(x))
    return out


def check_config_compatible(saved, current, *, where: str, allow_mismatch: bool = False):
    """:func:`score_sde.training.check_config_compatible`, its refusal naming the override of this
    layer (``allow_config_mismatch=True``, ``--allow-config-mismatch`` on the command line)."""
    try:
        return _check_config_compatible(saved, current, where=where, allow_mismatch=allow_mismatch)
    except ConfigMismatchError as e:
        msg = str(e).replace("the explicit override (allow_mismatch=True)",
                             "allow_config_mismatch=True (--allow-config-mismatch on the command line)")
        raise ConfigMismatchError(msg, e.keys) from None


def _comparable(saved):
    """A checkpoint's stored config in the current layout, for :func:`check_config_compatible`;
    None (nothing to compare) when it holds none or is not a run config (a converted checkpoint
    made from a bare reference-config name stores only the reference model section)."""
    if not isinstance(saved, dict) or "sde" not in saved:
        return None
    try:
        return config_lib.migrate_config_dict(saved)
    except ValueError:
        return saved


def convert_checkpoint(src, dst, config, allow_config_mismatch: bool = False) -> Path:
    """Convert a released checkpoint of the paper's code into this package's format
    (:func:`score_sde.interop.convert`). ``config``: a ConfigDict, a config file (``.py`` or a
    path) or a :func:`score_sde.config.reference_config` name.

    When ``dst`` lies in a run directory's ``checkpoints/`` folder, that run directory is locked
    while writing (:class:`score_sde.training.RunLock`: RunLockedError while a trainer runs there),
    and a full config is checked against the run's ``config.json`` (ConfigMismatchError on another
    SDE, network or data shape unless ``allow_config_mismatch``)."""
    cfg = parse_config_arg(config) if isinstance(config, str) else config
    dst = Path(dst)
    run_cfg = dst.parent.parent / "config.json"
    if dst.parent.name == "checkpoints" and run_cfg.is_file() and isinstance(cfg, ConfigDict) and "sde" in cfg:
        check_config_compatible(config_lib.config_from_json(run_cfg).to_dict(), _comparable(cfg.to_dict()),
                                where=f"run directory {dst.parent.parent} (config.json)",
                                allow_mismatch=allow_config_mismatch)
    return convert(src, dst, cfg)      # holds the run directory's lock while writing

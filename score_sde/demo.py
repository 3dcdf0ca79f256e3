"""The demo (``score-sde demo``), the main job: train on the bundled digits, sample with two solvers, test
bits/dim, pictures and metrics, on a laptop CPU in a few minutes.

Steps (each output under ``WORKDIR``)::

    1. train a VP-SDE score model (MLP, likelihood weighting with importance-sampled t, EMA)
       on scikit-learn's 8x8 digits, train split: 6000 steps at lr 1e-3, then 3000 at 2.5e-4
                                                          -> checkpoints/, log.jsonl, config.json
    2. sample 100 digits with two reverse-SDE solvers: Euler-Maruyama (100 steps) and ancestral
       sampling (50 steps)                               -> samples/<solver>.png / .npz
       (a short likelihood-weighted run has a poor probability-flow ODE at large t: ODE solvers
       (dpmpp_2m, ddim, heun, adaptive "ode") give samples far outside [-1, 1] after 4000 steps,
       while the stochastic solvers correct the error; try ``score-sde sample --method dpmpp_2m``)
    3. test bits/dim through the probability-flow ODE (exact divergence, uniform dequantisation
       of the 17 grey levels)                            -> likelihood_test.json
    4. sample metrics (digits-classifier Frechet distance, KID, classifier score)
                                                          -> metrics.json (everything, with timings)

Run again with the same WORKDIR: training resumes (a finished run is not retrained).
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from ml_collections import ConfigDict

from . import experiment as ex
from .config import apply_overrides, build_data, default_config, load_config
from .io import write_json

__all__ = ["demo_config", "run_demo", "DEMO_SOLVERS", "DEMO_SCHEDULE"]

# on the application layer: it uses score_sde.experiment, score_sde.config and score_sde.io only

#: training stages of the demo: (train up to this step, learning rate) -- a step decay
DEMO_SCHEDULE = ((6000, 1e-3), (9000, 2.5e-4))

#: (method, steps) pairs sampled by the demo
DEMO_SOLVERS = (("euler_maruyama", 100), ("ancestral", 50))


def demo_config() -> ConfigDict:
    """The embedded demo config: VP SDE, digits, a 4-block MLP of width 256 (0.9M parameters)."""
    cfg = default_config()
    cfg.sde.name = "vpsde"
    cfg.data.dataset = "digits"
    cfg.data.image_size = 8
    cfg.data.num_channels = 1
    cfg.model.hidden = 256
    cfg.model.num_blocks = 4
    cfg.model.dropout = 0.1
    cfg.model.ema_rate = 0.999
    cfg.training.batch_size = 128
    cfg.training.n_iters = DEMO_SCHEDULE[-1][0]
    cfg.training.snapshot_freq = 3000
    cfg.training.log_freq = 200
    cfg.optim.lr = 1e-3
    cfg.optim.warmup = 200
    cfg.sampling.n = 100
    cfg.eval.batch_size = 360
    cfg.eval.divergence = "hutchinson"   # unbiased; exact costs 64 backward passes per ODE step
    cfg.eval.num_samples = 1000
    return cfg


def _log(msg: str):
    print(f"[score-sde demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_demo(workdir="runs/demo", config: Optional[str] = None, overrides: Sequence[str] = (), device=None,
             quick: bool = False, progress: bool = True, solvers=DEMO_SOLVERS, allow_config_mismatch: bool = False
             ) -> Dict:
    """Run the main job; returns ``{"summary": ..., "metrics": ...}`` (also written to metrics.json).

    Args:
        workdir: output directory (created; an existing run there is resumed).
        config: another config file instead of :func:`demo_config` (any data set).
        overrides: ``"training.n_iters=2000"``-style overrides.
        device: torch device (default cuda if available, else cpu).
        quick: a smoke run: 200 training steps, 60 test images, 400 metric samples.
            (``DEMO_SCHEDULE`` gives the training stages; an ``n_iters`` / ``lr`` override or
            ``config`` replaces it by one stage.)
        solvers: ``(method, steps)`` pairs to sample with.
        allow_config_mismatch: reuse a run in ``workdir`` trained under another SDE, network or
            data shape (default: ConfigMismatchError naming the keys).
    """
    t_start = time.perf_counter()
    workdir = Path(workdir)
    cfg = load_config(config) if config else demo_config()
    schedule = DEMO_SCHEDULE if not config else ((cfg.training.n_iters, cfg.optim.lr),)
    if quick:
        schedule = ((150, 1e-3), (200, 2.5e-4)) if not config else ((200, cfg.optim.lr),)
        cfg.training.snapshot_freq = 100
        cfg.training.log_freq = 50
        cfg.eval.num_samples = 400
    cfg = apply_overrides(cfg, overrides)
    if any(o.lstrip("-").replace("config.", "", 1).startswith(("training.n_iters", "optim.lr")) for o in overrides):
        schedule = ((cfg.training.n_iters, cfg.optim.lr),)
    dev = ex.pick_device(device)
    ds = build_data(cfg)
    _log(f"data: {ds.name} {ds.event_shape}; model: {cfg.model.name}; SDE: {cfg.sde.name}; "
         f"{schedule[-1][0]} training steps (stages {list(schedule)}) on {dev}; workdir {workdir}")

    # 1. train (resumes), in stages of decreasing learning rate
    t0 = time.perf_counter()
    for n_iters, lr in schedule:
        cfg.training.n_iters, cfg.optim.lr = int(n_iters), float(lr)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="resuming from .* with a different config")
            res = ex.run_train(cfg, workdir, device=dev, progress=progress,
                               allow_config_mismatch=allow_config_mismatch)
    train_s = time.perf_counter() - t0
    _log(f"trained to step {res.step} in {train_s:.0f} s -> {res.checkpoint}")
    if ds.levels is not None:   # stored data: show the test images beside the samples
        n_show = min(100, ds.raw("test").shape[0])
        ex.save_samples(ds.preprocess(ds.raw("test")[:n_show].float(), train=False, dequantize=False), ds,
                        workdir / "samples" / "data_test", title="test data")
    # the trained model, read once for the steps below
    run = ex.load_trained(workdir, cfg, dev, allow_config_mismatch=allow_config_mismatch)

    # 2. sample with two solvers (+ metrics of each)
    sampling = {}
    for method, steps in solvers:
        t0 = time.perf_counter()
        s = ex.run_sample(cfg, workdir, method=method, steps=steps, n=cfg.sampling.n, seed=0,
                          out=str(workdir / "samples" / method), run=run)
        n_eval = int(cfg.eval.num_samples)
        x, _ = run.draw(n_eval, method, steps, seed=1)
        s["metrics"] = ex.evaluate_model_samples(x, ds, cfg, workdir, seed=0, device=dev)
        s["metric_samples"] = n_eval
        s["seconds_total"] = time.perf_counter() - t0
        sampling[method] = s
        _log(f"{method} ({steps} steps, NFE {s['nfe']}): {s['png']}; metrics {_short(s['metrics'])}")

    # 3. test bits/dim (or NLL on fresh points for toy data)
    n_lik = 60 if quick else None
    lik = ex.run_likelihood(cfg, workdir, split="test", n=n_lik, seed=0, run=run)
    write_json(workdir / f"likelihood_{lik['split'].replace(' ', '_')}.json", lik)
    _log(f"test bits/dim {lik['bits_per_dim']:.4f} +- {lik['bits_per_dim_stderr']:.4f} "
         f"({lik['n']} examples, {lik['nfe_mean']:.0f} NFE, {lik['seconds']:.0f} s)")

    total = time.perf_counter() - t_start
    summary = {
        "workdir": str(workdir), "dataset": ds.name, "steps_trained": res.step, "train_seconds": train_s,
        "test_bits_per_dim": lik["bits_per_dim"], "test_bits_per_dim_stderr": lik["bits_per_dim_stderr"],
        "test_nll_nats": lik["nll_nats"],
        "samples": {m: s["png"] for m, s in sampling.items()},
        "nfe": {m: s["nfe"] for m, s in sampling.items()},
        "total_seconds": total, "metrics_file": str(workdir / "metrics.json"),
    }
    metrics = {"summary": summary, "config": cfg.to_dict(), "likelihood": lik, "sampling": sampling,
               "torch_threads": torch.get_num_threads()}
    write_json(workdir / "metrics.json", metrics)
    _log(f"done in {total:.0f} s: {workdir / 'metrics.json'}")
    return {"summary": summary, "metrics": metrics}


def _short(m: Dict) -> str:
    keys = [k for k in m if isinstance(m[k], float)][:3]
    return ", ".join(f"{k}={m[k]:.4g}" for k in keys)

"""The demo (``score-sde demo``), the main job: train on the bundled digits, compare discrete with
continuous sampling on the trained model, test bits/dim, on a laptop CPU in a few minutes.

Steps (each output under ``WORKDIR``)::

    1. train a VP-SDE score model (MLP with a per-pixel head, the EDM recipe: preconditioned
       output, EDM loss weighting, log-normal noise levels, sigma_data measured from the data;
       EMA) on scikit-learn's 8x8 digits, train split: 6000 steps at lr 1e-3
                                                          -> checkpoints/, log.jsonl, config.json
    2. compare solvers on the trained model (score_sde.compare, 1000 samples per row, the same
       prior noise): discrete DDPM ancestral sampling and Euler-Maruyama on the reverse SDE at
       20, 100 and 1000 NFE; DPM-Solver++(2M), DDIM and Heun on the probability-flow ODE at 10, 20
       and 50 NFE; the adaptive ODE solver with the NFE it uses. Digits FD (clipped and unclipped)
       beside its floor, out-of-range share, pixel std, seconds
                                     -> compare/compare.md, .json, compare_digits_fd.png, grid_*.png
    3. test bits/dim through the probability-flow ODE (Hutchinson divergence, uniform
       dequantisation of the 17 grey levels)             -> likelihood_test.json
    4. everything, with timings                          -> metrics.json

Run again with the same WORKDIR: training resumes (a finished run is not retrained). The full
comparison (more solvers and budgets): ``score-sde compare --workdir WORKDIR``.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from ml_collections import ConfigDict

from . import experiment as ex
from .compare import run_compare
from .config import apply_overrides, apply_recipe, build_data, default_config, load_config
from .io import write_json

__all__ = ["demo_config", "run_demo", "DEMO_SOLVERS", "DEMO_BUDGETS", "DEMO_SCHEDULE"]

# on the application layer: it uses score_sde.experiment, score_sde.config and score_sde.io only

#: training stages of the demo: (train up to this step, learning rate). One stage: a further 3000
#: steps at 2.5e-4 (the earlier demo's second stage) moved test bits/dim from 1.99 to 2.36 (train
#: 1.49 -> 1.27: it memorises the 1437 training digits) for no gain in the samples (docs/cli.md)
DEMO_SCHEDULE = ((6000, 1e-3),)

#: solvers the demo compares: discrete (ddpm) and continuous (euler_maruyama) reverse SDE, ODE solvers
DEMO_SOLVERS = ("ddpm", "euler_maruyama", "dpmpp_2m", "ddim", "heun", "ode")
#: NFE budgets per solver (the adaptive "ode" enters once with its own NFE)
DEMO_BUDGETS = {"ddpm": (20, 100, 1000), "euler_maruyama": (20, 100, 1000), "dpmpp_2m": (10, 20, 50),
                "ddim": (10, 20, 50), "heun": (10, 20, 50)}


def demo_config() -> ConfigDict:
    """The embedded demo config: VP SDE, digits, a 4-block MLP of width 256 with a per-pixel head
    of width 32 (``model.pixel_head``; 1.0M parameters), the EDM recipe
    (``score_sde.config.RECIPES["edm"]``).

    The head is what keeps every solver's samples in range: without it the MLP's denoiser at
    ``sigma/alpha`` 0.05-0.7 does not pull a pixel whose ink-or-background is already decided back
    into its grey level, and 1-2% of the pixels of every solver's samples (the stochastic ones at
    1000 steps too) end more than a grey level outside [-1, 1]; with it, under 0.2% (docs/cli.md)."""
    cfg = default_config()
    apply_recipe(cfg, "edm")
    cfg.sde.name = "vpsde"
    cfg.data.dataset = "digits"
    cfg.data.image_size = 8
    cfg.data.num_channels = 1
    cfg.model.hidden = 256
    cfg.model.num_blocks = 4
    cfg.model.pixel_head = 32
    cfg.model.dropout = 0.1
    cfg.model.ema_rate = 0.999
    cfg.training.batch_size = 128
    cfg.training.n_iters = DEMO_SCHEDULE[-1][0]
    cfg.training.snapshot_freq = 3000
    cfg.training.log_freq = 200
    cfg.optim.lr = 1e-3
    cfg.optim.warmup = 200
    cfg.sampling.n = 100
    # the pc family's Langevin snr for this model: at the paper's 0.16, pc at 1000 steps leaves 8.5% of
    # the pixels more than a grey level out of range (Digits FD 13.9); 0.04: 1.9%; 0.01: 0.04% (FD 3.3)
    cfg.sampling.snr = 0.01
    cfg.eval.batch_size = 360
    cfg.eval.divergence = "hutchinson"   # unbiased; exact costs 64 backward passes per ODE step
    cfg.eval.num_samples = 1000
    return cfg


def _log(msg: str):
    print(f"[score-sde demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_demo(workdir="runs/demo", config: Optional[str] = None, overrides: Sequence[str] = (), device=None,
             quick: bool = False, progress: bool = True, solvers: Sequence[str] = DEMO_SOLVERS,
             budgets: Optional[Dict[str, Sequence[int]]] = None, allow_config_mismatch: bool = False) -> Dict:
    """Run the main job; returns ``{"summary": ..., "metrics": ...}`` (also written to metrics.json).

    Args:
        workdir: output directory (created; an existing run there is resumed).
        config: another config file instead of :func:`demo_config` (any data set).
        overrides: ``"training.n_iters=2000"``-style overrides.
        device: torch device (default cuda if available, else cpu).
        quick: a smoke run: 200 training steps, 200 samples per comparison row at small budgets,
            60 test images. (``DEMO_SCHEDULE`` gives the training stages; an ``n_iters`` / ``lr``
            override or ``config`` replaces it by one stage.)
        solvers, budgets: what the comparison samples (default :data:`DEMO_SOLVERS`,
            :data:`DEMO_BUDGETS`; solvers not in ``budgets`` get 20 and 100 NFE).
        allow_config_mismatch: reuse a run in ``workdir`` trained under another SDE, network or
            data shape (default: ConfigMismatchError naming the keys).
    """
    t_start = time.perf_counter()
    workdir = Path(workdir)
    cfg = load_config(config) if config else demo_config()
    schedule = DEMO_SCHEDULE if not config else ((cfg.training.n_iters, cfg.optim.lr),)
    budgets = dict(DEMO_BUDGETS if budgets is None else budgets)
    n_compare = int(cfg.eval.num_samples)
    if quick:
        schedule = ((150, 1e-3), (200, 2.5e-4)) if not config else ((200, cfg.optim.lr),)
        cfg.training.snapshot_freq = 100
        cfg.training.log_freq = 50
        n_compare = 200
        budgets = {m: tuple(b for b in bs if b <= 100) for m, bs in budgets.items()}
    cfg = apply_overrides(cfg, overrides)
    if any(o.lstrip("-").replace("config.", "", 1).startswith(("training.n_iters", "optim.lr")) for o in overrides):
        schedule = ((cfg.training.n_iters, cfg.optim.lr),)
    dev = ex.pick_device(device)
    ds = build_data(cfg)
    _log(f"data: {ds.name} {ds.event_shape}; model: {cfg.model.name} ({cfg.model.output} output, "
         f"{cfg.training.weighting} weighting); SDE: {cfg.sde.name}; {schedule[-1][0]} training steps "
         f"(stages {list(schedule)}) on {dev}; workdir {workdir}")

    # 1. train (resumes), in stages of decreasing learning rate
    t0 = time.perf_counter()
    for n_iters, lr in schedule:
        cfg.training.n_iters, cfg.optim.lr = int(n_iters), float(lr)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore",
                                    message="resuming from .* with (a different config|changed training settings)")
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

    # 2. discrete against continuous sampling: one comparison on the same model and prior noise
    t0 = time.perf_counter()
    cmp = run_compare(cfg, workdir, solvers=solvers, budgets=(20, 100), budgets_for=budgets, n=n_compare, seed=0,
                      run=run, progress=progress)
    compare_s = time.perf_counter() - t0
    _log(f"compared {len(cmp['rows'])} (solver, budget) rows in {compare_s:.0f} s -> {cmp['files']['markdown']}"
         f"\n{cmp['markdown']}")

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
        "test_nll_nats": lik["nll_nats"], "compare_seconds": compare_s,
        "compare": {k: v for k, v in cmp["files"].items() if k in ("markdown", "json", "plot")},
        "metric": cmp["metric"], "metric_floor": cmp["floor"].get(cmp["metric"]) if cmp["metric"] else None,
        "samples": {k[len("grid_"):]: v for k, v in cmp["files"].items() if k.startswith("grid_")},
        "total_seconds": total, "metrics_file": str(workdir / "metrics.json"),
    }
    metrics = {"summary": summary, "config": cfg.to_dict(), "likelihood": lik, "compare": cmp,
               "torch_threads": torch.get_num_threads()}
    write_json(workdir / "metrics.json", metrics)
    _log(f"done in {total:.0f} s: {workdir / 'metrics.json'}")
    return {"summary": summary, "metrics": metrics}

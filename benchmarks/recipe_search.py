"""Which training recipe and backbone serve every solver on the digits (issue 13), by measurement.

Trains one digits model with the demo's config (``score_sde.demo.demo_config``) plus the given
overrides, in learning-rate stages, then measures on it:

* test bits/dim through the probability-flow ODE (``score_sde.experiment.run_likelihood``);
* for each solver (``--solvers``, method:steps): share of pixels more than one grey level (2/17)
  outside [-1, 1], pixel std (test digits: 0.71), Digits FD (on clipped/quantised samples, as the
  library computes it), NFE and seconds; ODE solvers at the SDE's default end time and at the t
  where sigma/alpha = 0.002 (``sde.t_from_log_snr``).

Usage (one run per process; results to WORKDIR/recipe.json)::

    OMP_NUM_THREADS=2 python benchmarks/recipe_search.py --workdir runs/r_edm \\
        --set model.output=edm --set model.time_label=edm --set model.sigma_data=0.71 \\
        --set training.weighting=edm --set training.time_sampling=lognormal
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from score_sde import config as config_lib
from score_sde import experiment as ex
from score_sde.evaluation import evaluate_samples, level_range
from score_sde.demo import DEMO_SCHEDULE, demo_config

ODE = ("dpmpp_2m", "heun", "ddim", "ode", "euler", "dpmpp_3m")
#: a DDPM++-style NCSNpp scaled down to 8x8 images (0.7M parameters, no attention)
SMALL_UNET = dict(name="ncsnpp", nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resamp_with_conv=True,
                  conditional=True, fir=False, skip_rescale=True, resblock_type="biggan", progressive="none",
                  progressive_input="none", progressive_combine="sum", init_scale=0.0, scale_by_sigma=False,
                  embedding_type="positional")
DEFAULT_SOLVERS = ("dpmpp_2m:19", "heun:10", "ddim:49", "ode:0", "euler_maruyama:999", "ddpm:1000")


def sample_stats(x: torch.Tensor) -> dict:
    level = 2.0 / 17.0
    return {"out_of_range": float((x.abs() > 1.0 + level).float().mean()), "pixel_std": float(x.std())}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--set", action="append", default=[], help="config override a.b=v (repeatable)")
    p.add_argument("--schedule", default=",".join(f"{n}:{lr}" for n, lr in DEMO_SCHEDULE),
                   help="training stages 'steps:lr,...' (default the demo's)")
    p.add_argument("--solvers", default=",".join(DEFAULT_SOLVERS), help="method:steps,... (steps 0: adaptive)")
    p.add_argument("--n", type=int, default=1000, help="samples per solver")
    p.add_argument("--lik-n", type=int, default=0, help="test images for bits/dim (0: all)")
    p.add_argument("--unet", action="store_true", help="the small NCSNpp (SMALL_UNET) instead of the MLP")
    p.add_argument("--no-eps002", action="store_true", help="skip the sigma/alpha=0.002 end time")
    a = p.parse_args()
    wd = Path(a.workdir)
    cfg = demo_config()
    if a.unet:
        cfg.model.update(SMALL_UNET)
    cfg = config_lib.apply_overrides(cfg, a.set)
    dev = torch.device("cpu")
    ds = config_lib.build_data(cfg)
    out = {"overrides": a.set, "unet": a.unet, "schedule": a.schedule, "threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    for stage in a.schedule.split(","):
        n, lr = stage.split(":")
        cfg.training.n_iters, cfg.optim.lr = int(n), float(lr)
        res = ex.run_train(cfg, wd, device=dev, progress=False)
    out["train_seconds"] = time.perf_counter() - t0
    out["steps"] = res.step
    n_params = sum(p.numel() for p in config_lib.build_net(cfg).parameters())
    out["params"] = n_params
    print(json.dumps({k: out[k] for k in ("train_seconds", "steps", "params")}), flush=True)

    run = ex.load_trained(wd, cfg, dev)
    sde, model = run.sde, run.model
    eps002 = float(sde.t_from_log_snr(torch.tensor(-2.0 * math.log(0.002), dtype=torch.float64)))
    out["eps_sigma_over_alpha_0.002"] = eps002
    rng = level_range(ds.levels, ds.centered)
    cache = str(wd / "digits_classifier.pt")
    rows = []
    for item in a.solvers.split(","):
        method, steps = item.split(":")
        steps = int(steps) or None
        ends = [None] + ([eps002] if method in ODE and not a.no_eps002 else [])
        for eps in ends:
            t1 = time.perf_counter()
            x, nfe = ex.draw_samples(sde, model, ds.event_shape, a.n, method, steps, seed=1, device=dev, batch_size=500,
                                      eps=eps)
            secs = time.perf_counter() - t1
            fd = evaluate_samples(x, features="digits", data_range=rng, seed=0, device=dev, digits_classifier=cache,
                                  metrics=("fd",))
            row = {"method": method, "steps": steps, "nfe": nfe, "eps": eps if eps else "default", "seconds": secs,
                   **sample_stats(x), "fd": fd.get("digits_fd")}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out["solvers"] = rows
    lik = ex.run_likelihood(cfg, wd, split="test", n=a.lik_n or None, seed=0, run=run)
    out["bits_per_dim"], out["bits_per_dim_stderr"] = lik["bits_per_dim"], lik["bits_per_dim_stderr"]
    out["lik_seconds"], out["lik_nfe"] = lik["seconds"], lik["nfe_mean"]
    print(json.dumps({k: out[k] for k in ("bits_per_dim", "bits_per_dim_stderr", "lik_seconds")}), flush=True)
    (wd / "recipe.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

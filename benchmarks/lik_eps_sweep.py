"""Test bits/dim of a trained run through the probability-flow ODE at several start times eps.

Any density of the dequantised data gives a lower bound on the discrete log-likelihood, so the
model's marginal at a larger t = eps is as valid as the one at 1e-5; on 8-bit data the network is
least accurate at the smallest noise levels, and a larger eps trades that error against smoothing.

    OMP_NUM_THREADS=1 python benchmarks/lik_eps_sweep.py --workdir W --eps 1e-5,1e-4,1e-3 [--n 1000]
"""
from __future__ import annotations

import argparse
import json

import torch

from score_sde import experiment as ex
from score_sde.config import load_run_config
from score_sde.experiment import load_trained


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--eps", default="1e-5,1e-4,1e-3")
    p.add_argument("--n", type=int, default=0, help="test examples (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rtol", type=float, default=None)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--set", action="append", default=[])
    a = p.parse_args(argv)
    over = list(a.set) + ([f"eval.rtol={a.rtol}", f"eval.atol={a.rtol}"] if a.rtol else [])
    cfg = load_run_config(a.workdir, overrides=over)
    run = load_trained(a.workdir, cfg, torch.device("cpu"), a.checkpoint, allow_config_mismatch=bool(over))
    rows = []
    for eps in [float(s) for s in a.eps.split(",")]:
        run.sde.likelihood_eps = eps
        r = ex.run_likelihood(cfg, a.workdir, split="test", n=a.n or None, seed=a.seed, run=run)
        rows.append({k: r[k] for k in ("t_eps", "n", "bits_per_dim", "bits_per_dim_stderr", "nfe_mean", "seconds",
                                       "rtol", "step")})
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()

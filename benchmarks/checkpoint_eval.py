"""Test and train bits/dim (360 images each, probability-flow ODE) at given checkpoints of a digits
run, and with ``--samples`` the share of pixels more than one grey level outside [-1, 1] and the
pixel std of 1000 samples (seed 0) from DPM-Solver++ at 20 NFE, Heun at 21 NFE and DDPM at 100
steps: how a training run's likelihood (and its overfitting) and samples move with its length.

Usage::

    python benchmarks/checkpoint_eval.py --workdir runs/demo --steps 3000,6000 --samples
"""
from __future__ import annotations

import argparse
import json

import torch

from score_sde import experiment as ex
from score_sde.training.checkpoint import checkpoint_path

SOLVERS = (("dpmpp_2m", 19), ("heun", 10), ("ddpm", 100))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--steps", required=True, help="checkpoint steps, comma-separated")
    p.add_argument("--samples", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    for st in (int(s) for s in a.steps.split(",")):
        run = ex.load_trained(a.workdir, checkpoint=str(checkpoint_path(f"{a.workdir}/checkpoints", st)))
        row = {"step": st}
        for split in ("test", "train"):
            lik = ex.run_likelihood(run.cfg, a.workdir, split=split, n=360, seed=0, run=run)
            row[f"bpd_{split}"] = round(lik["bits_per_dim"], 4)
            row[f"bpd_{split}_stderr"] = round(lik["bits_per_dim_stderr"], 4)
        if a.samples:
            for method, steps in SOLVERS:
                x, nfe = run.draw(1000, method=method, steps=steps, seed=0)
                row[f"{method}_{nfe}nfe"] = {"out_of_range_pct": round(100 * float((x.abs() > 1 + 2 / 17).double().mean()), 2),
                                             "pixel_std": round(float(x.std()), 3)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

"""Helpers shared by the tutorial notebooks (imported by their first cell: Jupyter starts the
kernel in ``notebooks/``; the tests put this folder on ``PYTHONPATH``).

Quick mode (``SCORE_SDE_NOTEBOOK_QUICK=1``) shrinks training and sample sizes so that the test
suite can run a notebook in seconds; the numbers and conclusions in the notebooks' text are those
of the full run.
"""
from __future__ import annotations

import json
import os
import tempfile
import time

import torch

import score_sde
from score_sde.evaluation.exact import sliced_wasserstein
from score_sde.training import train

#: quick mode, read once from ``SCORE_SDE_NOTEBOOK_QUICK``
QUICK = os.environ.get("SCORE_SDE_NOTEBOOK_QUICK", "0") not in ("", "0")


def start() -> float:
    """Seed torch, print the versions and the mode; returns the start time (for :func:`print_summary`)."""
    t_start = time.perf_counter()
    torch.manual_seed(0)
    print(f"score_sde {score_sde.__version__}, torch {torch.__version__}, quick mode: {QUICK}")
    return t_start


def mixture() -> score_sde.GaussianMixture:
    """The data of all three notebooks: a random 2-D mixture of 8 full-covariance Gaussians
    (reproducible from its seed). Its score and density are known exactly at every t of every
    SDE, so every sampler and likelihood can be checked."""
    gm = score_sde.GaussianMixture.random(dim=2, n_components=8, seed=1)
    print("mixture weights:", [round(w, 3) for w in gm.weights.tolist()])
    print("data mean:", gm.mean().numpy().round(2), " data std per axis:",
          gm.covariance().diag().sqrt().numpy().round(2))
    return gm


def sliced_w2_to(reference: torch.Tensor):
    """``sw(x)``: the sliced 2-Wasserstein distance of samples ``x`` to ``reference``, with the
    same random projections (seed 1) at every call, so numbers are comparable."""
    def sw(x):
        return sliced_wasserstein(x, reference, generator=torch.Generator().manual_seed(1))
    return sw


def train_small(model, loss_fn, train_x: torch.Tensor, steps: int, log_every: int):
    """The notebooks' training recipe (Adam lr 2e-3, batch 256, short warmup, EMA 0.995 (0.9 in
    quick mode), seed 0, no checkpoints) in a temporary directory; returns the TrainResult."""
    with tempfile.TemporaryDirectory() as workdir:
        return train(model, loss_fn, train_x, workdir=workdir, n_steps=steps, batch_size=256, lr=2e-3,
                     warmup=min(100, steps // 5), ema_rate=0.9 if QUICK else 0.995, seed=0, log_every=log_every,
                     checkpoint_every=None, progress=False, tensorboard=False)


def print_summary(summary: dict, t_start: float) -> None:
    """Last cell: add the mode and the run time, print one ``SUMMARY {json}`` line (read by the tests)."""
    summary["quick"] = QUICK
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    print(f"notebook ran in {summary['seconds']:.0f} s")
    print("SUMMARY " + json.dumps(summary))

"""MLP vs small U-Net at equal wall-clock (issue 13): train a shipped config with each backbone for
the same number of seconds on this machine, then measure test bits/dim through the probability-flow
ODE and (digits) the Digits FD of 1000 DPM-Solver++ samples at 20 NFE.

Training runs in chunks of ``--chunk`` steps (resumed; the loop's randomness depends only on
(seed, step)) until the budget is spent, so both backbones see the same machine load pattern as
far as possible; run them back to back and report ``uptime``. The U-Net is
``benchmarks/recipe_search.SMALL_UNET`` (a DDPM++-style NCSNpp, nf 32, channel multipliers 1, 2, no
attention) with the config's own recipe.

    OMP_NUM_THREADS=1 python benchmarks/backbone_wallclock.py --config vp/digits --backbone unet \\
        --seconds 300 --workdir runs/bb_digits_unet
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from score_sde import experiment as ex  # noqa: E402
from score_sde.config import build_net, load_config  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="vp/digits")
    p.add_argument("--backbone", choices=["mlp", "unet"], default="mlp")
    p.add_argument("--seconds", type=float, default=300.0, help="training wall-clock budget")
    p.add_argument("--chunk", type=int, default=200, help="steps between budget checks")
    p.add_argument("--workdir", required=True)
    p.add_argument("--set", action="append", default=[], help="config override a.b=v (repeatable)")
    p.add_argument("--fd", action="store_true", help="also the Digits FD of 1000 dpmpp_2m samples (20 NFE)")
    a = p.parse_args(argv)
    over = list(a.set) + ["training.snapshot_sampling=False", "training.log_freq=100"]
    cfg = load_config(a.config, over)
    if a.backbone == "unet":
        from recipe_search import SMALL_UNET
        # lists, as the saved config.json has them (a tuple would read as a config mismatch on resume)
        cfg.model.update({k: list(v) if isinstance(v, tuple) else v for k, v in SMALL_UNET.items()})
    dev = torch.device("cpu")
    out = {"config": a.config, "backbone": a.backbone, "budget_seconds": a.seconds, "overrides": a.set,
           "threads": torch.get_num_threads(), "load_before": os.getloadavg()[0],
           "params": sum(q.numel() for q in build_net(cfg).parameters())}
    t0, step = time.perf_counter(), 0
    while time.perf_counter() - t0 < a.seconds:
        step += a.chunk
        cfg.training.n_iters, cfg.training.snapshot_freq = step, a.chunk
        ex.run_train(cfg, a.workdir, device=dev, progress=False)
    out.update(train_seconds=time.perf_counter() - t0, steps=step, load_after=os.getloadavg()[0])
    out["steps_per_second"] = step / out["train_seconds"]
    print(json.dumps(out), flush=True)
    run = ex.load_trained(a.workdir, cfg, dev)
    lik = ex.run_likelihood(cfg, a.workdir, split="test", seed=0, run=run)
    out.update(bits_per_dim=lik["bits_per_dim"], bits_per_dim_stderr=lik["bits_per_dim_stderr"],
               lik_seconds=lik["seconds"])
    if a.fd:
        from score_sde.evaluation import evaluate_samples, level_range

        x, nfe = ex.draw_samples(run.sde, run.model, run.data.event_shape, 1000, "dpmpp_2m", 19, seed=1,
                                 device=dev, batch_size=500)
        fd = evaluate_samples(x, features="digits", data_range=level_range(run.data.levels, run.data.centered),
                              seed=0, device=dev, digits_classifier=str(Path(a.workdir) / "digits_classifier.pt"),
                              metrics=("fd",))
        level = 2.0 / 17.0
        out.update(fd_dpmpp_2m_20=fd.get("digits_fd"), nfe=nfe,
                   out_of_range=float((x.abs() > 1.0 + level).float().mean()), pixel_std=float(x.std()))
    print(json.dumps(out), flush=True)
    Path(a.workdir, "backbone.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Where a trained digits model's out-of-range pixels come from (issue 13), on a run directory.

Two measurements, both on the run's EMA model:

1. *Along a sampling trajectory* (``--method``, ``--steps``, 1000 samples, seed 0): the share of
   final pixels more than one grey level (2/17) outside [-1, 1] (split into below -1 and above +1),
   their 8x8 map, and for each network call the noise level ``s = sigma/alpha`` and how many of the
   final out-of-range pixels the model's denoiser ``D = E[x_0 | x_t]`` already puts out of range
   there (and whether its sign is already the final one): at which noise levels the model fails.
2. *On noised real digits* (``--split``): at fixed ``s``, the share of the denoiser's outputs out of
   range and its mean squared error, beside the exact denoiser of the training set (the posterior
   mean of the empirical distribution: always in range).

Usage::

    python benchmarks/demo_out_of_range.py --workdir runs/demo --method dpmpp_2m --steps 19
"""
from __future__ import annotations

import argparse
import math

import torch

from score_sde import experiment as ex
from score_sde.sampling import sample

LEVEL = 2.0 / 17.0


def trajectory(run, method: str, steps: int, n: int):
    sde, model = run.sde, run.model
    calls = []

    def score_fn(x, t):
        out = model(x, t)
        s = float((run.sde.sigma(t[:1]) / run.sde.alpha(t[:1]))[0])
        calls.append((s, sde.x0_from_score(x, t, out).detach().clone()))
        return out

    with torch.no_grad():
        x = sample(sde, score_fn, (n, *run.data.event_shape), method=method, steps=steps,
                   generator=torch.Generator().manual_seed(0)).samples
    below, above = x < -1 - LEVEL, x > 1 + LEVEL
    oor = below | above
    print(f"{method} {steps} steps: {100 * float(oor.double().mean()):.2f}% of pixels out of range "
          f"({100 * float(below.double().mean()):.2f}% below -1, {100 * float(above.double().mean()):.2f}% above +1); "
          f"pixel std {float(x.std()):.3f}")
    print("map of the out-of-range share per pixel (%):")
    print((oor.reshape(n, -1).double().mean(0) * 100).reshape(run.data.event_shape[-2:]).numpy().round(1))
    if not oor.any():
        return
    print(f"{'s = sigma/alpha':>15} {'D out of range (all)':>21} {'... among final-out':>20} {'same sign as final':>19}")
    for s, d in calls:
        d_oor = d.abs() > 1 + LEVEL
        print(f"{s:15.4f} {100 * float(d_oor.double().mean()):20.2f}% {100 * float(d_oor[oor].double().mean()):19.1f}% "
              f"{100 * float((torch.sign(d[oor]) == torch.sign(x[oor])).double().mean()):18.1f}%")


def noised(run, split: str, sigmas):
    sde, model, ds = run.sde, run.model, run.data
    x0 = ds.preprocess(ds.raw(split).float(), train=False, dequantize=True)
    train = ds.preprocess(ds.raw("train").float(), train=False, dequantize=False).reshape(-1, x0[0].numel()).double()
    g = torch.Generator().manual_seed(0)
    print(f"noised {split} digits ({x0.shape[0]}):")
    print(f"{'s':>6} {'D out of range':>15} {'exact (train set) out':>22} {'mse D':>8}")
    for s in sigmas:
        t = sde.t_from_log_snr(torch.tensor(-2.0 * math.log(s))).expand(x0.shape[0]).float()
        a, sg = sde.alpha(t)[0], sde.sigma(t)[0]
        xt = a * x0 + sg * torch.randn(x0.shape, generator=g)
        with torch.no_grad():
            d = sde.x0_from_score(xt, t, model(xt, t))
        w = torch.softmax(-torch.cdist((xt / a).reshape(xt.shape[0], -1).double(), train) ** 2 / (2 * s * s), 1)
        d_exact = (w @ train).float().reshape(d.shape)
        print(f"{s:6.3f} {100 * float((d.abs() > 1 + LEVEL).double().mean()):14.2f}% "
              f"{100 * float((d_exact.abs() > 1 + LEVEL).double().mean()):21.2f}% {float(((d - x0) ** 2).mean()):8.4f}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--method", default="dpmpp_2m")
    p.add_argument("--steps", type=int, default=19)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--split", default="test")
    a = p.parse_args()
    torch.set_num_threads(1)
    run = ex.load_trained(a.workdir)
    trajectory(run, a.method, a.steps, a.n)
    noised(run, a.split, (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0))


if __name__ == "__main__":
    main()

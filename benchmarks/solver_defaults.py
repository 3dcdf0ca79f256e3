"""Every solver at its documented default steps on a trained run (issue 13's "every solver at its
default steps"): share of pixels more than one grey level outside the data range, pixel std (beside
the test data's) and the data set's metric (clipped and unclipped), ``--n`` samples, seed ``--seed``.

Usage::

    python benchmarks/solver_defaults.py --workdir runs/demo --n 1000 --seed 0
"""
from __future__ import annotations

import argparse
import time


from score_sde import experiment as ex
from score_sde.compare import _fd_key, _metrics, sample_stats
from score_sde.sampling import SOLVERS

DEFAULT = ("ddpm", "euler_maruyama", "pc", "ddim", "heun", "dpmpp_2m", "ode")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--solvers", default=",".join(DEFAULT), help="methods; METHOD:STEPS for other steps")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    run = ex.load_trained(a.workdir)
    ds = run.data
    test = ds.preprocess(ds.raw("test").float(), train=False, dequantize=False)
    print(f"test pixel std {float(test.std()):.3f}")
    print("| solver | steps | NFE | out of range | pixel std | metric | metric unclipped | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for item in a.solvers.split(","):
        m, _, given = item.partition(":")
        steps = int(given) if given else SOLVERS[m](run.sde).default_steps
        t0 = time.perf_counter()
        x, nfe = run.draw(a.n, method=m, steps=steps, seed=a.seed)
        secs = time.perf_counter() - t0
        st = sample_stats(x, ds)
        mc = _metrics(x, ds, run.cfg, a.workdir, a.seed, run.device, clip=True)
        mu = _metrics(x, ds, run.cfg, a.workdir, a.seed, run.device, clip=False)
        k = _fd_key(mc)
        print(f"| {m} | {steps if steps else 'adaptive'} | {nfe} | {100 * st['out_of_range']:.2f}% | "
              f"{st['pixel_std']:.3f} | {mc[k]:.3f} | {mu[k]:.3f} | {secs:.1f} |", flush=True)


if __name__ == "__main__":
    main()

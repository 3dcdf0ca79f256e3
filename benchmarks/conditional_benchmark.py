"""Controllable generation against the exact posterior of a 64-D sharp Gaussian mixture.

Prior: 8 components in D = 64 (full covariances, std 0.05-0.15 per direction), in 4 pairs whose
means agree on the first 32 coordinates and who share a covariance, so observing those leaves a
two-mode posterior whose weights are the pair's prior weights.
Measurements (one ground-truth draw x* of component 0):

* ``inpaint``: the first 32 coordinates exactly (a mask, noise 0);
* ``noisy``:   ``y = A x* + 0.1 n`` with A 16 x 64, orthonormal rows inside the first 32 coordinates.

The exact posterior p(x0 | y) comes from :func:`score_sde.analytic.condition_on_measurement`.

Table 1 (approximate methods, only the exact *prior* score, as a trained model would give, on the
first mixture): replacement, RePaint resampling, DPS at several zeta, and the DPS-style guidance score.
Table 2 (the exact *conditional* score of p_t(x_t | y)): every solver of score_sde.sampling at its
documented budget, ``score_sde.conditional.SOLVER_BUDGETS``, on each mixture of ``--seeds``; a row
is "at the floor" when each metric is within ``Z_FLOOR`` standard deviations of its Monte Carlo floor.

Metrics (per mode; a sample belongs to the prior component of highest responsibility at t = 0):
``weights`` total variation between the sample's mode histogram and the exact posterior weights;
``spread`` |rms distance to the sample's own mode mean / exact rms - 1| (weight-averaged over modes
with posterior weight > 2%); ``centres`` |sample mode mean - exact mode mean| / exact rms spread.
``floor`` is the same statistic for independent exact posterior samples of the same size, averaged
over 8 sets (the Monte Carlo floor), with their standard deviation. These per-mode metrics are local to this script for now; issue 14 adds shared
per-mode metric functions to score_sde.evaluation, which should replace them after the merge.

Run:  OMP_NUM_THREADS=1 python benchmarks/conditional_benchmark.py [--n 1000] [--seeds 0,1] [--sdes vp,subvp,ve]
      [--solvers a,b] [--budget JSON] [--skip-approx | --skip-oracle]
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch

import score_sde
from score_sde import analytic as an
from score_sde import conditional as cond
from score_sde.sampling import SOLVERS, sample

F64 = torch.float64

# each solver's budget in Table 2: the documented table (score_sde.conditional.SOLVER_BUDGETS)
BUDGETS = cond.SOLVER_BUDGETS
#: a metric is "at the floor" when it is below the mean of the exact sets plus this many of their sds
Z_FLOOR = 3.0


def make_problem(seed=0, dim=64, pairs=4, obs=32):
    g = torch.Generator().manual_seed(seed)
    K = 2 * pairs
    shared = torch.randn(pairs, obs, generator=g, dtype=F64)
    means = torch.cat([shared.repeat_interleave(2, 0), torch.randn(K, dim - obs, generator=g, dtype=F64)], 1)
    # the two components of a pair share their covariance, so the measurement cannot tell them apart
    # and the posterior weights of the pair are its prior weights (renormalised)
    q, _ = torch.linalg.qr(torch.randn(pairs, dim, dim, generator=g, dtype=F64))
    q = q.repeat_interleave(2, 0)
    scales = (0.05 + 0.10 * torch.rand(pairs, dim, generator=g, dtype=F64)).repeat_interleave(2, 0)
    covs = q @ torch.diag_embed(scales ** 2) @ q.transpose(1, 2)
    w = 0.5 + torch.rand(K, generator=g, dtype=F64)
    prior = score_sde.GaussianMixture(means, 0.5 * (covs + covs.transpose(1, 2)), w)
    x_true = an.sub_mixture(prior, [0]).sample(1, generator=g, dtype=F64)
    mask = torch.zeros(dim, dtype=torch.bool)
    mask[:obs] = True
    inpaint = cond.Measurement(cond.Mask(mask), x_true[:, mask])
    Q, _ = torch.linalg.qr(torch.randn(obs, 16, generator=g, dtype=F64))
    A = torch.zeros(16, dim, dtype=F64)
    A[:, :obs] = Q.T
    op = cond.LinearOperator(lambda x: x @ A.T.to(x.dtype), lambda v: v @ A.to(v.dtype), orthonormal_rows=True,
                             name="projection")
    y = x_true @ A.T + 0.1 * torch.randn(1, 16, generator=g, dtype=F64)
    noisy = cond.Measurement(op, y, noise_std=0.1)
    return prior, {"inpaint": (inpaint, cond.Mask(mask)), "noisy": (noisy, A)}


def prune(gm, tol=1e-10):
    return an.sub_mixture(gm, torch.nonzero(gm.weights > tol)[:, 0])


def modes(prior, x):
    yv, v = prior._components(x, None, None)
    return prior._log_resp(yv, v).argmax(1)


def metrics(x, post_full, prior):
    """(weights TV, spread error, centre error) of samples x against the exact posterior."""
    k = modes(prior, x)
    hist = torch.bincount(k, minlength=prior.n_components).to(F64) / x.shape[0]
    w = post_full.weights
    tv = 0.5 * float((hist - w).abs().sum())
    covs = post_full.covariances()
    sp, ce, tot = 0.0, 0.0, 0.0
    for j in torch.nonzero(w > 0.02)[:, 0].tolist():
        xs = x[k == j]
        rms = math.sqrt(float(covs[j].trace()))
        if xs.shape[0] < 2:
            sp += float(w[j]) * 1.0
            ce += float(w[j]) * 1.0
        else:
            mu = xs.mean(0)
            sp += float(w[j]) * abs(math.sqrt(float((xs - mu).pow(2).sum(1).mean())) / rms - 1.0)
            ce += float(w[j]) * float((mu - post_full.means[j]).norm()) / rms
        tot += float(w[j])
    return tv, sp / tot, ce / tot


def floor_stats(post, prior, n, sets=8):
    """Mean and standard deviation over ``sets`` independent exact posterior sets of size n of each
    metric (the Monte Carlo floor and its spread)."""
    fl = [metrics(post.sample(n, generator=torch.Generator().manual_seed(101 + i), dtype=F64), post, prior)
          for i in range(sets)]
    mean = tuple(sum(v) / sets for v in zip(*fl))
    sd = tuple(math.sqrt(sum((a - m) ** 2 for a in v) / (sets - 1)) for v, m in zip(zip(*fl), mean))
    return mean, sd


def fmt(m, f):
    return " | ".join(f"{a:.3f} ({b:.3f})" for a, b in zip(m, f))


def exact_problem(seed, n):
    """(prior, {measurement: (Measurement, operator, exact posterior, floor mean, floor sd)})."""
    prior, problems = make_problem(seed)
    out = {}
    for name, (meas, A) in problems.items():
        post = an.condition_on_measurement(prior, A, meas.y, meas.noise_std).mixture
        mean, sd = floor_stats(post, prior, n)
        out[name] = (meas, A, post, mean, sd)
    return prior, out


def oracle_row(sde, solver, prior, post, floor, sd, n, budget=None, sample_seed=8):
    """Run ``solver`` at its documented budget (or ``budget``) with the exact conditional score;
    returns (nfe, metrics, z-scores against the floor, at-the-floor flag, seconds)."""
    kw = dict(BUDGETS[solver] if budget is None else budget)
    t0 = time.time()
    out = sample(sde, prune(post).score_fn(sde), (n, 64), method=solver,
                 generator=torch.Generator().manual_seed(sample_seed), dtype=F64, **kw)
    m = metrics(out.samples, post, prior)
    z = tuple((v - f) / max(d, 1e-12) for v, f, d in zip(m, floor, sd))
    return out.nfe, m, z, all(v <= Z_FLOOR for v in z), time.time() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--sdes", default="vp,subvp,ve")
    p.add_argument("--seeds", default="0,1", help="mixture seeds of Table 2 (Table 1 uses the first)")
    p.add_argument("--solvers", default=",".join(SOLVERS), help="solvers of Table 2 (default: every solver)")
    p.add_argument("--budget", default=None, help="JSON keyword arguments replacing the documented budget "
                   "(with one solver in --solvers; for budget searches)")
    p.add_argument("--approx-sdes", default="vp,ve")
    p.add_argument("--steps", type=int, default=1000, help="score calls of the approximate methods")
    p.add_argument("--zetas", default="0.05,0.2,1.0")
    p.add_argument("--sde-n", type=int, default=1000, help="the SDEs' discretisation N (ddpm's chain and the pc "
                   "predictors' tables; ddpm ends at T/N, so sharp modes need N = 10000 there)")
    p.add_argument("--skip-oracle", action="store_true")
    p.add_argument("--skip-approx", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    N = args.sde_n
    sdes = {"vp": score_sde.VPSDE(N=N), "subvp": score_sde.subVPSDE(N=N), "ve": score_sde.VESDE(N=N)}
    n = args.n
    seeds = [int(v) for v in args.seeds.split(",")]
    problems = {}
    for seed in seeds:
        prior, probs = exact_problem(seed, n)
        problems[seed] = (prior, probs)
        for name, (meas, _, post, floor, sd) in probs.items():
            print(f"# mixture {seed}, {name}: posterior weights (>1%) "
                  f"{[(i, round(float(v), 3)) for i, v in enumerate(post.weights) if v > 0.01]}; floor (weights TV, "
                  f"spread, centres) = {tuple(round(v, 4) for v in floor)}, sd {tuple(round(v, 4) for v in sd)}")
    print(f"n = {n} samples per row; each cell: value (Monte Carlo floor)\n")

    if not args.skip_approx:
        prior, probs = problems[seeds[0]]
        print("## Table 1: approximate methods with the exact prior score only\n")
        print("| SDE | measurement | method | NFE | weights TV | spread err | centre err | obs. residual | s |")
        print("|---|---|---|---|---|---|---|---|---|")
        S = args.steps
        for sname in args.approx_sdes.split(","):
            sde = sdes[sname]
            score = prior.score_fn(sde)
            for mname, (meas, _, post, floor, _) in probs.items():
                runs = [
                    (f"replacement (ancestral, {S} steps)", lambda g: cond.replacement_sample(
                        sde, score, meas, (n, 64), method="ancestral", steps=S, generator=g, dtype=F64)),
                    (f"replacement (pc, {S // 2} steps, langevin)", lambda g: cond.replacement_sample(
                        sde, score, meas, (n, 64), method="pc", steps=S // 2, corrector="langevin", snr=0.01,
                        generator=g, dtype=F64)),
                    (f"RePaint r=4 (ancestral, {S // 4} steps)", lambda g: cond.replacement_sample(
                        sde, score, meas, (n, 64), method="ancestral", steps=S // 4, resample=4, generator=g,
                        dtype=F64)),
                    (f"RePaint r=4 (ancestral, {S} steps: 4x the calls)", lambda g: cond.replacement_sample(
                        sde, score, meas, (n, 64), method="ancestral", steps=S, resample=4, generator=g,
                        dtype=F64)),
                    (f"RePaint r=10 (ancestral, {S // 10} steps)", lambda g: cond.replacement_sample(
                        sde, score, meas, (n, 64), method="ancestral", steps=S // 10, resample=10, generator=g,
                        dtype=F64)),
                ]
                for z in [float(v) for v in args.zetas.split(",")]:
                    runs.append((f"DPS zeta={z} ({S} steps)", lambda g, z=z: cond.dps_sample(
                        sde, score, meas, (n, 64), steps=S, zeta=z, generator=g, dtype=F64)))
                runs.append((f"DPS-style guidance score (ancestral, {S} steps)", lambda g: sample(
                    sde, cond.dps_score(sde, score, meas), (n, 64), method="ancestral", steps=S, generator=g,
                    dtype=F64)))
                for label, fn in runs:
                    t0 = time.time()
                    try:
                        out = fn(torch.Generator().manual_seed(7))
                    except FloatingPointError as e:
                        print(f"| {sname} | {mname} | {label} | - | diverged: {e} |")
                        continue
                    x = out.samples
                    res = float(meas.residual(x).reshape(n, -1).norm(dim=1).median())
                    print(f"| {sname} | {mname} | {label} | {out.nfe} | {fmt(metrics(x, post, prior), floor)} | "
                          f"{res:.3f} | {time.time() - t0:.0f} |", flush=True)

    if not args.skip_oracle:
        solvers = args.solvers.split(",")
        budget = json.loads(args.budget) if args.budget else None
        if budget is not None and len(solvers) != 1:
            raise SystemExit("--budget needs exactly one solver in --solvers")
        print("\n## Table 2: every solver at its documented budget (score_sde.conditional.SOLVER_BUDGETS) with the "
              "exact conditional score of p_t(x_t | y)\n")
        print(f"z: (value - floor) / sd of the floor; 'floor' = every z <= {Z_FLOOR:g}\n")
        print("| solver | budget | SDE | mixture | measurement | NFE | weights TV | spread err | centre err | z | "
              "at floor | s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for solver in solvers:
            for sname in args.sdes.split(","):
                for seed in seeds:
                    prior, probs = problems[seed]
                    for mname, (_, _, post, floor, sd) in probs.items():
                        nfe, m, z, ok, secs = oracle_row(sdes[sname], solver, prior, post, floor, sd, n, budget)
                        kw = BUDGETS[solver] if budget is None else budget
                        print(f"| {solver} | {json.dumps(kw)} | {sname} | {seed} | {mname} | {nfe} | {fmt(m, floor)} | "
                              f"{', '.join(f'{v:.1f}' for v in z)} | {'yes' if ok else 'NO'} | {secs:.0f} |",
                              flush=True)


if __name__ == "__main__":
    main()

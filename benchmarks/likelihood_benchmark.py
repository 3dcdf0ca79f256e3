"""Bias and cost of probability-flow ODE likelihoods on Gaussian mixtures with exact scores.

For each data dimension D, SDE (VP, sub-VP, VE) and tolerance rtol = atol, this runs

* ``ours exact``: :func:`score_sde.likelihood.log_likelihood`, torchdiffeq dopri5, exact divergence;
* ``ours hutch``: the same with one Rademacher Hutchinson probe;
* ``reference algorithm``: a faithful re-implementation (our own code) of the paper's reference
  likelihood: scipy ``solve_ivp`` RK45 on the flattened batch as a float64 numpy vector, the
  score model called in float32, and the network evaluated TWICE per ODE evaluation (drift,
  then again inside the Hutchinson divergence); one Rademacher probe for the whole solve.
  Its NFE column counts score calls (2 x scipy's ``nfev``; the reference reports ``nfev``).

on B samples of a random ``GaussianMixture`` (score_sde.analytic), with the exact score. Columns:

* ``NFE``: score_fn calls (counted by a wrapper, not trusted from the solver);
* ``bias eps``: mean over the batch of ``bpd - bpd_exact(eps)``, ``bpd_exact(eps) = -log p_eps(x) /
  (D ln 2)``: the quantity the ODE measures (x taken as a point of p_eps);
* ``bias 0``: the same against the data density p_0 (what one usually wants);
* ``prior gap``: mean of ``(log p_T(z) - log prior(z)) / (D ln 2)``: the part of ``bias eps`` due to
  the prior N(0, prior_std^2 I) not being exactly p_T (a property of the model, not of the solver;
  it varies from sample to sample, so its batch mean is noisy);
* ``solver err``: mean |(logp - log prior(z)) - (log p_eps(x) - log p_T(z))| in nats: the error of
  the integrated divergence alone, free of the prior gap;
* for Hutchinson, ``+-`` gives the standard error of the mean bias over the batch.

Run: ``python benchmarks/likelihood_benchmark.py`` (about 3-5 minutes on 1 CPU thread);
``--quick`` for the tol = 1e-5 rows only (the quality bar); ``--vjp`` times the exact divergence of
an MLP score network with batched vs looped vector-Jacobian products. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np
import torch
from scipy import integrate

from score_sde import VESDE, VPSDE, GaussianMixture, subVPSDE
from score_sde.likelihood import log_likelihood
from score_sde.sde import CountingScoreFn

SDES = {"vp": VPSDE, "subvp": subVPSDE, "ve": VESDE}


def reference_likelihood(sde, score_fn, data, *, rtol=1e-5, atol=1e-5, eps=1e-5, method="RK45",
                         probe="rademacher", generator=None):
    """The paper's reference likelihood algorithm, re-implemented as a baseline.

    scipy ``solve_ivp`` on ``[x.flatten(), delta]`` (float64 numpy), model inputs cast to float32,
    drift and Hutchinson divergence computed by two separate score evaluations per ODE evaluation,
    one probe for the whole solve. Returns ``(logp (B,) float64 nats, z, nfev)`` with ``nfev`` the
    number of ODE evaluations (score calls = 2 nfev). No bits/dim offset (continuous data).
    """
    shape, B = data.shape, data.shape[0]
    if probe == "gaussian":
        e = torch.randn(shape, generator=generator).float()
    else:
        e = torch.randint(0, 2, shape, generator=generator).float() * 2 - 1
    rsde = sde.reverse(score_fn, probability_flow=True)

    def drift_fn(x, t):
        return rsde.sde(x, t)[0]

    def div_fn(x, t):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            g = torch.autograd.grad((drift_fn(x, t) * e).sum(), x)[0]
        return (g * e).reshape(B, -1).sum(1)

    def ode_func(t, y):
        x = torch.from_numpy(y[:-B].reshape(shape)).to(torch.float32)
        tt = torch.full((B,), float(t), dtype=torch.float32)
        with torch.no_grad():
            drift = drift_fn(x, tt).reshape(-1).double().numpy()
        div = div_fn(x, tt).double().numpy()
        return np.concatenate([drift, div])

    y0 = np.concatenate([data.double().reshape(-1).numpy(), np.zeros(B)])
    sol = integrate.solve_ivp(ode_func, (eps, sde.T), y0, rtol=rtol, atol=atol, method=method)
    yT = sol.y[:, -1]
    z = torch.from_numpy(yT[:-B].reshape(shape))
    delta = torch.from_numpy(yT[-B:])
    return sde.prior_logp(z) + delta, z, sol.nfev


def _row_stats(logp, z, x, gm, sde, eps, D):
    logp, z = logp.double(), z.double()
    ln2D = D * math.log(2.0)
    lp_eps = gm.log_prob(x, eps, sde)
    lp_0 = gm.log_prob(x)
    d_bias_eps = (-(logp - lp_eps) / ln2D)
    d_bias_0 = (-(logp - lp_0) / ln2D)
    solver_err = ((logp - sde.prior_logp(z)) - (lp_eps - gm.log_prob(z, sde.T, sde))).abs().mean()
    se = float(d_bias_eps.std() / math.sqrt(len(d_bias_eps)))
    prior_gap = (-(sde.prior_logp(z) - gm.log_prob(z, sde.T, sde)) / ln2D).mean()
    return float(d_bias_eps.mean()), se, float(d_bias_0.mean()), float(solver_err), float(prior_gap)


def run(dims, sdes, tols, batch, seed, reference=True, dtype=torch.float32, file=sys.stdout):
    torch.set_num_threads(1)
    rows = []
    header = ("| D | SDE | tol | method | NFE (score calls) | bias eps (bpd) | bias 0 (bpd) | prior gap (bpd) "
              "| solver err (nats) | time (s) |")
    print(header, file=file)
    print("|" + "---|" * 10, file=file)
    for D in dims:
        gm = GaussianMixture.random(dim=D, n_components=4, seed=seed)
        x = gm.sample(batch, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
        for name in sdes:
            sde = SDES[name]()
            eps = sde.likelihood_eps
            for tol in tols:
                runs = [("ours exact", "exact"), ("ours hutch", "hutchinson")]
                if reference:
                    runs.append(("reference algorithm (scipy RK45, 2 calls/eval)", "reference"))
                for label, kind in runs:
                    counter = CountingScoreFn(gm.score_fn(sde))   # its own count, not the solver's
                    gen = torch.Generator().manual_seed(seed + 2)
                    t0 = time.perf_counter()
                    if kind == "reference":
                        logp, z, nfev = reference_likelihood(sde, counter, x.to(torch.float32), rtol=tol, atol=tol,
                                                             eps=eps, generator=gen)
                        assert counter.calls == 2 * nfev
                    else:
                        out = log_likelihood(sde, counter, x.to(dtype), rtol=tol, atol=tol, eps=eps,
                                             divergence=kind, generator=gen)
                        logp, z = out.logp, out.z
                        assert out.nfe == counter.calls
                    dt = time.perf_counter() - t0
                    b_eps, se, b_0, s_err, gap = _row_stats(logp, z, x, gm, sde, eps, D)
                    pm = f" +- {se:.1e}" if kind != "exact" else ""
                    row = dict(D=D, sde=name, tol=tol, method=label, nfe=counter.calls, bias_eps=b_eps, se=se,
                               bias_0=b_0, prior_gap=gap, solver_err=s_err, time=dt)
                    rows.append(row)
                    print(f"| {D} | {name} | {tol:.0e} | {label} | {counter.calls} | {b_eps:+.1e}{pm} | {b_0:+.1e} "
                          f"| {gap:+.1e} | {s_err:.1e} | {dt:.2f} |", file=file, flush=True)
    return rows


def summary(rows, file=sys.stdout):
    """Quality bar at tol 1e-5: |mean bias eps| of ours exact <= 0.002 bpd and NFE <= reference's."""
    print("\nQuality bar (tol 1e-5, exact divergence): |mean bpd bias| <= 0.002 and NFE <= reference", file=file)
    ok_all = True
    for r in rows:
        if r["tol"] != 1e-5 or r["method"] != "ours exact":
            continue
        ref = [q for q in rows if q["tol"] == 1e-5 and q["D"] == r["D"] and q["sde"] == r["sde"]
               and q["method"].startswith("reference")]
        ref_nfe = ref[0]["nfe"] if ref else None
        ok = abs(r["bias_eps"]) <= 0.002 and abs(r["bias_0"]) <= 0.002 and (ref_nfe is None or r["nfe"] <= ref_nfe)
        ok_all &= ok
        print(f"- D={r['D']} {r['sde']}: bias eps {r['bias_eps']:+.1e}, bias 0 {r['bias_0']:+.1e} (of which prior gap "
              f"{r['prior_gap']:+.1e}), NFE {r['nfe']} "
              f"vs reference {ref_nfe} -> {'PASS' if ok else 'FAIL'}", file=file)
    ratios = []
    for r in rows:
        if r["method"] == "ours exact":
            ref = [q for q in rows if q["tol"] == r["tol"] and q["D"] == r["D"] and q["sde"] == r["sde"]
                   and q["method"].startswith("reference")]
            if ref:
                ratios.append(ref[0]["nfe"] / r["nfe"])
    if ratios:
        print(f"- reference score calls / ours (exact), median over all rows: {statistics.median(ratios):.2f}",
              file=file)
    return ok_all


def vjp_timing(file=sys.stdout, repeats=3):
    """Exact divergence of a small MLP score network (score_sde.models.mlp.MLP, event shape (1, 4, 4),
    hidden 64, 2 blocks, eps output, B = 8, VP, rtol = atol = 1e-4): seconds per solve with the
    D vector-Jacobian products batched through vmap vs looped (median of ``repeats``)."""
    import score_sde.likelihood as lk
    from score_sde import ScoreModel
    from score_sde.models.mlp import MLP

    torch.set_num_threads(1)
    torch.manual_seed(0)
    sde = VPSDE()
    model = ScoreModel(MLP(event_shape=(1, 4, 4), hidden=64, num_blocks=2).eval(), sde, output="eps")
    x = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    print("\n| exact divergence, MLP score net, D = 16 | NFE | s / solve (median) |\n|---|---|---|", file=file)
    saved = lk._BATCHED_VJP
    try:
        for batched in (True, False):
            lk._BATCHED_VJP = batched
            log_likelihood(sde, model, x, divergence="exact", rtol=1e-4, atol=1e-4)      # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                out = log_likelihood(sde, model, x, divergence="exact", rtol=1e-4, atol=1e-4)
                times.append(time.perf_counter() - t0)
            label = "batched (vmap, default)" if batched else "loop of backward passes"
            print(f"| {label} | {out.nfe} | {statistics.median(times):.2f} |", file=file, flush=True)
    finally:
        lk._BATCHED_VJP = saved


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=[2, 16])
    p.add_argument("--sdes", nargs="+", default=list(SDES), choices=list(SDES))
    p.add_argument("--tols", type=float, nargs="+", default=[1e-3, 1e-4, 1e-5, 1e-6])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-reference", action="store_true", help="skip the scipy reference baseline")
    p.add_argument("--float64", action="store_true", help="run our solver in float64 (default float32)")
    p.add_argument("--quick", action="store_true", help="tol 1e-5 only")
    p.add_argument("--vjp", action="store_true", help="only time batched vs looped exact divergence on an MLP")
    a = p.parse_args(argv)
    if a.vjp:
        vjp_timing()
        return 0
    if a.quick:
        a.tols = [1e-5]
    rows = run(a.dims, a.sdes, a.tols, a.batch, a.seed, reference=not a.no_reference,
               dtype=torch.float64 if a.float64 else torch.float32)
    ok = summary(rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

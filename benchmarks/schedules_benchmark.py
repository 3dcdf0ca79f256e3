"""Exact-score quality bars of issue 16 for every schedule of ``score_sde.schedules``.

1. ``marginal``: the closed-form marginal p_t (mean, covariance) against a torchsde Monte Carlo solve of
   the forward SDE started from exact mixture samples (srk, 2000 uniform steps, float64).
2. ``likelihood``: the probability-flow ODE log-likelihood (exact divergence, rtol = atol = 1e-6) against
   the exact log p_eps of the mixture, in bits/dim.
3. ``fewstep``: per-mode sample quality of the few-step solvers at the same NFE under each schedule and
   under VP. The per-mode metric is local to this script (the issue-14 metric functions were not
   merged yet): each sample is assigned to the component of highest responsibility under p_0; reported
   are the largest error of the mode weights, the largest mode-mean error over the mode's std, and the
   mean relative error of the mode spread ``sqrt(tr Cov)``.
4. ``tables``: a VP SDE's own beta table against VP at the grid times; improved DDPM's cosine table
   against the continuous cosine schedule (at the grid times, and between them: the interpolation
   error), where its betas are clipped.

    ``fewstep_matched``: the same, every schedule ending at VP's final log-SNR (lambda_VP(1e-3) = 9.12).

    OMP_NUM_THREADS=1 python benchmarks/schedules_benchmark.py [--only marginal,likelihood,fewstep,tables]
        [--seed 0] [--out FILE]
"""
import argparse
import json
import math
import sys
import time

import torch

from score_sde import (CosineVPSDE, DiscreteVPSDE, EDMSDE, GaussianMixture, LinearInterpolantSDE, ScheduleSDE,
                       VPSDE, log_likelihood)
from score_sde.sampling import sample
from score_sde.schedules import ddpm_linear_betas, iddpm_cosine_betas

F64 = torch.float64


def schedules():
    k = 0.497 * math.pi
    return {
        "vp": VPSDE(),
        "cosine": CosineVPSDE(),
        "edm": EDMSDE(),
        "rectified_flow": LinearInterpolantSDE(),
        "custom_trig": ScheduleSDE(lambda t: torch.cos(k * t), lambda t: torch.sin(k * t)),
        "discrete_ddpm_linear": DiscreteVPSDE(ddpm_linear_betas(1000)),
        "discrete_iddpm_cosine": DiscreteVPSDE(iddpm_cosine_betas(1000)),
    }


def mixture(seed, dim=2, k=5):
    return GaussianMixture.random(dim=dim, n_components=k, seed=seed, scale_range=(0.1, 0.4))


# ------------------------------------------------------------------------------------------------ 1
def marginal(seed, n=20000, steps=2000):
    import torchsde

    gm = mixture(seed)
    out = {}
    for name, sde in schedules().items():
        x0 = gm.sample(n, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)

        class Fwd(torch.nn.Module):
            noise_type, sde_type = "diagonal", "ito"

            def f(self, t, y):
                return sde.f(t.reshape(1).to(F64)) * y

            def g(self, t, y):
                return torch.sqrt(sde.g2(t.reshape(1).to(F64))).expand_as(y)

        t_eval = [0.5 * sde.T, sde.T]
        ts = torch.tensor([0.0] + t_eval, dtype=F64)
        bm = torchsde.BrownianInterval(0.0, sde.T, size=x0.shape, dtype=F64, entropy=seed + 2)
        t0 = time.perf_counter()
        # small steps near t = 0 matter little; f and g^2 blow up towards T for cosine / rectified flow
        ys = torchsde.sdeint(Fwd(), x0, ts, method="euler", dt=sde.T / steps, bm=bm)
        res = {}
        for i, t in enumerate(t_eval, start=1):
            y = ys[i]
            m_err = float((y.mean(0) - gm.marginal_mean(sde, t)).abs().max())
            c_true = gm.marginal_covariance(sde, t)
            c_err = float(((torch.cov(y.T) - c_true).abs().max()) / c_true.abs().max())
            # Monte Carlo standard error of the mean (per coordinate), for scale
            se = float(torch.sqrt(torch.diagonal(c_true) / n).max())
            res[f"t={t:.4g}"] = {"mean_abs_err": m_err, "mean_mc_stderr": se, "cov_rel_err": c_err}
        res["seconds"] = time.perf_counter() - t0
        out[name] = res
        print(name, json.dumps(res), flush=True)
    return out


# ------------------------------------------------------------------------------------------------ 2
def likelihood(seed, n=256):
    out = {}
    for dim in (2, 5):
        gm = mixture(seed + 10 * dim, dim=dim, k=4)
        x = gm.sample(n, generator=torch.Generator().manual_seed(seed + 3), dtype=F64)
        for name, sde in schedules().items():
            eps = sde.likelihood_eps
            t0 = time.perf_counter()
            res = log_likelihood(sde, gm.score_fn(sde), x, eps=eps, rtol=1e-6, atol=1e-6, divergence="exact")
            exact = gm.log_prob(x, torch.full((n,), eps, dtype=F64), sde)
            gap = (exact - res.logp) / (dim * math.log(2))
            out[f"{name}/D={dim}"] = {"mean_gap_bpd": float(gap.mean()), "max_abs_gap_bpd": float(gap.abs().max()),
                                      "nfe": res.nfe, "seconds": time.perf_counter() - t0}
            print(f"{name}/D={dim}", json.dumps(out[f"{name}/D={dim}"]), flush=True)
    return out


# ------------------------------------------------------------------------------------------------ 3
def per_mode(gm, x):
    """Local per-mode metrics (see the module docstring)."""
    y, v = gm._components(x, None, None)
    k = gm._log_resp(y, v).argmax(1)
    covs = gm.covariances()
    w_err, m_err, s_err = 0.0, 0.0, []
    for j in range(gm.n_components):
        xs = x[k == j].to(F64)
        w_err = max(w_err, abs(xs.shape[0] / x.shape[0] - float(gm.weights[j])))
        if xs.shape[0] < 10:
            m_err = math.inf
            continue
        std = math.sqrt(float(torch.trace(covs[j])))
        m_err = max(m_err, float((xs.mean(0) - gm.means[j]).norm()) / std)
        s_err.append(abs(math.sqrt(float(torch.trace(torch.cov(xs.T)))) / std - 1))
    return {"weight_err": w_err, "mean_err_over_std": m_err, "spread_rel_err": sum(s_err) / len(s_err)}


def fewstep(seed, n=20000, matched=False):
    """``matched``: every schedule ends at VP's final log-SNR lambda_VP(1e-3) (instead of its own eps)."""
    gm = mixture(seed + 5)
    lam_end = VPSDE().log_snr(torch.tensor(1e-3, dtype=F64))
    # the reference: exact samples through the same metric (its own Monte Carlo floor)
    out = {"exact_samples": per_mode(gm, gm.sample(n, generator=torch.Generator().manual_seed(seed), dtype=F64))}
    cases = [("dpmpp_3m", 10, "log_snr"), ("dpmpp_2m", 10, "log_snr"), ("heun", 5, "karras"),
             ("dpmpp_3m", 20, "log_snr"), ("ddim", 20, "log_snr")]
    for method, steps, grid in cases:
        for name, sde in schedules().items():
            eps = float(sde.t_from_log_snr(lam_end)) if matched else None
            o = sample(sde, gm.score_fn(sde), (n, 2), method=method, steps=steps, grid=grid, eps=eps,
                       generator=torch.Generator().manual_seed(seed), dtype=F64)
            key = f"{method}/{steps}steps/{grid}/{name}" + ("/matched_end" if matched else "")
            out[key] = {"nfe": o.nfe, **per_mode(gm, o.samples)}
            print(key, json.dumps(out[key]), flush=True)
    return out


# ------------------------------------------------------------------------------------------------ 4
def tables(seed):
    vp = VPSDE()
    d = DiscreteVPSDE(vp.betas())
    ti = vp.discrete_times()
    out = {"vp_table_at_grid": {"max_rel_err_alpha": float((d.alpha(ti) / vp.alpha(ti) - 1).abs().max()),
                                "max_rel_err_sigma": float((d.sigma(ti) / vp.sigma(ti) - 1).abs().max())}}
    t = torch.linspace(1e-5, 1.0, 200001, dtype=F64)
    out["vp_table_between_grid"] = {"max_abs_err_log_alpha": float((d.log_alpha(t) - vp.log_alpha(t)).abs().max()),
                                    "max_rel_err_sigma": float((d.sigma(t) / vp.sigma(t) - 1).abs().max())}
    b = iddpm_cosine_betas(1000)
    clipped = int((b >= 0.999 - 1e-15).sum())
    first_clip = int((b >= 0.999 - 1e-15).nonzero()[0]) if clipped else None
    dc = DiscreteVPSDE(b)
    cos = CosineVPSDE(T=0.9999)
    ti = dc.discrete_times()
    ok = ti <= 0.9946
    out["iddpm_cosine_table"] = {
        "n_clipped_betas": clipped, "first_clipped_timestep": first_clip,
        "grid_max_abs_err_log_alpha_t<=0.9946": float((dc.log_alpha(ti[ok]) - cos.log_alpha(ti[ok])).abs().max()),
    }
    for lo, hi in ((1e-5, 0.5), (0.5, 0.9), (0.9, 0.98), (0.98, 0.9946)):
        t = torch.linspace(lo, hi, 100001, dtype=F64)
        e = (dc.log_alpha(t) - cos.log_alpha(t)).abs()
        es = (dc.sigma(t) / cos.sigma(t) - 1).abs()
        fp = (cos._c ** 2 / torch.cos(cos._phi0 + cos._c * t) ** 2)
        out["iddpm_cosine_table"][f"between_grid_[{lo},{hi}]"] = {
            "max_abs_err_log_alpha": float(e.max()), "bound_h2_over_8_max_fprime": float((1e-3) ** 2 / 8 * fp.max()),
            "max_rel_err_sigma": float(es.max())}
    # at the clipped end (where the continuous alpha -> 0 at t = 1)
    tl = ti[-clipped - 1:] if clipped else ti[-1:]
    out["iddpm_cosine_table"]["clipped_end_log_alpha"] = {
        f"{float(x):.3f}": [float(dc.log_alpha(x)), float(cos.log_alpha(torch.clamp(x, max=0.9999)))] for x in tl}
    print(json.dumps(out, indent=1), flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="marginal,likelihood,fewstep,tables")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    res = {}
    for part in args.only.split(","):
        fns = {"marginal": marginal, "likelihood": likelihood, "fewstep": fewstep, "tables": tables,
               "fewstep_matched": lambda seed: fewstep(seed, matched=True)}
        res[part] = fns[part](args.seed)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())

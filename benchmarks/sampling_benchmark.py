"""Sampler accuracy against NFE with the exact score of a 64-D Gaussian mixture.

For each SDE (VP, sub-VP, VE) and each solver, draws n samples with the *exact* score of
``GaussianMixture.random(dim, K, seed)`` at NFE budgets 10, 20, 50, 100, 1000 and compares them
with n fresh true samples:

* ``SW``: sliced 2-Wasserstein distance (256 fixed random directions, sorted projections);
* ``FD``: Frechet distance between Gaussian fits of the coordinates (means and covariances);
* ``dlogp``: mean log p_0 of the samples minus that of the true samples (nats; mixture density).

The Monte Carlo floor of each metric (the same metric between two independent true sample sets
of size n) is printed beside the tables. Each solver gets the largest step count whose NFE
(score calls, including the final denoising call) fits the budget.

Compared against faithful re-implementations, given the same score, of
* the paper's reference samplers (yang-song/score_sde_pytorch, "ref:"): the PC sampler
  (reverse-diffusion predictor + Langevin corrector, snr 0.16, corrector run first, discrete
  betas beta(t)/N on linspace(T, eps, N), returns x_mean at the end), Euler-Maruyama and
  ancestral sampling (same conventions); its sub-VP Langevin corrector crashes (no discrete
  tables) and is reported as such;
* k-diffusion's samplers ("kdiff:"): euler, heun, dpmpp_2m and lms on Karras sigmas (rho 7)
  between sigma(eps)/alpha(eps) and sigma(T)/alpha(T), with a final step to sigma = 0, the VP
  model seen through sigma_edm = sigma(t)/alpha(t).
The adaptive probability-flow ODE solvers (ours: torchdiffeq dopri5; reference: scipy RK45 with a
numpy round trip) get their own table across tolerances.

With ``--sharp`` it instead runs the sharp-mixture benchmark (issue 14): 64 dims (1x8x8), 8
diagonal modes with per-coordinate std in [0.01, 0.05] (``score_sde.evaluation.sharp_mixture``),
and reports the per-mode metrics (within-mode spread error, mode-centre error, mode-weight total
variation; ``score_sde.evaluation.mode_metrics``) beside SW, each with its Monte Carlo floor, for
every solver at its defaults (only method and steps named) and for tuned settings, on every SDE,
and flags a solver whose spread error grows with the step count.

Usage::

    python benchmarks/sampling_benchmark.py --sharp --quick   # n = 2048, 10/20/50 NFE
    python benchmarks/sampling_benchmark.py --sharp           # n = 8192, 10/20/50/100 NFE
    python benchmarks/sampling_benchmark.py --bar             # the quality bar at the defaults, n = 8192
    python benchmarks/sampling_benchmark.py --bar --stochastic --n 2048   # stochastic samplers, 1000/2000 steps
    python benchmarks/sampling_benchmark.py --margin --sdes vp,ve  # the bar on 5 fresh mixtures: mean and worst
    python benchmarks/sampling_benchmark.py --quick     # ~ a few minutes on 2 busy CPU cores
    python benchmarks/sampling_benchmark.py             # everything, all SDEs up to 1000 NFE
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import score_sde
from score_sde.sampling import grids, sample

BUDGETS = (10, 20, 50, 100, 1000)


# ---------------------------------------------------------------------------------- metrics
class Metrics:
    def __init__(self, gm, n, seed=0, n_proj=256):
        self.gm = gm
        g = torch.Generator().manual_seed(10_000 + seed)
        self.ref = gm.sample(n, generator=g, dtype=torch.float64)
        self.other = gm.sample(n, generator=g, dtype=torch.float64)
        d = torch.randn(gm.dim, n_proj, generator=g, dtype=torch.float64)
        self.dirs = d / d.norm(dim=0, keepdim=True)
        self.ref_proj = torch.sort(self.ref @ self.dirs, dim=0).values
        self.ref_mu, self.ref_cov = self.ref.mean(0), torch.cov(self.ref.T)
        self.ref_logp = float(gm.log_prob(self.ref).mean())
        self.floor = self(self.other)
        # spread of the floor: the metric between further independent pairs of true sample sets
        pairs = []
        for _ in range(4):
            a = gm.sample(n, generator=g, dtype=torch.float64)
            b = gm.sample(n, generator=g, dtype=torch.float64)
            pairs.append(Metrics._pair(self, a, b))
        self.floor_std = {k: float(torch.tensor([p[k] for p in pairs] + [self.floor[k]]).std()) for k in self.floor}

    def _pair(self, a, b):
        pa = torch.sort(a @ self.dirs, dim=0).values
        pb = torch.sort(b @ self.dirs, dim=0).values
        sw = float(((pa - pb) ** 2).mean().sqrt())
        fd = float(((a.mean(0) - b.mean(0)) ** 2).sum()) + _trace_sqrt_term(torch.cov(a.T), torch.cov(b.T))
        dl = float(self.gm.log_prob(a).mean() - self.gm.log_prob(b).mean())
        return {"SW": sw, "FD": fd, "dlogp": dl}

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1).to(torch.float64)
        if not bool(torch.isfinite(x).all()):
            return {"SW": math.nan, "FD": math.nan, "dlogp": math.nan}
        proj = torch.sort(x @ self.dirs, dim=0).values
        sw = float(((proj - self.ref_proj) ** 2).mean().sqrt())
        mu, cov = x.mean(0), torch.cov(x.T)
        fd = float(((mu - self.ref_mu) ** 2).sum()) + _trace_sqrt_term(self.ref_cov, cov)
        dlogp = float(self.gm.log_prob(x).mean()) - self.ref_logp
        return {"SW": sw, "FD": fd, "dlogp": dlogp}


def _trace_sqrt_term(c1, c2):
    # tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2) via eigen-decompositions (symmetric PSD)
    e1, v1 = torch.linalg.eigh(c1)
    s1 = (v1 * e1.clamp_min(0).sqrt()) @ v1.T
    m = s1 @ c2 @ s1
    em = torch.linalg.eigvalsh(0.5 * (m + m.T)).clamp_min(0)
    return float(torch.trace(c1) + torch.trace(c2) - 2 * em.sqrt().sum())


# ---------------------------------------------------------------------------------- reference re-implementations
class RefSDE:
    """The reference code's discrete tables for our SDE objects (re-implemented, faithful):
    VP: betas = linspace(beta_min/N, beta_max/N, N); VE: sigmas = geometric(sigma_min, sigma_max, N);
    sub-VP: none (its discretize falls back to Euler, its Langevin corrector crashes)."""

    def __init__(self, sde, N):
        self.sde, self.N = sde, N
        self.kind = type(sde).__name__
        if self.kind == "VPSDE":
            self.betas = torch.linspace(sde.beta_min / N, sde.beta_max / N, N, dtype=torch.float64)
            self.alphas = 1.0 - self.betas
        elif self.kind == "VESDE":
            self.sigmas = torch.exp(torch.linspace(math.log(sde.sigma_min), math.log(sde.sigma_max), N, dtype=torch.float64))

    def idx(self, t):
        return int(t * (self.N - 1) / self.sde.T)

    def discretize(self, x, t):
        """Forward discretisation f, G at time t (reference conventions)."""
        if self.kind == "VPSDE":
            b = float(self.betas[self.idx(t)])
            return (math.sqrt(1 - b) - 1) * x if b <= 1 else math.nan * x, math.sqrt(b)
        if self.kind == "VESDE":
            i = self.idx(t)
            s = float(self.sigmas[i])
            sp = float(self.sigmas[i - 1]) if i > 0 else 0.0
            return torch.zeros_like(x), math.sqrt(s ** 2 - sp ** 2)
        dt = 1.0 / self.N  # generic SDE.discretize: Euler
        tt = torch.tensor(t, dtype=torch.float64)
        return float(self.sde.f(tt)) * x * dt, math.sqrt(float(self.sde.g2(tt)) * dt)


def ref_sampler(sde, score_fn, n, dim, N, predictor, corrector, gen, snr=0.16, eps=None):
    """score_sde_pytorch's pc_sampler (corrector first), returning (x_mean, nfe actually used)."""
    eps = sde.sampling_eps if eps is None else eps
    R = RefSDE(sde, N)
    x = sde.prior_sampling((n, dim), generator=gen, dtype=torch.float32)
    ts = torch.linspace(sde.T, eps, N, dtype=torch.float64)
    nfe = 0

    def score(x, t):
        nonlocal nfe
        nfe += 1
        return score_fn(x, torch.full((x.shape[0],), t, dtype=x.dtype))

    x_mean = x
    for i in range(N):
        t = float(ts[i])
        if corrector == "langevin":
            if R.kind == "subVPSDE":
                raise AttributeError("'subVPSDE' object has no attribute 'alphas' (reference LangevinCorrector)")
            a = float(R.alphas[R.idx(t)]) if R.kind == "VPSDE" else 1.0
            grad = score(x, t)
            z = torch.randn(x.shape, generator=gen)
            gn = grad.reshape(n, -1).norm(dim=-1).mean()
            zn = z.reshape(n, -1).norm(dim=-1).mean()
            step = (snr * zn / gn) ** 2 * 2 * a
            x_mean = x + step * grad
            x = x_mean + torch.sqrt(step * 2) * z
        if predictor == "reverse_diffusion":
            f, G = R.discretize(x, t)
            sc = score(x, t)
            x_mean = x - (f - G ** 2 * sc)
            x = x_mean + G * torch.randn(x.shape, generator=gen)
        elif predictor == "euler_maruyama":
            dt = -1.0 / N
            tt = torch.tensor(t, dtype=torch.float64)
            drift = float(sde.f(tt)) * x - float(sde.g2(tt)) * score(x, t)
            x_mean = x + drift * dt
            x = x_mean + math.sqrt(float(sde.g2(tt)) * -dt) * torch.randn(x.shape, generator=gen)
        elif predictor == "ancestral":
            sc = score(x, t)
            if R.kind == "VPSDE":
                b = float(R.betas[R.idx(t)])
                x_mean = (x + b * sc) / math.sqrt(1 - b) if b < 1 else math.nan * x
                x = x_mean + math.sqrt(b) * torch.randn(x.shape, generator=gen)
            elif R.kind == "VESDE":
                j = R.idx(t)
                s = float(R.sigmas[j])
                sp = float(R.sigmas[j - 1]) if j > 0 else 0.0
                x_mean = x + (s ** 2 - sp ** 2) * sc
                std = math.sqrt(sp ** 2 * (s ** 2 - sp ** 2) / s ** 2)
                x = x_mean + std * torch.randn(x.shape, generator=gen)
            else:
                raise NotImplementedError("reference ancestral sampling is defined for VP and VE only")
    return x_mean, nfe


def ref_ode(sde, score_fn, n, dim, gen, rtol=1e-5, atol=1e-5, eps=1e-3):
    """score_sde_pytorch's get_ode_sampler: scipy RK45 on the flattened batch (numpy round trip on
    every evaluation), then the reverse-diffusion denoising step x_mean at eps."""
    from scipy import integrate
    x = sde.prior_sampling((n, dim), generator=gen, dtype=torch.float32)
    nfe = 0

    def ode_func(t, y):
        nonlocal nfe
        nfe += 1
        xx = torch.from_numpy(y.reshape(n, dim)).to(torch.float32)
        tt = torch.tensor(t, dtype=torch.float64)
        sc = score_fn(xx, torch.full((n,), t, dtype=torch.float32))
        drift = float(sde.f(tt)) * xx - 0.5 * float(sde.g2(tt)) * sc
        return drift.numpy().reshape(-1).astype(np.float64)

    sol = integrate.solve_ivp(ode_func, (sde.T, eps), x.numpy().reshape(-1).astype(np.float64),
                              rtol=rtol, atol=atol, method="RK45")
    x = torch.tensor(sol.y[:, -1], dtype=torch.float32).reshape(n, dim)
    # denoise: reverse-diffusion predictor's x_mean at eps with the reference tables (N = 1000)
    R = RefSDE(sde, 1000)
    f, G = R.discretize(x, eps)
    sc = score_fn(x, torch.full((n,), eps, dtype=torch.float32))
    nfe += 1
    return x - (f - G ** 2 * sc), nfe


# ---------------------------------------------------------------------------------- k-diffusion re-implementations
def kdiff_sampler(sde, score_fn, n, dim, N, name, gen, eps=None):
    """k-diffusion's sample_{euler,heun,dpmpp_2m,lms} on get_sigmas_karras(N, s_min, s_max, 7) + [0]."""
    eps = sde.sampling_eps if eps is None else eps
    s_min, s_max = float(grids.edm_sigma(sde, eps)), float(grids.edm_sigma(sde, sde.T))
    rho = 7.0
    u = torch.linspace(0, 1, N, dtype=torch.float64)
    sig = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    sig = torch.cat([sig, sig.new_zeros(1)]).tolist()
    nfe = 0

    def denoise(y, s):
        nonlocal nfe
        nfe += 1
        t = float(sde.t_from_log_snr(torch.tensor(-2.0 * math.log(s), dtype=torch.float64)))
        t = min(max(t, 0.0), sde.T)
        tt = torch.tensor(t, dtype=torch.float64)
        a, sg = float(sde.alpha(tt)), float(sde.sigma(tt))
        x = a * y
        sc = score_fn(x, torch.full((n,), t, dtype=torch.float32))
        return (x + sg ** 2 * sc) / a

    y = torch.randn(n, dim, generator=gen) * s_max
    ds, old = [], None
    for i in range(N):
        s, sn = sig[i], sig[i + 1]
        den = denoise(y, s)
        d = (y - den) / s
        if name == "euler":
            y = y + d * (sn - s)
        elif name == "heun":
            if sn == 0:
                y = y + d * (sn - s)
            else:
                y2 = y + d * (sn - s)
                d2 = (y2 - denoise(y2, sn)) / sn
                y = y + (d + d2) / 2 * (sn - s)
        elif name == "dpmpp_2m":
            tcur, tn = -math.log(s), (-math.log(sn) if sn > 0 else math.inf)
            h = tn - tcur
            if old is None or sn == 0:
                y = (sn / s) * y - math.expm1(-h) * den
            else:
                h_last = tcur - (-math.log(sig[i - 1]))
                r = h_last / h
                dd = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old
                y = (sn / s) * y - math.expm1(-h) * dd
            old = den
        elif name == "lms":
            ds.append(d)
            if len(ds) > 4:
                ds.pop(0)
            order = min(i + 1, 4)
            coeffs = [_lms_coeff(order, sig, i, j) for j in range(order)]
            y = y + sum(c * dd for c, dd in zip(coeffs, reversed(ds)))
    return y, nfe  # sigma = 0: y is the data estimate (alpha(0) = 1)


def _lms_coeff(order, t, i, j):
    from scipy import integrate

    def fn(tau):
        prod = 1.0
        for k in range(order):
            if j == k:
                continue
            prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return prod
    return integrate.quad(fn, t[i], t[i + 1], epsrel=1e-4)[0]


# ---------------------------------------------------------------------------------- configurations
def eps_at(sde, sigma_end):
    """The time where the EDM noise level sigma(t)/alpha(t) equals sigma_end."""
    return float(sde.t_from_log_snr(torch.tensor(-2.0 * math.log(sigma_end), dtype=torch.float64)))


def ours(method, per_step, grid=None, sigma_end=None, **kw):
    """Our solver at a budget: the largest steps with steps * per_step + 1 (final denoise) <= budget.
    ``sigma_end``: end where sigma/alpha = sigma_end instead of at sde.sampling_eps."""
    def run(sde, score_fn, n, dim, budget, gen):
        steps = (budget - 1) // per_step
        if steps < 1:
            return None
        eps = "paper" if sigma_end is None else eps_at(sde, sigma_end)   # the table in docs was measured so
        out = sample(sde, score_fn, (n, dim), method=method, steps=steps, generator=gen, grid=grid, eps=eps, **kw)
        return out.samples, out.nfe
    return run


def ref(pred, corr):
    per = (pred != "none") + (corr != "none")

    def run(sde, score_fn, n, dim, budget, gen):
        return ref_sampler(sde, score_fn, n, dim, budget // per, pred, corr, gen)
    return run


def kdiff(name, sigma_end=None):
    def run(sde, score_fn, n, dim, budget, gen):
        N = (budget + 1) // 2 if name == "heun" else budget
        eps = None if sigma_end is None else eps_at(sde, sigma_end)
        return kdiff_sampler(sde, score_fn, n, dim, N, name, gen, eps=eps)
    return run


CONFIGS = {
    # ours
    "ours: dpmpp_2m (quadratic)": ours("dpmpp_2m", 1, "quadratic"),
    "ours: dpmpp_3m (quadratic)": ours("dpmpp_3m", 1, "quadratic"),
    "ours: dpmpp_3m (log_snr)": ours("dpmpp_3m", 1, "log_snr"),
    "ours: dpmpp_2m (log_snr, end at sigma/alpha=0.01)": ours("dpmpp_2m", 1, "log_snr", sigma_end=0.01),
    "ours: dpmpp_3m (log_snr, end at sigma/alpha=0.01)": ours("dpmpp_3m", 1, "log_snr", sigma_end=0.01),
    "ours: heun (karras)": ours("heun", 2, "karras"),
    "ours: ddim (quadratic)": ours("ddim", 1, "quadratic"),
    "ours: dpmpp_2m_sde (quadratic)": ours("dpmpp_2m_sde", 1, "quadratic"),
    "ours: ancestral (quadratic)": ours("ancestral", 1, "quadratic"),
    "ours: euler_maruyama (uniform_t)": ours("euler_maruyama", 1, "uniform_t"),
    "ours: pc rd+langevin (uniform_t)": ours("pc", 2, "uniform_t", snr=0.16),
    # the paper's reference code, re-implemented
    "ref: pc rd+langevin": ref("reverse_diffusion", "langevin"),
    "ref: euler_maruyama": ref("euler_maruyama", "none"),
    "ref: ancestral": ref("ancestral", "none"),
    # k-diffusion, re-implemented
    "kdiff: euler": kdiff("euler"),
    "kdiff: heun": kdiff("heun"),
    "kdiff: dpmpp_2m": kdiff("dpmpp_2m"),
    "kdiff: lms": kdiff("lms"),
    "kdiff: dpmpp_2m (sigma_min=0.01)": kdiff("dpmpp_2m", sigma_end=0.01),
}
QUICK_1000 = ("ours: dpmpp_3m (quadratic)", "ours: euler_maruyama (uniform_t)", "ours: ancestral (quadratic)",
              "ref: pc rd+langevin", "ref: euler_maruyama", "kdiff: dpmpp_2m")

SDES = {"vp": lambda: score_sde.VPSDE(), "subvp": lambda: score_sde.subVPSDE(), "ve": lambda: score_sde.VESDE()}


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return "nan" if not math.isfinite(v) else f"{v:.3f}"


SHARP_DEFAULTS = ("dpmpp_2m", "dpmpp_3m", "unipc", "deis", "dpm_solver_2s", "dpm_solver_3s", "dpmpp_2s", "heun",
                  "edm", "ddim", "dpmpp_2m_sde", "ancestral", "euler_maruyama")
SHARP_TUNED = {
    "dpmpp_2m, lower_order_final=False": ("dpmpp_2m", {"lower_order_final": False}),
    "dpmpp_2m + UniC": ("dpmpp_2m", {"corrector": "unic"}),
    "unipc order 2": ("unipc", {"solver_order": 2}),
    "unipc bh1": ("unipc", {"variant": "bh1"}),
    "unipc noise form": ("unipc", {"predict_x0": False}),
    "deis + UniC": ("deis", {"corrector": "unic"}),
    "dpmpp_2m, paper end (eps='paper', quadratic)": ("dpmpp_2m", {"eps": "paper", "grid": "quadratic"}),
}


def sharp_main(args):
    """Per-mode metrics on the sharp mixture for every solver and SDE (see the module docstring)."""
    from score_sde.evaluation import mode_metrics, mode_metrics_floor, sharp_mixture, sliced_wasserstein
    from score_sde.sampling import SOLVERS
    n = args.n or (2048 if args.quick else 8192)
    budgets = (10, 20, 50) if args.quick else (10, 20, 50, 100)
    gm = sharp_mixture(args.seed)
    g = torch.Generator().manual_seed(10_000 + args.seed)
    fl = mode_metrics_floor(gm, n, repeats=3, generator=g)
    ref = gm.sample(n, generator=g, dtype=torch.float64)
    sw_fl = sliced_wasserstein(gm.sample(n, generator=g, dtype=torch.float64), ref, n_projections=64,
                               generator=torch.Generator().manual_seed(1))
    fm = fl["mean"]
    print(f"# Sharp mixture (sharp_mixture(seed={args.seed}), 64 dims, 8 modes), n={n}\n")
    print(f"Monte Carlo floors (true samples of n={n}; mean +- std over 3 sets): spread "
          f"{100 * fm['spread']:.2f}% +- {100 * fl['std']['spread']:.2f}%, centre {fm['centre']:.3f}, "
          f"weight TV {fm['weight_tv']:.3f}, SW {sw_fl:.4f}. Cells: spread error % [centre / floor, "
          f"weight TV / floor, SW]; 'grows' flags a spread error that rises by more than 2 floor std "
          f"from one budget to the next.\n")
    configs = {f"{m} (defaults)": (m, {}) for m in SHARP_DEFAULTS}
    configs.update({f"{k} (tuned)": v for k, v in SHARP_TUNED.items()})
    if args.only:
        configs = {k: v for k, v in configs.items() if any(s_ in k for s_ in args.only.split(","))}
    for sname in args.sdes.split(","):
        sde = SDES[sname]()
        sf = gm.score_fn(sde)
        print(f"## {type(sde).__name__}\n")
        print("| solver | " + " | ".join(f"{b} NFE" for b in budgets) + " | trend |")
        print("|---|" + "---|" * (len(budgets) + 1))
        for name, (method, kw) in configs.items():
            kw = dict(kw)
            per = SOLVERS[method](sde, **{k: v for k, v in kw.items() if k not in ("eps", "grid")}).evals_per_step
            cells, spreads = [], []
            for b in budgets:
                steps = (b - 1) // per
                if steps < 1:
                    cells.append("-")
                    continue
                out = sample(sde, sf, (n, *gm.event_shape), method=method, steps=steps,
                             generator=torch.Generator().manual_seed(args.seed + 1), **kw)
                mm = mode_metrics(gm, out.samples)
                if not math.isfinite(mm["spread"]):
                    cells.append("nan")
                    continue
                sw = sliced_wasserstein(out.samples, ref, n_projections=64, generator=torch.Generator().manual_seed(1))
                spreads.append(mm["spread"])
                cells.append(f"{100 * mm['spread']:.2f}% [{mm['centre'] / fm['centre']:.1f}, "
                             f"{mm['weight_tv'] / fm['weight_tv']:.1f}, {sw:.4f}]" + (f" ({out.nfe})" if out.nfe != b else ""))
            grows = any(b_ > a_ + 2 * fl["std"]["spread"] for a_, b_ in zip(spreads, spreads[1:]))
            print(f"| {name} | " + " | ".join(cells) + f" | {'grows' if grows else 'falls'} |")
        print()


#: the issue-14 quality bar: best solver's spread error at 10 / 20 / 50 NFE (fractions)
BAR = {10: 0.02, 20: 0.007, 50: 0.005}
#: deterministic solvers checked at their documented default step count and at twice it
BAR_DETERMINISTIC = ("unipc", "dpmpp_2m", "dpmpp_3m", "deis", "dpm_solver_2s", "dpm_solver_3s", "dpmpp_2s",
                     "heun", "ddim", "edm")
#: stochastic samplers (long: 1000 steps by default), run with ``--bar --stochastic``
BAR_STOCHASTIC = ("euler_maruyama", "ancestral", "dpmpp_2m_sde", "pc")


def bar_main(args):
    """The issue-14 quality-bar quantities at the defaults (only method and steps named).

    Per SDE and mixture seed: (1) every deterministic solver at 10 / 20 / 50 NFE (the largest step
    count that fits) with spread error, centre / floor and weight TV / floor, and whether the best
    solver meets the bar (spread <= 2% / 0.7% / 0.5%; centre and weight within floor + 2 std from
    20 NFE); (2) every solver at its documented default step count and twice it, flagged 'grows'
    when the spread error rises by more than 2 floor std to a value more than 2 floor std above
    the floor."""
    from score_sde.evaluation import mode_metrics, mode_metrics_floor, sharp_mixture
    from score_sde.sampling import SOLVERS
    n = args.n or 8192
    seeds = [int(v) for v in args.bar_seeds.split(",")]
    methods = BAR_STOCHASTIC if args.stochastic else BAR_DETERMINISTIC
    if args.only:
        methods = tuple(m for m in args.only.split(",") if m)
    t_start = time.time()
    print(f"# Quality bar (issue 14): sharp mixtures, n={n}, defaults only\n")
    for seed in seeds:
        gm = sharp_mixture(seed)
        fl = mode_metrics_floor(gm, n, repeats=3, generator=torch.Generator().manual_seed(10_000 + seed))
        fm, fs = fl["mean"], fl["std"]
        print(f"## sharp_mixture(seed={seed}): floors spread {100 * fm['spread']:.2f}% +- {100 * fs['spread']:.2f}%, "
              f"centre {fm['centre']:.4f} +- {fs['centre']:.4f}, weight TV {fm['weight_tv']:.4f} +- "
              f"{fs['weight_tv']:.4f}\n")
        at_floor = lambda mm, k: mm[k] <= fm[k] + 2 * fs[k]   # noqa: E731
        for sname in args.sdes.split(","):
            sde = SDES[sname]()
            sf = gm.score_fn(sde)
            gen = lambda: torch.Generator().manual_seed(seed + 1)   # noqa: E731

            def run(method, steps):
                out = sample(sde, sf, (n, *gm.event_shape), method=method, steps=steps, generator=gen())
                return mode_metrics(gm, out.samples), out.nfe
            if not args.stochastic:
                print(f"### {type(sde).__name__}: spread error % [centre / floor, weight TV / floor] at a budget\n")
                print("| solver | " + " | ".join(f"{b} NFE" for b in BAR) + " |")
                print("|---|" + "---|" * len(BAR))
                best = {b: (math.inf, None, None) for b in BAR}
                for method in methods:
                    per = SOLVERS[method](sde).evals_per_step
                    cells = []
                    for b in BAR:
                        steps = (b - 1) // per
                        if steps < 1:
                            cells.append("-")
                            continue
                        mm, nfe = run(method, steps)
                        if math.isfinite(mm["spread"]) and mm["spread"] < best[b][0]:
                            best[b] = (mm["spread"], method, mm)
                        cells.append(f"{100 * mm['spread']:.2f}% [{mm['centre'] / fm['centre']:.1f}, "
                                     f"{mm['weight_tv'] / fm['weight_tv']:.1f}]" + (f" ({nfe})" if nfe != b else ""))
                    print(f"| {method} | " + " | ".join(cells) + " |")
                verdict = []
                for b, (v, method, mm) in best.items():
                    misses = [] if v <= BAR[b] else ["spread"]
                    if b >= 20:
                        misses += [k for k in ("centre", "weight_tv") if not at_floor(mm, k)]
                    verdict.append(f"{b} NFE: {method} {100 * v:.2f}% (bar {100 * BAR[b]:.1f}%"
                                   f"{', centre and weight within floor + 2 std' if b >= 20 else ''}) "
                                   + ("MEETS" if not misses else f"MISSES ({', '.join(misses)})"))
                print("\nbest: " + "; ".join(verdict) + "\n")
            print(f"### {type(sde).__name__}: default step count d and 2d (spread error %, NFE)\n")
            print("| solver | d | spread at d | spread at 2d | trend |")
            print("|---|---|---|---|---|")
            for method in methods:
                d = SOLVERS[method](sde).default_steps
                (m1, n1), (m2, n2) = run(method, d), run(method, 2 * d)
                # grows: rises by more than 2 floor std and is not within 2 std of the floor itself
                grows = not (m2["spread"] <= m1["spread"] + 2 * fs["spread"]
                             or m2["spread"] <= fm["spread"] + 2 * fs["spread"])
                print(f"| {method} | {d} | {100 * m1['spread']:.2f}% ({n1}) | {100 * m2['spread']:.2f}% ({n2}) | "
                      f"{'grows' if grows else 'falls / at floor'} |")
            print(flush=True)
    print(f"(total {time.time() - t_start:.0f} s)")


def margin_main(args):
    """The quality bar over several mixtures and sampler seeds (defaults only): per SDE and budget,
    the best-default solver's spread error, centre / floor and weight TV / floor on each mixture,
    with their mean and worst, beside the floors' mean and worst; a row per method in ``--only``
    (default: unipc). Mixtures ``--bar-seeds`` (default 101-104 and 107, not used for tuning), sampler
    seed ``777 + mixture seed``."""
    from score_sde.evaluation import mode_metrics, mode_metrics_floor, sharp_mixture
    from score_sde.sampling import SOLVERS
    n = args.n or 8192
    seeds = [int(v) for v in (args.bar_seeds if args.bar_seeds != "0" else "101,102,103,104,107").split(",")]
    methods = tuple(m for m in (args.only or "unipc").split(",") if m)
    t_start = time.time()
    print(f"# Quality bar over mixtures {seeds} (sampler seed 777 + mixture seed), n={n}, defaults only\n")
    floors = {}
    for seed in seeds:
        gm = sharp_mixture(seed)
        fl = mode_metrics_floor(gm, n, repeats=3, generator=torch.Generator().manual_seed(10_000 + seed))
        floors[seed] = (gm, fl)
        fm, fs = fl["mean"], fl["std"]
        print(f"- mixture {seed}: floors spread {100 * fm['spread']:.2f}% +- {100 * fs['spread']:.2f}%, centre "
              f"{fm['centre']:.4f} +- {fs['centre']:.4f}, weight TV {fm['weight_tv']:.4f} +- {fs['weight_tv']:.4f}")
    print()
    for sname in args.sdes.split(","):
        sde = SDES[sname]()
        print(f"## {type(sde).__name__}: spread error % [centre / floor, weight TV / floor] per mixture; mean, worst\n")
        print("| method | NFE | " + " | ".join(f"mixture {s_}" for s_ in seeds) + " | mean | worst | bar |")
        print("|---|---|" + "---|" * (len(seeds) + 3))
        for method in methods:
            per = SOLVERS[method](sde).evals_per_step
            for b, bar in BAR.items():
                steps = (b - 1) // per
                vals, cells = [], []
                for seed in seeds:
                    gm, fl = floors[seed]
                    out = sample(sde, gm.score_fn(sde), (n, *gm.event_shape), method=method, steps=steps,
                                 generator=torch.Generator().manual_seed(777 + seed))
                    mm = mode_metrics(gm, out.samples)
                    r = (mm["spread"], mm["centre"] / fl["mean"]["centre"], mm["weight_tv"] / fl["mean"]["weight_tv"])
                    vals.append(r)
                    cells.append(f"{100 * r[0]:.2f}% [{r[1]:.2f}, {r[2]:.2f}]")
                mean = [sum(v[i] for v in vals) / len(vals) for i in range(3)]
                worst = [max(v[i] for v in vals) for i in range(3)]
                print(f"| {method} | {b} | " + " | ".join(cells) + f" | {100 * mean[0]:.2f}% [{mean[1]:.2f}, {mean[2]:.2f}] | "
                      f"{100 * worst[0]:.2f}% [{worst[1]:.2f}, {worst[2]:.2f}] | {100 * bar:.1f}% |", flush=True)
        print()
    fl_s = [floors[s_][1]["mean"]["spread"] for s_ in seeds]
    print(f"Spread floors: mean {100 * sum(fl_s) / len(fl_s):.2f}%, worst {100 * max(fl_s):.2f}% "
          f"(true samples of the same n score this much on their own).")
    print(f"(total {time.time() - t_start:.0f} s)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sharp", action="store_true", help="per-mode metrics on the sharp 64-D mixture (issue 14)")
    p.add_argument("--bar", action="store_true", help="the issue-14 quality-bar quantities at the defaults, n=8192")
    p.add_argument("--bar-seeds", default="0", help="sharp-mixture seeds of --bar (--margin: default 101-104,107)")
    p.add_argument("--margin", action="store_true", help="the quality bar over several fresh mixtures and seeds "
                   "(mean and worst), defaults only; methods from --only (default unipc)")
    p.add_argument("--stochastic", action="store_true", help="with --bar: the stochastic samplers (long)")
    p.add_argument("--quick", action="store_true", help="n=1000, budget 1000 only for a few solvers on VP")
    p.add_argument("--n", type=int, default=None, help="samples per run (default 2000; 1000 with --quick)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--components", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-seed", type=int, default=None, help="seed of the samplers' generator (default seed + 1)")
    p.add_argument("--sdes", default="vp,subvp,ve")
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    p.add_argument("--metric", default="SW", choices=["SW", "FD", "dlogp"], help="metric of the main tables")
    p.add_argument("--only", default=None, help="comma-separated substrings of configuration names to run")
    p.add_argument("--no-ode", action="store_true", help="skip the adaptive ODE table")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.margin:
        return margin_main(args)
    if args.bar:
        return bar_main(args)
    if args.sharp:
        return sharp_main(args)
    import functools
    import builtins
    global print
    print = functools.partial(builtins.print, flush=True)
    n = args.n or (1000 if args.quick else 2000)
    budgets = [int(b) for b in args.budgets.split(",")]
    gm = score_sde.GaussianMixture.random(args.dim, args.components, seed=args.seed)
    met = Metrics(gm, n, seed=args.seed)
    fl = met.floor
    print(f"# Sampler accuracy vs NFE: exact score of GaussianMixture.random({args.dim}, {args.components}, "
          f"seed={args.seed}), n={n}\n")
    fs = met.floor_std
    print(f"Monte Carlo floor (two independent true sample sets of n={n}; +- its std over 5 such pairs): "
          f"SW {fl['SW']:.3f} +- {fs['SW']:.3f}, FD {fl['FD']:.3f} +- {fs['FD']:.3f}, "
          f"dlogp {fl['dlogp']:+.3f} +- {fs['dlogp']:.3f}. Deterministic solvers share one prior draw, so their "
          f"converged values coincide; differences within ~2 std of the floor are noise.\n")
    configs = CONFIGS
    if args.only:
        keys = args.only.split(",")
        configs = {k: v for k, v in CONFIGS.items() if any(s in k for s in keys)}
    t_start = time.time()
    for sname in args.sdes.split(","):
        sde = SDES[sname]()
        sf = gm.score_fn(sde)
        rows = {}
        for name, run in configs.items():
            rows[name] = {}
            for b in budgets:
                if args.quick and b >= 1000 and (sname != "vp" or name not in QUICK_1000):
                    continue
                gen = torch.Generator().manual_seed(args.seed + 1 if args.run_seed is None else args.run_seed)
                t0 = time.time()
                try:
                    res = run(sde, sf, n, args.dim, b, gen)
                except Exception as e:  # the reference crashes on some combinations: report it
                    rows[name][b] = ("crash", type(e).__name__)
                    continue
                if res is None:
                    continue
                x, nfe = res
                m = met(x)
                rows[name][b] = (m, nfe, time.time() - t0)
        print(f"## {type(sde).__name__}: {args.metric} (lower is better; floor {fl[args.metric]:.3f}); "
              f"FD and dlogp in brackets\n")
        print("| solver | " + " | ".join(f"{b} NFE" for b in budgets) + " |")
        print("|---|" + "---|" * len(budgets))
        best = {}
        for name in configs:
            cells = []
            for b in budgets:
                r = rows[name].get(b)
                if r is None:
                    cells.append("-")
                elif r[0] == "crash":
                    cells.append(f"crash ({r[1]})")
                else:
                    m, nfe, _ = r
                    v = m[args.metric]
                    fam = name.split(":")[0]
                    for k in ("SW", "FD", "dlogp"):
                        if math.isfinite(m[k]):
                            best[(k, fam, b)] = min(best.get((k, fam, b), math.inf), abs(m[k]))
                    extra = f" [{fmt(m['FD'])}, {m['dlogp']:+.2f}]" if math.isfinite(m["FD"]) else ""
                    cells.append(f"{fmt(v)}{extra}" + (f" ({nfe})" if nfe != b else ""))
            print(f"| {name} | " + " | ".join(cells) + " |")
        print()
        print("Best per family (ours / ref / kdiff; |dlogp| for dlogp):\n")
        print("| metric (floor) | " + " | ".join(f"{b} NFE" for b in budgets) + " |")
        print("|---|" + "---|" * len(budgets))
        for k in ("SW", "FD", "dlogp"):
            cells = []
            for b in budgets:
                o, r_, kd = (best.get((k, f, b), math.nan) for f in ("ours", "ref", "kdiff"))
                cells.append(f"{fmt(o)} / {fmt(r_)} / {fmt(kd)}")
            print(f"| {k} ({abs(fl[k]):.3f} +- {met.floor_std[k]:.3f}) | " + " | ".join(cells) + " |")
        print()
    if not args.no_ode:
        print("## Adaptive probability-flow ODE (VP): ours torchdiffeq dopri5 vs reference scipy RK45\n")
        print("| solver | rtol=atol | NFE | SW | FD | dlogp | seconds |")
        print("|---|---|---|---|---|---|---|")
        sde = score_sde.VPSDE()
        sf = gm.score_fn(sde)
        for tol in (1e-2, 1e-3, 1e-5):
            for name in ("ours: ode dopri5", "ref: scipy RK45"):
                gen = torch.Generator().manual_seed(args.seed + 1)
                t0 = time.time()
                if name.startswith("ours"):
                    out = sample(sde, sf, (n, args.dim), method="ode", rtol=tol, atol=tol, generator=gen)
                    x, nfe = out.samples, out.nfe
                else:
                    x, nfe = ref_ode(sde, sf, n, args.dim, gen, rtol=tol, atol=tol)
                m = met(x)
                print(f"| {name} | {tol:g} | {nfe} | {fmt(m['SW'])} | {fmt(m['FD'])} | {m['dlogp']:+.3f} | {time.time() - t0:.1f} |")
        print()
    print(f"(total {time.time() - t_start:.0f} s)")


if __name__ == "__main__":
    main()

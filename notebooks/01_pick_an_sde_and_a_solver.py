# %% [markdown]
# # 1. Pick an SDE and a solver
#
# A score-based generative model has two independent choices that this notebook puts side by side:
#
# * the **forward SDE** that turns data into noise: VP (the continuous limit of DDPM), sub-VP, or VE
#   (the continuous limit of SMLD/NCSN), see `docs/sde.md`;
# * the **solver** that runs the reverse process: Euler-Maruyama on the reverse SDE, a
#   predictor-corrector sampler, the probability-flow ODE with an adaptive solver, or a fast
#   high-order solver (DPM-Solver++, EDM's Heun), see `docs/sampling.md`.
#
# To separate those choices from the quality of a trained network, the "model" here is the **exact
# score** of a known 2-D Gaussian mixture (`score_sde.GaussianMixture`): `gm.score_fn(sde)` is the true
# `grad log p_t` under any SDE. Every difference you see below is therefore the SDE's and the
# solver's, and quality is measured against exact samples. Notebook 2 does the same with trained
# networks.
#
# Everything uses the public API: `score_sde.VPSDE / subVPSDE / VESDE`, `score_sde.sampling.sample`,
# `score_sde.evaluation.exact.sliced_wasserstein`.

# %%
import time

import matplotlib.pyplot as plt
import torch

import score_sde
from nb_helpers import QUICK, mixture, print_summary, sliced_w2_to, start  # notebooks/nb_helpers.py

# Quick mode (SCORE_SDE_NOTEBOOK_QUICK=1) shrinks training and sample sizes so that the test suite
# can run this notebook in seconds; the numbers and conclusions below are those of the full run.
T_START = start()


# %%
# the data: a random 2-D mixture of 8 full-covariance Gaussians (reproducible from its seed)
gm = mixture()
N_SAMPLES = 400 if QUICK else 4000       # samples per solver run
N_REF = 2000 if QUICK else 20000         # exact reference samples
g = torch.Generator().manual_seed(0)
reference = gm.sample(N_REF, generator=g)

fig, ax = plt.subplots(figsize=(4.5, 4.5))
xs = torch.linspace(-5, 5, 200)
grid = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1).reshape(-1, 2)
ax.contourf(xs, xs, gm.log_prob(grid).reshape(200, 200).clamp_min(-12), levels=30, cmap="Blues")
ax.scatter(*reference[:1000].T, s=1, c="k", alpha=0.5)
ax.set_title("data: exact log-density and 1000 samples"); ax.set_aspect("equal")
plt.show()

# %% [markdown]
# ## Three forward SDEs on the same data
#
# All three are linear: `x_t = alpha(t) x_0 + sigma(t) z`. VP and sub-VP shrink the data
# (`alpha -> 0`) while adding noise; sub-VP adds less (`sigma_subVP = sigma_VP^2`). VE keeps the data
# (`alpha = 1`) and adds noise up to `sigma_max`, which should be about the largest distance between
# two data points (the paper's rule); our data spans about 8 units, so `sigma_max = 10`. The schedule
# view (`alpha`, `sigma`, log-SNR `lambda = log(alpha^2 / sigma^2)`) is what the fast solvers use, so
# they work for every SDE.

# %%
sdes = {
    "VP": score_sde.VPSDE(),
    "sub-VP": score_sde.subVPSDE(),
    "VE": score_sde.VESDE(sigma_min=0.01, sigma_max=10.0),
}
t = torch.linspace(1e-3, 1.0, 400, dtype=torch.float64)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
for name, sde in sdes.items():
    axes[0].plot(t, sde.alpha(t), label=name)
    axes[1].semilogy(t, sde.sigma(t), label=name)
    axes[2].plot(t, sde.log_snr(t), label=name)
for ax, title in zip(axes, ["alpha(t)", "sigma(t)", "log-SNR lambda(t)"]):
    ax.set_title(title); ax.set_xlabel("t"); ax.legend()
plt.tight_layout(); plt.show()
from score_sde.sampling import defaults

# the samplers end where the noise level sigma/alpha reaches defaults.END_SIGMA (0.001) for every SDE;
# eps="paper" gives the paper's end times sde.sampling_eps instead
for name, sde in sdes.items():
    eps = defaults.resolve_eps(sde, None)
    print(f"{name:7s} prior std {sde.prior_std:5.1f}   default end t = {eps:.2e} (sigma/alpha = "
          f"{defaults.END_SIGMA:g})   paper's end t = {sde.sampling_eps:g} (sigma/alpha = "
          f"{float(sde.sigma(torch.tensor(sde.sampling_eps)) / sde.alpha(torch.tensor(sde.sampling_eps))):.1e})")

# %% [markdown]
# ### Forward trajectories
#
# Top rows: the marginal `p_t` at a few times, drawn exactly with `sde.perturb`. Bottom row: the
# first coordinate of 20 sample paths, simulated with the SDE's exact Gaussian transition between
# grid times (`sde.discretize` returns the step `x_t = x_s + f + G z`).

# %%
times = [0.0, 0.05, 0.2, 0.5, 1.0]
x0 = reference[:1000]
fig, axes = plt.subplots(len(sdes), len(times), figsize=(13, 8), sharex="row", sharey="row")
for r, (name, sde) in enumerate(sdes.items()):
    for c, tt in enumerate(times):
        xt = x0 if tt == 0 else sde.perturb(x0, tt, generator=g)[0]
        axes[r, c].scatter(*xt.T, s=1, alpha=0.4)
        axes[r, c].set_title(f"{name}, t = {tt}")
plt.tight_layout(); plt.show()

n_grid = 50 if QUICK else 200
fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
for ax, (name, sde) in zip(axes, sdes.items()):
    x = x0[:20].clone()
    path = [x[:, 0]]
    for i in range(1, n_grid + 1):
        f, G = sde.discretize(x, i / n_grid, dt=1.0 / n_grid)     # exact step from (i-1)/n to i/n
        x = x + f + G[:, None] * torch.randn(x.shape, generator=g)
        path.append(x[:, 0])
    ax.plot(torch.linspace(0, 1, n_grid + 1), torch.stack(path), lw=0.7)
    ax.set_title(f"{name}: forward paths, first coordinate"); ax.set_xlabel("t")
plt.tight_layout(); plt.show()

# %% [markdown]
# ### Reverse trajectories
#
# `sample(..., callback=...)` hands every intermediate state to a callback. The reverse SDE
# (Euler-Maruyama) moves the particles along noisy paths; the probability-flow ODE (here
# DPM-Solver++(3M), which integrates it in few large steps) moves them along smooth deterministic
# paths. All three start from the same 40 prior draws (red) and end at the black points; the
# right panel integrates the same ODE with classical RK4 (`method="ode", ode_method="rk4"`).

# %%
from score_sde.sampling import sample

def trajectory(sde, x_init, method, steps, **options):
    states = [x_init]
    out = sample(sde, gm.score_fn(sde), method=method, steps=steps, x_init=x_init,
                 generator=torch.Generator().manual_seed(3), callback=lambda info: states.append(info["x"]),
                 **options)
    return torch.stack(states + [out.samples]), out

vp = sdes["VP"]
x_T = vp.prior_sampling((40, 2), generator=torch.Generator().manual_seed(4))   # the same start points
fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
for ax, (method, steps, options) in zip(axes, [("euler_maruyama", 50 if QUICK else 200, {}), ("dpmpp_3m", 20, {}),
                                               ("ode", 25, {"ode_method": "rk4"})]):
    path, out = trajectory(vp, x_T, method, steps, **options)
    ax.contour(xs, xs, gm.log_prob(grid).reshape(200, 200).clamp_min(-12), levels=12, cmap="Greys", alpha=0.5)
    ax.plot(path[:, :, 0], path[:, :, 1], lw=0.6, alpha=0.7)
    ax.scatter(*x_T.T, s=8, c="r", zorder=3)
    ax.scatter(*out.samples.T, s=8, c="k", zorder=3)
    ax.set_xlim(-5, 5); ax.set_ylim(-5, 5); ax.set_aspect("equal")
    ax.set_title(f"VP, {method}: NFE = {out.nfe}")
plt.tight_layout(); plt.show()

# %% [markdown]
# ## Quality against NFE
#
# For each SDE and solver we draw `N_SAMPLES` points at several step counts and measure the sliced
# 2-Wasserstein distance to exact samples (`sliced_wasserstein`). NFE is the number of score
# evaluations actually made (`SampleOutput.nfe`, including the final denoising step). Even exact
# samples are not at distance 0 from the reference: the grey band is the spread of the distance
# between fresh exact samples of the same size and the reference, the floor below which differences
# are sampling noise.
#
# Solvers (names in `score_sde.sampling.SOLVERS`):
#
# * `euler_maruyama`: the reverse SDE, first order; 1 NFE per step.
# * `pc`: predictor-corrector, reverse-diffusion predictor plus one Langevin corrector step; 2 NFE per
#   step. In two dimensions, per-sample Langevin step sizes (the package default) blow up where the
#   score is small, so we use batch-mean norms (`langevin_norm="batch"`, the paper's rule).
# * `ode`: the probability-flow ODE with torchdiffeq's adaptive `dopri5`; NFE set by the tolerance.
# * `heun`: EDM's second-order Heun method (default grid: uniform log-SNR); 2 NFE per step.
# * `dpmpp_3m`: DPM-Solver++(3M), third-order multistep, 1 NFE per step, uniform log-SNR grid.
# * `unipc`: UniPC, multistep, 1 NFE per step; from 15 steps on third order with its UniC corrector
#   (fourth order, no extra call) on the `log_snr_early` grid, below that second order on
#   `log_snr_late` (the package's defaults, chosen on sharp 64-D mixtures: `docs/sampling.md`).

# %%
sw = sliced_w2_to(reference)     # sliced 2-Wasserstein distance to the exact reference samples

floor = [sw(gm.sample(N_SAMPLES, generator=g)) for _ in range(2 if QUICK else 8)]
print(f"noise floor (exact samples): {min(floor):.3f} .. {max(floor):.3f}")

STEPS = [10] if QUICK else [5, 10, 20, 50, 100, 200]
TOLS = [1e-3] if QUICK else [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]
solvers = {
    "euler_maruyama": ({}, STEPS),
    "pc": (dict(predictor="reverse_diffusion", corrector="langevin", snr=0.16, langevin_norm="batch"),
           [max(s // 2, 2) for s in STEPS]),
    "heun": ({}, [max(s // 2, 2) for s in STEPS]),
    "dpmpp_3m": ({}, [s for s in STEPS if s <= 50]),
    "unipc": ({}, [s for s in STEPS if s <= 50]),
}
results = {}   # (sde, solver) -> list of (nfe, sliced W2)
t0 = time.perf_counter()
for sname, sde in sdes.items():
    score_fn = gm.score_fn(sde)
    for method, (options, steps_list) in solvers.items():
        for steps in steps_list:
            out = sample(sde, score_fn, (N_SAMPLES, 2), method=method, steps=steps,
                         generator=torch.Generator().manual_seed(2), **options)
            results.setdefault((sname, method), []).append((out.nfe, sw(out.samples)))
    for tol in TOLS:
        out = sample(sde, score_fn, (N_SAMPLES, 2), method="ode", rtol=tol, atol=tol,
                     generator=torch.Generator().manual_seed(2))
        results.setdefault((sname, "ode"), []).append((out.nfe, sw(out.samples)))
print(f"{sum(len(v) for v in results.values())} sampler runs in {time.perf_counter() - t0:.0f} s")

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
for ax, sname in zip(axes, sdes):
    ax.axhspan(min(floor), max(floor), color="grey", alpha=0.3, label="exact samples")
    for method in ["euler_maruyama", "pc", "ode", "heun", "dpmpp_3m", "unipc"]:
        nfe, dist = zip(*sorted(results[(sname, method)]))
        ax.loglog(nfe, dist, "o-", label=method)
    ax.set_title(sname); ax.set_xlabel("NFE (score evaluations)")
axes[0].set_ylabel("sliced W2 to exact samples"); axes[0].legend()
plt.tight_layout(); plt.show()

print(f"{'SDE':7s} {'solver':15s} " + "  ".join(f"{'NFE':>4s} {'SW2':>6s}" for _ in range(6)))
for (sname, method), rows in results.items():
    print(f"{sname:7s} {method:15s} " + "  ".join(f"{n:4d} {d:6.3f}" for n, d in sorted(rows)))

# %% [markdown]
# ### Which solver, for how many evaluations?
#
# The cell below reads the table for you: for each SDE, the fewest evaluations at which each solver
# lands inside the band of exact samples (`-` when no tested budget did). Inside the band the metric
# cannot rank solvers any more: with 4000 samples, two sets of exact samples already differ by
# 0.02-0.09. (A deterministic solver maps the same prior draws to the same points, so its curve
# flattens at the distance of that one sample set, which may sit anywhere in or near the band.)

# %%
best = {}
for sname in sdes:
    reach = {}
    for method in ["euler_maruyama", "pc", "ode", "heun", "dpmpp_3m", "unipc"]:
        ok = [n for n, d in sorted(results[(sname, method)]) if d <= max(floor)]
        reach[method] = ok[0] if ok else None
    best[sname] = reach
    print(f"{sname:7s} " + "   ".join(f"{m}: {n if n is not None else '-'}" for m, n in reach.items()))

# %% [markdown]
# ## What to take away
#
# With the exact score, so that only the SDE and the solver matter (full run, 4000 samples; the
# numbers are in the table above):
#
# * **Below about 20 evaluations the solver matters more than anything else.** At 5-6 NFE
#   UniPC (second order on its few-step grid) is the best solver on VP and sub-VP (sliced W2 0.40,
#   against 0.55 for predictor-corrector, 0.70 for DPM-Solver++(3M), 1.75 for Euler-Maruyama and
#   55 for Heun, which only gets 2 steps); on VE DPM-Solver++(3M) is (0.27, against 0.99 for UniPC
#   and 4-16 for the others). On VP and sub-VP DPM-Solver++(3M) reaches the band of exact samples
#   at 11 NFE, UniPC at 21, the adaptive `dopri5` at 27-33, Heun and Euler-Maruyama at 51.
#   (On this smooth 2-D mixture third order pays off at 11 NFE; on sharp 64-D mixtures it
#   overshoots at 10 NFE, which is why UniPC drops to second order below 15 steps:
#   `docs/sampling.md`, *Sharp data*.)
# * **Stochastic first-order solvers need more steps**: Euler-Maruyama gets near the band at 20
#   NFE (0.14) and inside it from 51; the predictor-corrector sampler spends half of its budget on
#   the Langevin corrector, so at a fixed NFE it trails Euler-Maruyama on VP and sub-VP (inside the
#   band from 101 NFE; on VE from 51).
# * **The end point is a noise level.** Every sampler ends where `sigma/alpha` reaches 0.001 (the
#   cell above prints the times: VP t = 1e-5, sub-VP 6e-3, VE 7e-4) and then takes Tweedie's
#   denoising step, so the three SDEs are compared on equal terms; the paper's end times
#   (`eps="paper"`) leave noise from 1e-4 (sub-VP, VE) to 1e-2 (VP), which shrinks modes narrower
#   than that (visible on sharp data, not on this mixture). VE's noise spans 0.001 to 10:
#   Euler-Maruyama with 5 steps blows up there (16.5), while the solvers on log-SNR grids stay
#   stable.
# * **On VE the deterministic solvers all converge to the same sample set**, whose distance (0.095)
#   lies just above the band: that is the sampling noise of one set of 4000 points, not a bias.
#
# A reasonable default is `sample(sde, score_fn, shape, method="unipc", steps=19)` (20 NFE; or
# `method="dpmpp_3m"` on smooth low-dimensional data, or the adaptive `method="ode"` when you want
# a tolerance rather than a budget), and Euler-Maruyama or `pc` over 100+ steps when you want the
# stochastic samplers the paper used for its best FID.
# Notebook 2 checks these conclusions with trained networks, and finds an important caveat: few-step
# ODE solvers need a network that predicts the data well at high noise.

# %%
summary = {
    "floor": [min(floor), max(floor)],
    "results": {f"{s}/{m}": rows for (s, m), rows in results.items()},
    "fewest_nfe_inside_band": best,
}
print_summary(summary, T_START)

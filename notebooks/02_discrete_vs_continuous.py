# %% [markdown]
# # 2. Discrete against continuous
#
# DDPM (Ho et al. 2020) trains on N = 1000 integer noise levels and samples by ancestral steps on
# that grid. The score-SDE view (Song et al. 2021) trains over continuous t and samples with any
# solver of the reverse SDE or the probability-flow ODE. This notebook trains one model each way on
# the same data with the same network and budget, and samples **each model with each kind of
# sampler**:
#
# | | discrete sampler (DDPM ancestral) | continuous solvers (Euler-Maruyama, DPM-Solver++) |
# |---|---|---|
# | **discrete model** (DDPM loss) | DDPM as published | DDPM model, continuous solvers |
# | **continuous model** (DSM loss) | continuous model, DDPM steps | score SDE as published |
#
# The data is a known 2-D Gaussian mixture, so we can also run every sampler with the **exact
# score**: the gap between a model's curve and the exact-score curve is the network's error, the
# rest is the sampler's.
#
# Public API used: `score_sde.models.MLP`, `score_sde.ScoreModel`, `score_sde.losses.ddpm_loss`,
# `score_sde.losses.DSMLoss`, `score_sde.training.train`, `score_sde.sampling.sample`,
# `score_sde.evaluation.exact.sliced_wasserstein`.

# %%
import time

import matplotlib.pyplot as plt
import torch

import score_sde
from nb_helpers import QUICK, mixture, print_summary, sliced_w2_to, start, train_small  # notebooks/nb_helpers.py

# Quick mode (SCORE_SDE_NOTEBOOK_QUICK=1) shrinks training and sample sizes so that the test suite
# can run this notebook in seconds; the numbers and conclusions below are those of the full run.
T_START = start()


# %%
# the data: a random 2-D mixture of 8 full-covariance Gaussians (reproducible from its seed)
gm = mixture()
N_TRAIN = 20000
N_SAMPLES = 300 if QUICK else 3000       # samples per sampler run
N_REF = 2000 if QUICK else 20000         # held-out exact samples to compare with
g = torch.Generator().manual_seed(0)
train_x = gm.sample(N_TRAIN, generator=g)      # the training set (a fixed finite sample)
reference = gm.sample(N_REF, generator=g)      # held out

# %% [markdown]
# ## Two models, one difference
#
# Both models are the same residual MLP (`score_sde.models.MLP`, 128 wide, 3 blocks, DDPM's
# sinusoidal time embedding), start from the same weights, predict the noise (`output="eps"`) and
# train for the same number of Adam steps on the same batches, under the same VP SDE with DDPM's
# schedule on `N = 1000` steps. They differ only in where the loss looks:
#
# * **discrete**: `ddpm_loss(sde)`: `||eps_hat - z||^2` at a uniformly drawn integer step
#   `i in {0..999}` (time `t_i = (i+1)/N`), the network conditioned on `i` (`time_label="timestep"`);
# * **continuous**: `DSMLoss(sde, reduce="mean")`: the same squared error at `t ~ U[1e-5, 1]`, the
#   network conditioned on `999 t` as in the paper's VP models.
#
# A network trained on integer steps still works at any t: `ScoreModel` hands it the float label
# `N t - 1`, so continuous solvers can query it between grid points.
#
# A third model anticipates what we will find: it is trained like the continuous one, but its
# network output is read as a **denoiser** with EDM's preconditioning (`output="edm"`, Karras et al.
# 2022) instead of as the noise; it conditions on EDM's noise label through random Fourier features.
# The loss is the same denoising score-matching loss.

# %%
from score_sde.losses import DSMLoss, ddpm_loss
from score_sde.models import MLP, ScoreModel

sde = score_sde.VPSDE(beta_min=0.1, beta_max=20.0, N=1000)
TRAIN_STEPS = 60 if QUICK else 1500

def make_net():
    torch.manual_seed(0)                       # the same initial weights for both models
    return MLP(2, hidden=128, num_blocks=3, embedding_type="positional")

setups = {
    "discrete model": (ScoreModel(make_net(), sde, output="eps", time_label="timestep"), ddpm_loss(sde)),
    "continuous model": (ScoreModel(make_net(), sde, output="eps", time_label="t", label_scale=999.0),
                         DSMLoss(sde, reduce="mean")),
}
torch.manual_seed(0)
setups["continuous, EDM output"] = (
    ScoreModel(MLP(2, hidden=128, num_blocks=3, embedding_type="fourier"), sde, output="edm", sigma_data=1.5),
    DSMLoss(sde, reduce="mean"))
models, curves = {}, {}
for name, (model, loss_fn) in setups.items():
    t0 = time.perf_counter()
    result = train_small(model, loss_fn, train_x, TRAIN_STEPS, log_every=max(TRAIN_STEPS // 20, 1))
    models[name] = result.ema.module.eval()        # sample from the EMA weights
    curves[name] = [(r["step"], r["loss"]) for r in result.log if "loss" in r]
    print(f"{name}: {TRAIN_STEPS} steps in {time.perf_counter() - t0:.0f} s, final loss {curves[name][-1][1]:.3f}")

fig, ax = plt.subplots(figsize=(5, 3.2))
for name, c in curves.items():
    ax.plot(*zip(*c), label=name)
ax.set_xlabel("Adam step"); ax.set_ylabel("training loss (mean over batch)"); ax.legend()
plt.tight_layout(); plt.show()

# %% [markdown]
# How good are the networks? Evaluate them, and the exact score, on the *same* held-out points,
# times and noises with the continuous loss (the exact score attains the minimum possible value):

# %%
probe_loss = DSMLoss(sde, reduce="mean")
x_eval = reference[:2000]
t_eval = probe_loss.sample_t(x_eval.shape[0], generator=torch.Generator().manual_seed(5))
z_eval = torch.randn(x_eval.shape, generator=torch.Generator().manual_seed(6))
score_fns = {**models, "exact score": gm.score_fn(sde)}
held_out_loss = {}
with torch.no_grad():
    for name, fn in score_fns.items():
        held_out_loss[name] = float(probe_loss(fn, x_eval, t=t_eval, noise=z_eval).mean())
        print(f"held-out DSM loss, {name:22s}: {held_out_loss[name]:.4f}")

# %% [markdown]
# ## Every model with every sampler
#
# * `ddpm`: discrete DDPM ancestral sampling on the SDE's own grid `t_i = (i+1)/N`; with fewer than
#   N steps it strides over the grid (DDPM's "respacing"). 1 NFE per step, the last step is the
#   posterior step to t = 0.
# * `euler_maruyama`: the reverse SDE in continuous time, equal steps in log-SNR (its default grid)
#   down to the default end point, where the noise level `sigma/alpha` is 0.001 (VP: t = 1e-5).
# * `dpmpp_3m`: DPM-Solver++(3M) on the probability-flow ODE, uniform steps in log-SNR, to the
#   same end point.
#
# Quality is the sliced 2-Wasserstein distance to held-out exact samples; the grey band is the same
# distance for fresh exact samples (the noise floor).

# %%
from score_sde.sampling import sample

sw = sliced_w2_to(reference)     # sliced 2-Wasserstein distance to the held-out exact samples

floor = [sw(gm.sample(N_SAMPLES, generator=g)) for _ in range(2 if QUICK else 6)]
print(f"noise floor (exact samples): {min(floor):.3f} .. {max(floor):.3f}")

STEPS = ({"ddpm": [10], "euler_maruyama": [10], "dpmpp_3m": [10]} if QUICK else
         {"ddpm": [10, 25, 100, 1000], "euler_maruyama": [10, 25, 100], "dpmpp_3m": [5, 10, 25, 50]})
results, final = {}, {}
t0 = time.perf_counter()
for model_name, fn in score_fns.items():
    for method, steps_list in STEPS.items():
        for steps in steps_list:
            out = sample(sde, fn, (N_SAMPLES, 2), method=method, steps=steps,
                         generator=torch.Generator().manual_seed(2))
            results.setdefault((model_name, method), []).append((out.nfe, sw(out.samples)))
            final[(model_name, method)] = out.samples
print(f"{sum(len(v) for v in results.values())} sampler runs in {time.perf_counter() - t0:.0f} s")

# %%
colors = {"discrete model": "tab:blue", "continuous model": "tab:orange", "continuous, EDM output": "tab:green",
          "exact score": "0.4"}
styles = {"ddpm": "o-", "euler_maruyama": "s--", "dpmpp_3m": "^:"}
fig, ax = plt.subplots(figsize=(7, 4.5))
ax.axhspan(min(floor), max(floor), color="grey", alpha=0.3, label="exact samples (noise floor)")
for (model_name, method), rows in results.items():
    nfe, dist = zip(*sorted(rows))
    ax.loglog(nfe, dist, styles[method], color=colors[model_name], label=f"{model_name} + {method}",
              alpha=0.6 if model_name == "exact score" else 1.0)
ax.set_xlabel("NFE (score evaluations)"); ax.set_ylabel("sliced W2 to held-out samples")
ax.legend(fontsize=7, ncol=2); plt.tight_layout(); plt.show()

fig, axes = plt.subplots(len(models), 3, figsize=(11, 3.4 * len(models)), sharex=True, sharey=True)
for r, model_name in enumerate(models):
    for c, method in enumerate(STEPS):
        x = final[(model_name, method)][:2000]
        axes[r, c].scatter(*x.T, s=1, alpha=0.4)
        nfe, dist = sorted(results[(model_name, method)])[-1]
        axes[r, c].set_title(f"{model_name} + {method}\nNFE {nfe}, SW2 {dist:.3f}", fontsize=9)
axes[0, 0].set_xlim(-5, 5); axes[0, 0].set_ylim(-5, 5)
plt.tight_layout(); plt.show()

print(f"{'pairing':40s} " + "  ".join(f"{'NFE':>4s} {'SW2':>6s}" for _ in range(4)))
for (model_name, method), rows in results.items():
    print(f"{model_name + ' + ' + method:40s} " + "  ".join(f"{n:4d} {d:6.3f}" for n, d in sorted(rows)))

# %% [markdown]
# ### Why do the ODE solvers fail on the noise-predicting models?
#
# Every deterministic solver goes through the data prediction `D(x, t) = (x - sigma eps_hat) / alpha`
# (DPM-Solver++ uses it directly). An error `delta` in the predicted noise becomes an error
# `sigma / alpha * delta` in `D`: at t = 1 under this VP SDE, `sigma / alpha` is about 150. The
# reverse SDE and ancestral sampling damp such errors with their noise; the probability-flow ODE
# carries them to the end. The cell below compares each model's data prediction with the exact
# posterior mean `gm.denoise(x, t, sde)` on noised held-out points.

# %%
print(f"{'t':>5s} {'sigma/alpha':>11s}  " + "  ".join(f"{name:>22s}" for name in models))
denoiser_error = {}
with torch.no_grad():
    for tt in [1.0, 0.7, 0.4, 0.1, 0.01]:
        x_t, _ = sde.perturb(x_eval, tt, generator=torch.Generator().manual_seed(9))
        t_vec = torch.full((x_t.shape[0],), tt)
        exact_d = gm.denoise(x_t, t_vec, sde)
        errs = [float((m.denoise(x_t, t_vec) - exact_d).norm(dim=1).pow(2).mean().sqrt()) for m in models.values()]
        denoiser_error[tt] = dict(zip(models, errs))
        ratio = float(sde.sigma(torch.tensor(tt)) / sde.alpha(torch.tensor(tt)))
        print(f"{tt:5.2f} {ratio:11.1f}  " + "  ".join(f"{e:22.3f}" for e in errs))
print("(RMS error of the data prediction D(x_t) against the exact posterior mean)")

# %% [markdown]
# ## What to conclude
#
# Full run (1500 training steps per model, 3000 samples per run; numbers in the tables above, with
# the current sampling defaults: end point `sigma/alpha = 0.001`, Euler-Maruyama on a log-SNR grid):
#
# * **The three networks are equally good at what they were trained for.** Their held-out denoising
#   losses are 0.2567-0.2574 against 0.2544 for the exact score: training on DDPM's 1000 integer
#   steps or on continuous t makes no measurable difference on this data.
# * **Discrete and continuous models are interchangeable under every sampler.** The DDPM-trained
#   model sampled by continuous Euler-Maruyama (0.121 at 26 NFE) is as good as the continuous model
#   (0.111), and the continuous model sampled by DDPM's ancestral steps is as good as the DDPM model
#   (0.124 against 0.128 at 25 NFE). Queried between its grid points, the discrete model just works.
# * **The training objective matters less than the sampler and the budget.** At 25-26 NFE
#   Euler-Maruyama and DDPM's ancestral steps are alike for every model (0.09-0.12 against
#   0.12-0.13); at 10-11 NFE Euler-Maruyama is better with the exact score (0.18 against 0.31) and
#   with the EDM-output model (0.25 against 0.32), as good with the DDPM model (0.31) and worse
#   with the continuous eps model (0.55 against 0.31). Both get near the noise floor (0.04-0.07) by
#   100 NFE (0.03-0.08), and DDPM's full 1000 steps add nothing over 100.
# * **Few-step ODE solvers need a network that predicts the data well at high noise.** With the
#   exact score, DPM-Solver++(3M) is the best solver at 11 NFE (0.074; 0.69 at 6 NFE), but with the
#   two noise-predicting models it fails at every budget (1.4-2.6): their data prediction
#   `D = (x - sigma eps_hat) / alpha` is off by about 5 at t = 1, where `sigma / alpha = 152`
#   magnifies a small noise error, and a deterministic solver carries that error to the end, where
#   a stochastic one damps it. The same training with the output read as EDM's preconditioned
#   denoiser (`output="edm"`) has a four times smaller error there (1.1), and DPM-Solver++(3M) works
#   (0.13 at 11 NFE; 0.69 at 6, like the exact score); its curve levels off at 0.10, the network's
#   own error.
#
# What to do: train in continuous time (it costs nothing and frees the choice of times and solvers);
# sample noise-predicting (`output="eps"`) models with stochastic samplers (Euler-Maruyama or
# ancestral, 25-100 steps), and use a data-predicting parameterisation (`output="edm"` or `"x0"`)
# when you want few-step ODE solvers. (Large image models with eps outputs are usually accurate
# enough at high noise for DPM-Solver; a small MLP on 2-D data is not.)

# %%
summary = {
    "floor": [min(floor), max(floor)],
    "held_out_loss": held_out_loss,
    "results": {f"{m}/{s}": rows for (m, s), rows in results.items()},
    "denoiser_error": {str(k): v for k, v in denoiser_error.items()},
}
print_summary(summary, T_START)

"""Tests of controllable generation (score_sde.conditional) against the exact oracles of score_sde.analytic."""
import math

import pytest
import torch

import score_sde
from score_sde import analytic as an
from score_sde import conditional as cond
from score_sde.sampling import sample
from score_sde.sampling.predictor_corrector import CORRECTORS, PREDICTORS

torch.set_num_threads(1)

SDES = {"vp": score_sde.VPSDE, "subvp": score_sde.subVPSDE, "ve": score_sde.VESDE}
F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def mixture(dim=4, k=3, seed=1, full=True):
    return score_sde.GaussianMixture.random(dim=dim, n_components=k, seed=seed, spread=3.0, full_cov=full)


# ---------------------------------------------------------------------------------------- oracles
@pytest.mark.parametrize("noise_std", [0.3, 1.5])
def test_posterior_of_single_gaussian_is_the_textbook_formula(noise_std):
    g = gen(0)
    D, M = 5, 3
    L = torch.randn(D, D, generator=g, dtype=F64)
    S = L @ L.T + 0.2 * torch.eye(D, dtype=F64)
    mu = torch.randn(D, generator=g, dtype=F64)
    A = torch.randn(M, D, generator=g, dtype=F64)
    y = torch.randn(M, generator=g, dtype=F64)
    post = an.condition_on_measurement(an.Gaussian(mu, S), A, y, noise_std)
    # information form: P^-1 = S^-1 + A^T A / s^2, m = P (S^-1 mu + A^T y / s^2)
    P = torch.linalg.inv(torch.linalg.inv(S) + A.T @ A / noise_std ** 2)
    m = P @ (torch.linalg.solve(S, mu) + A.T @ y / noise_std ** 2)
    assert torch.allclose(post.mixture.means[0], m, atol=1e-10)
    assert torch.allclose(post.mixture.covariances()[0], P, atol=1e-10)
    ev = torch.distributions.MultivariateNormal(A @ mu, A @ S @ A.T + noise_std ** 2 * torch.eye(M, dtype=F64))
    assert math.isclose(post.log_evidence, float(ev.log_prob(y)), rel_tol=1e-10)


def test_posterior_weights_and_masked_components():
    gm = mixture(dim=4, k=3, seed=2)
    mask = torch.tensor([True, False, True, False])
    y = torch.tensor([0.4, -0.7], dtype=F64)
    post = an.condition_on_measurement(gm, cond.Mask(mask), y, 0.0)
    covs = gm.covariances()
    # weights: w_k N(y; mu_k[obs], S_k[obs, obs]) normalised; means: the Schur-complement formula
    lw = torch.stack([torch.log(gm.weights[k]) + torch.distributions.MultivariateNormal(
        gm.means[k, mask], covs[k][mask][:, mask]).log_prob(y) for k in range(3)])
    assert torch.allclose(post.mixture.weights, torch.softmax(lw, 0), atol=1e-12)
    for k in range(3):
        Soo, Suo = covs[k][mask][:, mask], covs[k][~mask][:, mask]
        mu_u = gm.means[k, ~mask] + Suo @ torch.linalg.solve(Soo, y - gm.means[k, mask])
        assert torch.allclose(post.mixture.means[k, ~mask], mu_u, atol=1e-10)
        assert torch.allclose(post.mixture.means[k, mask], y, atol=1e-10)
    # exact samples keep the observation (the observed directions have zero posterior variance)
    xs = post.mixture.sample(100, generator=gen(1), dtype=F64)
    assert torch.allclose(xs[:, mask], y.expand(100, 2), atol=1e-9)


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("noise_std", [0.0, 0.4])
def test_conditional_score_is_the_gradient_of_the_conditional_log_density(sde_name, noise_std):
    """p_t(x_t | y) from the joint Gaussian of (x_t, y) per component, differentiated by autograd."""
    sde = SDES[sde_name]()
    gm = mixture(dim=3, k=2, seed=3)
    A = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]], dtype=F64) if noise_std == 0 else \
        torch.tensor([[0.5, -1.0, 0.3]], dtype=F64)
    y = torch.tensor([0.3, -0.5][: A.shape[0]], dtype=F64)
    post = an.condition_on_measurement(gm, A, y, noise_std).mixture
    x = torch.randn(6, 3, generator=gen(4), dtype=F64)
    t = torch.linspace(0.05, 0.95, 6, dtype=F64)
    M = A.shape[0]

    def log_cond(x):
        out = []
        for i in range(x.shape[0]):
            a, s = sde.alpha(t[i]), sde.sigma(t[i])
            terms, ev = [], []
            for k in range(gm.n_components):
                S, mu = gm.covariances()[k], gm.means[k]
                top = torch.cat([a ** 2 * S + s ** 2 * torch.eye(3, dtype=F64), a * S @ A.T], 1)
                bot = torch.cat([a * A @ S, A @ S @ A.T + noise_std ** 2 * torch.eye(M, dtype=F64)], 1)
                joint = torch.distributions.MultivariateNormal(torch.cat([a * mu, A @ mu]), torch.cat([top, bot], 0))
                terms.append(torch.log(gm.weights[k]) + joint.log_prob(torch.cat([x[i], y])))
                ev.append(torch.log(gm.weights[k]) + torch.distributions.MultivariateNormal(
                    A @ mu, A @ S @ A.T + noise_std ** 2 * torch.eye(M, dtype=F64)).log_prob(y))
            out.append(torch.logsumexp(torch.stack(terms), 0) - torch.logsumexp(torch.stack(ev), 0))
        return torch.stack(out)

    xg = x.clone().requires_grad_(True)
    lp = log_cond(xg)
    (grad,) = torch.autograd.grad(lp.sum(), xg)
    assert torch.allclose(post.score(x, t, sde), grad, rtol=1e-7, atol=1e-8)
    assert torch.allclose(post.log_prob(x, t, sde), lp.detach(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_exact_classifier_and_its_gradient(sde_name):
    sde = SDES[sde_name]()
    gm = mixture(dim=3, k=4, seed=5)
    clf = an.MixtureClassifier(gm, [0, 1, 0, 2])
    x = torch.randn(5, 3, generator=gen(6), dtype=F64)
    t = torch.tensor([0.0, 0.1, 0.3, 0.6, 1.0], dtype=F64)
    lp = clf.log_prob(x, t, sde)
    assert torch.allclose(lp.exp().sum(1), torch.ones(5, dtype=F64))
    labels = torch.tensor([0, 1, 2, 0, 1])
    xg = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(clf.log_prob(xg, t, sde).gather(1, labels[:, None]).sum(), xg)
    assert torch.allclose(clf.grad_log_prob(x, labels, t, sde), auto, rtol=1e-8, atol=1e-10)
    # Bayes: grad log p_t(x | c) = grad log p_t(x) + grad log p_t(c | x)
    for c in range(3):
        sub = clf.class_mixture(c)
        assert torch.allclose(sub.score(x, t, sde), gm.score(x, t, sde) + clf.grad_log_prob(x, c, t, sde),
                              rtol=1e-8, atol=1e-10)
    assert torch.allclose(clf.class_prior(), torch.stack([gm.weights[[0, 2]].sum(), gm.weights[1], gm.weights[3]]))


def test_classifier_guidance_and_cfg_at_scale_one_give_the_conditional_score():
    sde = score_sde.VPSDE()
    gm = mixture(dim=3, k=4, seed=7)
    clf = an.MixtureClassifier(gm, [0, 1, 1, 0])
    x = torch.randn(8, 3, generator=gen(8), dtype=F64)
    t = torch.linspace(0.02, 1.0, 8, dtype=F64)
    exact = clf.class_mixture(1).score(x, t, sde)
    cg = cond.classifier_guidance(gm.score_fn(sde), clf.logits_fn(sde), 1, scale=1.0)
    assert torch.allclose(cg(x, t), exact, rtol=1e-8, atol=1e-10)
    model = clf.conditional_score_fn(sde)
    cfg = cond.classifier_free_guidance(model, 1, scale=1.0)
    assert torch.allclose(cfg(x, t), exact, rtol=1e-8, atol=1e-10)
    assert torch.allclose(cond.classifier_free_guidance(model, 1, scale=0.0)(x, t), gm.score(x, t, sde))
    s_u = gm.score(x, t, sde)
    assert torch.allclose(cond.classifier_free_guidance(model, 1, scale=3.0)(x, t), s_u + 3.0 * (exact - s_u),
                          rtol=1e-8, atol=1e-10)
    # classifier guidance at scale s: score + s grad log p(c | x)
    assert torch.allclose(cond.classifier_guidance(gm.score_fn(sde), clf.logits_fn(sde), 1, scale=2.5)(x, t),
                          s_u + 2.5 * (exact - s_u), rtol=1e-8, atol=1e-10)


def test_class_conditional_sampling_matches_the_sub_mixture():
    sde = score_sde.VPSDE()
    gm = mixture(dim=2, k=4, seed=9)
    clf = an.MixtureClassifier(gm, [0, 1, 1, 0])
    fn = cond.classifier_free_guidance(clf.conditional_score_fn(sde), 0, scale=1.0)
    out = sample(sde, fn, (4000, 2), method="dpmpp_2m", steps=30, generator=gen(0), dtype=F64)
    sub = clf.class_mixture(0)
    se = (sub.covariance().diagonal() / 4000).sqrt()
    assert ((out.samples.mean(0) - sub.mean()).abs() < 4 * se).all()
    # every sample is classified as class 0 far more often than the class prior would give
    frac = clf.log_prob(out.samples, 0.0 * torch.ones(4000, dtype=F64) + 1e-3, sde).argmax(1).eq(0).double().mean()
    assert frac > 0.97


# ---------------------------------------------------------------------------------------- operators
def test_colorization_is_the_papers_orthogonal_decoupling():
    op = cond.Colorization(3)
    A = op.matrix((3, 2, 2))
    assert torch.allclose(A @ A.T, torch.eye(4, dtype=F64), atol=1e-12)
    # the paper: decouple with an orthogonal M whose first column is (1,1,1)/sqrt(3), set the first
    # decoupled channel to the observation, couple back with M^T
    q, _ = torch.linalg.qr(torch.cat([torch.ones(3, 1, dtype=F64), torch.randn(3, 2, generator=gen(0), dtype=F64)], 1))
    Mo = q * torch.sign(q[0, 0])
    x = torch.randn(5, 3, 2, 2, generator=gen(1), dtype=F64)
    grey = torch.rand(5, 1, 2, 2, generator=gen(2), dtype=F64)
    y = op.from_grey(grey)
    dec = torch.einsum("bihw,ij->bjhw", x, Mo)
    dec[:, :1] = y
    ref = torch.einsum("bjhw,ij->bihw", dec, Mo)
    got = cond.Measurement(op, y).project(x, y)
    assert torch.allclose(got, ref, atol=1e-12)
    assert torch.allclose(got.mean(1, keepdim=True), grey, atol=1e-12)


def test_linear_operator_adjoint_and_matrix():
    g = gen(3)
    W = torch.randn(2, 5, generator=g, dtype=F64)
    op = cond.LinearOperator(lambda x: x @ W.T, lambda y: y @ W)
    assert torch.allclose(op.matrix((5,)), W)
    x, y = torch.randn(4, 5, generator=g, dtype=F64), torch.randn(4, 2, generator=g, dtype=F64)
    assert torch.allclose((op(x) * y).sum(), (x * op.adjoint(y)).sum())
    mask = torch.rand(2, 3, generator=g) > 0.4
    m = cond.Mask(mask)
    A = m.matrix((2, 3))
    xx = torch.randn(3, 2, 3, generator=g, dtype=F64)
    assert torch.equal(m(xx), xx[:, mask])
    assert torch.allclose(A @ A.T, torch.eye(int(mask.sum()), dtype=F64))


# ---------------------------------------------------------------------------------------- replacement
@pytest.mark.parametrize("sde_name", list(SDES))
def test_replacement_inserts_a_fresh_forward_noised_observation(sde_name):
    sde = SDES[sde_name]()
    mask = torch.tensor([True, False, True])
    y = torch.tensor([0.8, -1.2], dtype=F64)
    hook = cond.Replacement(sde, cond.Measurement(cond.Mask(mask), y), generator=gen(0))
    x = torch.randn(20000, 3, generator=gen(1), dtype=F64)
    t = 0.4
    a, s = float(sde.alpha(torch.tensor(t))), float(sde.sigma(torch.tensor(t)))
    out = hook(x, t)
    assert torch.equal(out[:, 1], x[:, 1])                       # unobserved part kept
    assert torch.allclose(out[:, mask].mean(0), a * y, atol=4 * s / math.sqrt(20000))
    assert torch.allclose(out[:, mask].std(0), torch.full((2,), s, dtype=F64), rtol=0.03)
    assert not torch.allclose(out[:, mask], y.expand(20000, 2))  # never clean data at t > 0
    assert torch.equal(hook(x, 0.0)[:, mask], y.expand(20000, 2))


def test_replacement_with_noisy_measurement_adds_only_the_missing_noise():
    sde = score_sde.VPSDE()
    y = torch.tensor([0.5], dtype=F64)
    hook = cond.Replacement(sde, cond.Measurement(cond.Mask(torch.tensor([True, False])), y, noise_std=0.2),
                            generator=gen(0))
    x = torch.randn(20000, 2, generator=gen(1), dtype=F64)
    t = 0.5
    a, s = float(sde.alpha(torch.tensor(t))), float(sde.sigma(torch.tensor(t)))
    out = hook(x, t)
    assert abs(float(out[:, 0].std()) - math.sqrt(s ** 2 - (0.2 * a) ** 2)) < 0.03 * s
    t_small = 1e-3                                               # sigma < alpha * noise_std: left alone
    assert torch.equal(hook(x, t_small), x)


def test_sample_after_step_hook_contract():
    sde = score_sde.VPSDE()
    gm = mixture(dim=2, k=2)
    calls = []

    def hook(x, t):
        calls.append(t)
        return x
    sample(sde, gm.score_fn(sde), (4, 2), method="pc", steps=5, corrector="langevin", n_steps=2, snr=0.05,
           generator=gen(0), after_step=hook)
    assert len(calls) == 5 * 3                                   # after the predictor and each corrector step
    calls.clear()
    sample(sde, gm.score_fn(sde), (4, 2), method="heun", steps=5, generator=gen(0), after_step=hook)
    assert len(calls) == 5
    for method in ("dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "ode", "sdeint"):
        with pytest.raises(ValueError, match="after_step"):
            sample(sde, gm.score_fn(sde), (4, 2), method=method, generator=gen(0), after_step=hook)
    # the solver continues from the hook's return value
    out = sample(sde, gm.score_fn(sde), (4, 2), method="ancestral", steps=5, generator=gen(0),
                 final_step="none", after_step=lambda x, t: torch.zeros_like(x))
    assert torch.equal(out.samples, torch.zeros(4, 2))


PC_COMBOS = [(p, c) for p in PREDICTORS for c in CORRECTORS if not (p == "none" and c == "none")]


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("predictor,corrector", PC_COMBOS)
def test_every_predictor_and_corrector_inpaints(sde_name, predictor, corrector):
    """Small inpainting runs with the exact prior score: finite, observation kept exactly, NFE exact."""
    sde = SDES[sde_name]()
    gm = mixture(dim=4, k=2, seed=11)
    mask = torch.tensor([[True, False], [False, True]])
    gm.event_shape = (2, 2)
    y = torch.tensor([[0.3, -0.4]])
    out = cond.replacement_sample(sde, gm.score_fn(sde), cond.Measurement(cond.Mask(mask), y), (16, 2, 2),
                                  method="pc", predictor=predictor, corrector=corrector, snr=0.05, steps=8,
                                  generator=gen(0))
    x = out.samples
    assert x.shape == (16, 2, 2) and bool(torch.isfinite(x).all())
    assert torch.equal(x[:, mask], y.expand(16, 2))
    assert out.nfe == 8 * ((predictor != "none") + (corrector != "none")) + 1


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("method,steps,opts", [("ancestral", 100, {}), ("heun", 20, {}), ("ddim", 40, {}),
                                               ("pc", 150, {"corrector": "langevin", "snr": 0.01})])
def test_replacement_with_the_exact_conditional_score_is_exact(sde_name, method, steps, opts):
    """Given y, the observed part of x_t is N(alpha y, sigma^2) and independent of the rest, so
    replacement preserves p_t(x_t | y): with the exact conditional score it samples p(x0 | y)."""
    sde = SDES[sde_name]()
    gm = mixture(dim=3, k=2, seed=12)
    mask = torch.tensor([True, False, False])
    y = torch.tensor([0.2], dtype=F64)
    post = an.condition_on_measurement(gm, cond.Mask(mask), y).mixture
    n = 3000
    out = cond.replacement_sample(sde, post.score_fn(sde), cond.Measurement(cond.Mask(mask), y), (n, 3),
                                  method=method, steps=steps, generator=gen(1), dtype=F64, **opts)
    _check_moments(out.samples, post, n)


def _check_moments(xs, post, n, k=4.5):
    mu, cov = post.mean(), post.covariance()
    se = (cov.diagonal().clamp_min(0) / n).sqrt()
    assert ((xs.mean(0) - mu).abs() <= k * se + 1e-9).all(), (xs.mean(0), mu)
    var = xs.var(0)
    se_var = cov.diagonal() * math.sqrt(2.0 / n) * 1.5 + 1e-12       # mixture tails: a little slack
    assert ((var - cov.diagonal()).abs() <= k * se_var + 1e-9).all(), (var, cov.diagonal())


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("method,steps", [("ancestral", 100), ("dpmpp_2m", 25), ("heun", 20), ("ode", None)])
def test_solvers_with_the_exact_conditional_score_sample_the_noisy_posterior(sde_name, method, steps):
    sde = SDES[sde_name]()
    gm = mixture(dim=3, k=3, seed=13)
    A = torch.tensor([[0.7, -0.5, 0.2]], dtype=F64)
    post = an.condition_on_measurement(gm, A, torch.tensor([0.6], dtype=F64), noise_std=0.3).mixture
    n = 3000
    opts = {"steps": steps} if steps else {"rtol": 1e-5, "atol": 1e-5}
    out = sample(sde, post.score_fn(sde), (n, 3), method=method, generator=gen(2), dtype=F64, **opts)
    _check_moments(out.samples, post, n)


def test_every_solver_has_a_documented_budget_and_the_benchmark_runs_it():
    """SOLVER_BUDGETS covers every solver (a new solver must get a measured budget) and holds only
    options the solver accepts; the benchmark's Table 2 reads this table, not its own copy."""
    import importlib.util
    from pathlib import Path

    from score_sde.sampling import SOLVERS

    assert set(cond.SOLVER_BUDGETS) == set(SOLVERS)
    sde = score_sde.VPSDE()
    for name in SOLVERS:
        kw = cond.solver_budget(name)
        kw.pop("steps", None)
        kw.pop("grid", None)
        SOLVERS[name](sde, **kw)                    # raises on an option the solver does not take
    with pytest.raises(ValueError, match="no measured budget"):
        cond.solver_budget("no_such_solver")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "conditional_benchmark.py"
    spec = importlib.util.spec_from_file_location("conditional_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.BUDGETS is cond.SOLVER_BUDGETS


def _mode_histogram(prior, xs):
    """Fraction of samples whose most responsible prior component is k (the posterior's modes are the
    prior's components, reweighted)."""
    yv, v = prior._components(xs, None, None)
    return torch.bincount(prior._log_resp(yv, v).argmax(1), minlength=prior.n_components).to(F64) / xs.shape[0]


@pytest.mark.parametrize("sde_name,method,seed", [("vp", "dpmpp_3m", 21), ("vp", "dpmpp_3m", 22), ("ve", "heun", 21),
                                                  ("ve", "heun", 22), ("subvp", "dpmpp_2m_sde", 21)])
def test_solvers_at_their_documented_budget_sample_the_exact_posterior(sde_name, method, seed):
    """At its budget from SOLVER_BUDGETS a solver with the exact conditional score draws the exact
    posterior: mode weights, per-dimension means and variances within Monte Carlo error, for a
    two-mode posterior of a sharp 4-D mixture (inpainting, and a noisy projection)."""
    sde = SDES[sde_name]()
    g = gen(seed)
    k, dim = 4, 4
    shared = torch.randn(2, 2, generator=g, dtype=F64) * 2.0
    means = torch.cat([shared.repeat_interleave(2, 0), torch.randn(k, 2, generator=g, dtype=F64) * 2.0], 1)
    stds = 0.05 + 0.15 * torch.rand(k, dim, generator=g, dtype=F64)
    prior = score_sde.GaussianMixture(means, torch.diag_embed(stds ** 2),
                                      0.5 + torch.rand(k, generator=g, dtype=F64))
    mask = torch.tensor([True, True, False, False])
    y = means[0, :2] + 0.05 * torch.randn(2, generator=g, dtype=F64)
    A = torch.tensor([[0.6, 0.8, 0.0, 0.0]], dtype=F64)
    for op, yy, ns in ((cond.Mask(mask), y, 0.0), (A, A @ means[0] + 0.02, 0.1)):
        post = an.condition_on_measurement(prior, op, yy, ns).mixture
        assert (post.weights > 0.05).sum() >= 2                      # a two-mode posterior
        n = 3000
        out = sample(sde, post.score_fn(sde), (n, dim), method=method, generator=gen(seed + 100), dtype=F64,
                     **cond.solver_budget(method))
        w = post.weights
        se_w = (w * (1 - w) / n).sqrt()
        assert ((_mode_histogram(prior, out.samples) - w).abs() <= 4.5 * se_w + 1e-3).all()
        _check_moments(out.samples, post, n)


def test_repaint_resampling_keeps_the_observation_and_counts_calls():
    sde = score_sde.VESDE()
    gm = mixture(dim=3, k=2, seed=14)
    mask = torch.tensor([False, True, True])
    y = torch.tensor([0.1, -0.3], dtype=F64)
    post = an.condition_on_measurement(gm, cond.Mask(mask), y).mixture
    out = cond.replacement_sample(sde, post.score_fn(sde), cond.Measurement(cond.Mask(mask), y), (2000, 3),
                                  method="ancestral", steps=40, resample=3, generator=gen(3), dtype=F64)
    assert out.nfe == 40 * 3 + 1
    assert torch.equal(out.samples[:, mask], y.expand(2000, 2))
    _check_moments(out.samples, post, 2000)


# ---------------------------------------------------------------------------------------- DPS
def test_dps_fits_a_noisy_measurement_and_counts_calls():
    sde = score_sde.VPSDE()
    gm = mixture(dim=4, k=3, seed=15)
    A = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]], dtype=F64)
    x_true = gm.sample(1, generator=gen(4), dtype=F64)
    y = x_true @ A.T
    op = cond.LinearOperator(lambda x: x @ A.T.to(x.dtype), lambda v: v @ A.to(v.dtype))
    meas = cond.Measurement(op, y, noise_std=0.05)
    out = cond.dps_sample(sde, gm.score_fn(sde), meas, (500, 4), steps=200, zeta=0.1, generator=gen(5), dtype=F64)
    assert out.nfe == 201
    prior = gm.sample(500, generator=gen(6), dtype=F64)
    res = (out.samples @ A.T - y).norm(dim=1).median()
    assert res < 0.25 * (prior @ A.T - y).norm(dim=1).median()
    # the guidance score works with every solver (here a multistep one)
    fn = cond.dps_score(sde, gm.score_fn(sde), meas, scale=1.0)
    out2 = sample(sde, fn, (500, 4), method="dpmpp_2m", steps=30, generator=gen(7), dtype=F64)
    assert (out2.samples @ A.T - y).norm(dim=1).median() < 0.5 * (prior @ A.T - y).norm(dim=1).median()
    with pytest.raises(ValueError, match="orthonormal"):
        cond.replacement_sample(sde, gm.score_fn(sde), meas, (4, 4), method="ancestral")


# ---------------------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    sde = score_sde.VPSDE()
    gm = mixture(dim=4, k=2)
    meas = cond.Measurement(cond.Mask(torch.tensor([True, False, True])), torch.zeros(2))
    with pytest.raises(ValueError, match="mask of shape"):
        cond.replacement_sample(sde, gm.score_fn(sde), meas, (4, 4), method="ancestral", steps=3)
    good = cond.Measurement(cond.Mask(torch.tensor([True, False, True, False])), torch.zeros(3))
    with pytest.raises(ValueError, match="y has shape"):
        cond.replacement_sample(sde, gm.score_fn(sde), good, (4, 4), method="ancestral", steps=3)
    ok = cond.Measurement(cond.Mask(torch.tensor([True, False, True, False])), torch.zeros(2))
    with pytest.raises(ValueError, match="cannot run the replacement"):
        cond.replacement_sample(sde, gm.score_fn(sde), ok, (4, 4), method="dpmpp_2m")
    with pytest.raises(ValueError, match="resample"):
        cond.replacement_sample(sde, gm.score_fn(sde), ok, (4, 4), method="ancestral", resample=0)
    for run in (lambda **kw: cond.replacement_sample(sde, gm.score_fn(sde), ok, method="ancestral", steps=3, **kw),
                lambda **kw: cond.dps_sample(sde, gm.score_fn(sde), ok, steps=3, **kw)):
        with pytest.raises(ValueError, match="disagrees with x_init"):
            run(shape=(5, 4), x_init=torch.zeros(4, 4))
        with pytest.raises(ValueError, match="give shape"):
            run()
    with pytest.raises(ValueError, match="observes nothing"):
        cond.Mask(torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="noise_std"):
        cond.Measurement(cond.Mask(torch.ones(2, dtype=torch.bool)), torch.zeros(2), noise_std=-1)
    clf = an.MixtureClassifier(gm, [0, 1])
    with pytest.raises(ValueError, match=r"label must lie in \[0, 2\)"):
        cond.classifier_free_guidance(clf.conditional_score_fn(sde), 5)
    with pytest.raises(ValueError, match=r"label must lie in \[0, 2\)"):
        cond.classifier_guidance(gm.score_fn(sde), clf.logits_fn(sde), 2, n_classes=2)
    with pytest.raises(ValueError, match="classifier has 2 classes"):
        cond.classifier_guidance(gm.score_fn(sde), clf.logits_fn(sde), 3)(torch.zeros(2, 4), torch.full((2,), .5))
    with pytest.raises(ValueError, match="guidance scale"):
        cond.classifier_free_guidance(clf.conditional_score_fn(sde), 0, scale=-0.5)
    with pytest.raises(ValueError, match="guidance scale"):
        cond.classifier_guidance(gm.score_fn(sde), clf.logits_fn(sde), 0, scale=float("nan"))
    with pytest.raises(ValueError, match="label must be an integer"):
        cond.classifier_free_guidance(clf.conditional_score_fn(sde), 0.5)
    unconditional = score_sde.ScoreModel(score_sde.MLP(event_shape=4, hidden=8, num_blocks=1), sde)
    with pytest.raises(ValueError, match="unconditional"):
        cond.classifier_free_guidance(unconditional, 0)
    with pytest.raises(ValueError, match="unconditional"):
        cond.classifier_free_guidance(clf.conditional_score_fn(sde), 0, n_classes=0)
    with pytest.raises(ValueError, match="no component"):
        an.MixtureClassifier(gm, [0, 2])
    with pytest.raises(ValueError, match="zeta"):
        cond.dps_sample(sde, gm.score_fn(sde), ok, (4, 4), steps=3, zeta=-1)

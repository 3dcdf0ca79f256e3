"""The schedules of score_sde.schedules (cosine VP, EDM, linear interpolant, user alpha/sigma, DDPM beta
tables): closed forms, float32 ends, inverse log-SNR, output conversions, losses, every solver and the
likelihood with exact scores, bad input."""
import math
import re
from pathlib import Path

import pytest
import torch

import score_sde
from score_sde import (CosineVPSDE, DiscreteVPSDE, DSMLoss, EDMSDE, LinearInterpolantSDE, ScheduleSDE, ScoreModel,
                       VPSDE, flow_matching_loss)
from score_sde.sampling import SOLVERS, sample
from score_sde.schedules import ddpm_linear_betas, iddpm_cosine_betas, prior_mismatch_bpd

torch.set_num_threads(1)
F64 = torch.float64
ROOT = Path(__file__).resolve().parent.parent


def _custom():
    k = 0.497 * math.pi
    return ScheduleSDE(lambda t: torch.cos(k * t), lambda t: torch.sin(k * t))


SCHEDULES = {
    "cosine": CosineVPSDE,
    "edm": EDMSDE,
    "rectified_flow": LinearInterpolantSDE,
    "custom": _custom,
    "discrete": lambda: DiscreteVPSDE(ddpm_linear_betas(1000)),
}


@pytest.fixture(params=list(SCHEDULES))
def sde(request):
    return SCHEDULES[request.param]()


def _times(sde, n=7):
    lo = min(sde.sampling_eps, sde.likelihood_eps, sde.training_eps)
    return torch.cat([torch.logspace(math.log10(lo), math.log10(sde.T), n, dtype=F64)[:-1],
                      torch.tensor([sde.T * 0.97, sde.T], dtype=F64)])


# ------------------------------------------------------------------------------------------ closed forms
def _closed(name, t):
    """(alpha, sigma, f, g2) from the papers' formulas, float64."""
    if name == "cosine":
        s = 0.008
        phi, phi0 = (t + s) / (1 + s) * math.pi / 2, s / (1 + s) * math.pi / 2
        a = torch.cos(phi) / math.cos(phi0)
        beta = math.pi / (1 + s) * torch.tan(phi)
        return a, torch.sqrt(1 - a ** 2), -beta / 2, beta
    if name == "edm":
        return torch.ones_like(t), t, torch.zeros_like(t), 2 * t
    if name == "rectified_flow":
        return 1 - t, t, -1 / (1 - t), 2 * t / (1 - t)
    if name == "custom":
        k = 0.497 * math.pi
        return torch.cos(k * t), torch.sin(k * t), -k * torch.tan(k * t), 2 * k * torch.tan(k * t)
    b = ddpm_linear_betas(1000)
    abar = torch.cumprod(1 - b, 0)
    i = (t * 1000).round().long() - 1          # called on grid times only
    a = abar[i].sqrt()
    beta = -1000 * torch.log1p(-b[i])
    return a, torch.sqrt(1 - a ** 2), -beta / 2, beta


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_functions_match_closed_forms(name):
    sde = SCHEDULES[name]()
    t = _times(sde) if name != "discrete" else torch.tensor([1, 2, 10, 500, 999, 1000], dtype=F64) / 1000
    a, s, f, g2 = _closed(name, t)
    torch.testing.assert_close(sde.alpha(t), a, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sde.sigma(t), s, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(sde.log_snr(t), torch.log(a ** 2 / s ** 2), rtol=1e-7, atol=1e-9)
    if name == "discrete":      # f is constant on (t_{i-1}, t_i]: compare just inside each interval
        t = t - 1e-7
    torch.testing.assert_close(sde.f(t), f, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(sde.g2(t), g2, rtol=1e-7, atol=1e-12)


def test_f_and_g2_are_the_derivatives_of_the_marginal(sde):
    # f = d log alpha / dt, g^2 = d sigma^2 / dt - 2 f sigma^2 (central differences inside each interval)
    t = _times(sde)[1:-1]
    h = 1e-5 * t
    if isinstance(sde, DiscreteVPSDE):
        t = (torch.floor(t * sde.N / sde.T) + 0.5) * sde.T / sde.N
        h = torch.full_like(t, 1e-3 * sde.T / sde.N)
    fd_f = (sde.log_alpha(t + h) - sde.log_alpha(t - h)) / (2 * h)
    fd_s2 = (sde.sigma(t + h) ** 2 - sde.sigma(t - h) ** 2) / (2 * h)
    torch.testing.assert_close(sde.f(t), fd_f, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(sde.g2(t), fd_s2 - 2 * sde.f(t) * sde.sigma(t) ** 2, rtol=1e-5, atol=1e-7)


def test_inverse_log_snr_and_float32_near_the_ends(sde):
    t = _times(sde)
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-9, atol=1e-12)
    # float32: sigma keeps full relative precision at the smallest end time, alpha and the inverse near T
    t32 = t.float()
    ref = sde.sigma(t32.double())
    assert float((sde.sigma(t32).double() / ref - 1).abs().max()) < 1e-6
    ref_a = sde.alpha(t32.double())
    assert float((sde.alpha(t32).double() / ref_a - 1).abs().max()) < 1e-5
    lam32 = sde.log_snr(t32)
    assert lam32.dtype == torch.float32 and bool(torch.isfinite(lam32).all())
    back = sde.t_from_log_snr(lam32).double()
    assert float(((back - t32.double()) / t32.double()).abs().max()) < 1e-4


def test_prior_is_the_marginal_at_T_and_mismatch_is_small(sde):
    T = torch.tensor(sde.T, dtype=F64)
    assert sde.prior_std == pytest.approx(float(sde.sigma(T)))
    assert prior_mismatch_bpd(sde) < 2e-4
    # VP for comparison: its prior N(0, I) against sigma(1) < 1
    assert prior_mismatch_bpd(VPSDE()) < 1e-4


def test_custom_schedule_autograd_equals_given_derivatives_and_cosine_class():
    s = 0.008
    phi0 = s / (1 + s) * math.pi / 2
    c = math.pi / (2 * (1 + s))
    alpha = lambda t: torch.cos(phi0 + c * t) / math.cos(phi0)                  # noqa: E731
    sigma = lambda t: torch.sqrt(1 - alpha(t) ** 2)                             # noqa: E731
    auto = ScheduleSDE(alpha, sigma, T=0.9946)
    given = ScheduleSDE(alpha, sigma, T=0.9946, dalpha=lambda t: -c * torch.sin(phi0 + c * t) / math.cos(phi0),
                        dsigma=lambda t: -alpha(t) * (-c * torch.sin(phi0 + c * t) / math.cos(phi0)) / sigma(t))
    cos = CosineVPSDE(s=s, T=0.9946)
    t = torch.tensor([1e-3, 0.1, 0.5, 0.9, 0.99], dtype=F64)
    for other in (given, cos):
        torch.testing.assert_close(auto.f(t), other.f(t), rtol=1e-8, atol=0)
        torch.testing.assert_close(auto.g2(t), other.g2(t), rtol=1e-7, atol=0)
        torch.testing.assert_close(auto.t_from_log_snr(cos.log_snr(t)), t, rtol=1e-10, atol=1e-13)
    # called under no_grad (as the samplers do), autograd still works
    with torch.no_grad():
        torch.testing.assert_close(auto.f(t), cos.f(t), rtol=1e-8, atol=0)


# ------------------------------------------------------------------------------------------ discrete tables
def test_beta_table_of_vp_reproduces_vp_marginals_at_grid_times():
    vp = VPSDE()
    d = DiscreteVPSDE(vp.betas())
    ti = vp.discrete_times()
    assert float((d.alpha(ti) / vp.alpha(ti) - 1).abs().max()) < 1e-12
    assert float((d.sigma(ti) / vp.sigma(ti) - 1).abs().max()) < 1e-12
    torch.testing.assert_close(d.betas(), vp.betas(), rtol=1e-12, atol=0)
    # the table's timesteps and labels are the base class's
    assert float(d.timestep_to_t(torch.tensor(0))) == pytest.approx(1e-3)
    assert float(d.t_to_timestep(torch.tensor(1.0, dtype=F64))) == pytest.approx(999.0)


def test_iddpm_cosine_table_matches_the_continuous_cosine_within_interpolation_error():
    d = DiscreteVPSDE(iddpm_cosine_betas(1000))
    cos = CosineVPSDE(T=0.9946)
    ti = d.discrete_times()[:990]                                  # before the 0.999 clipping at the end
    assert float((d.log_alpha(ti) - cos.log_alpha(ti)).abs().max()) < 1e-12
    # between grid times: linear interpolation of log alpha, error <= h^2/8 max|f'|
    t = torch.linspace(1e-4, 0.98, 20001, dtype=F64)
    err = (d.log_alpha(t) - cos.log_alpha(t)).abs()
    fprime = (cos._c ** 2 / torch.cos(cos._phi0 + cos._c * t) ** 2)
    assert bool((err <= (1e-3) ** 2 / 8 * fprime * 1.01 + 1e-13).all())
    assert float(err.max()) > 1e-8                                 # (the check is not vacuous)


# ------------------------------------------------------------------------------------------ outputs
GM = score_sde.GaussianMixture.random(dim=3, n_components=3, seed=4)


class _Fixed(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, labels):
        return self.fn(x, labels)


@pytest.mark.parametrize("output", ["score", "eps", "x0", "v", "flow", "edm"])
def test_every_output_converts_exactly_to_the_score(sde, output):
    t = _times(sde)[1:]
    x = torch.randn(t.shape[0], 3, generator=torch.Generator().manual_seed(0), dtype=F64) * 2
    score = GM.score(x, t, sde)
    a, s = score_sde.utils.append_dims(sde.alpha(t), 2), score_sde.utils.append_dims(sde.sigma(t), 2)
    eps = -s * score
    x0 = (x + s ** 2 * score) / a
    da = score_sde.utils.append_dims(sde.f(t), 2) * a
    ds = (score_sde.utils.append_dims(sde.g2(t), 2) + 2 * (da / a) * s ** 2) / (2 * s)
    target = {"score": score, "eps": eps, "x0": x0, "v": a * eps - s * x0, "flow": da * x0 + ds * eps}
    if output == "edm":
        sd = 0.5
        se = s / a
        c_skip, c_out = sd ** 2 / (se ** 2 + sd ** 2), se * sd / torch.sqrt(se ** 2 + sd ** 2)
        net = lambda xin, lab: (x0 - c_skip * x / a) / c_out                   # noqa: E731
    else:
        net = lambda xin, lab: target[output]                                  # noqa: E731
    model = ScoreModel(_Fixed(net), sde, output=output, time_label=lambda tt: tt)
    torch.testing.assert_close(model(x, t), score, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(model.denoise(x, t), x0, rtol=1e-7, atol=1e-9)


def test_flow_output_is_the_probability_flow_drift():
    sde = LinearInterpolantSDE()
    t = torch.tensor([0.01, 0.5, 0.95], dtype=F64)
    x = torch.randn(3, 3, dtype=F64)
    drift, _ = sde.reverse(GM.score_fn(sde), probability_flow=True).sde(x, t)
    x0 = GM.denoise(x, t, sde)
    eps = (x - (1 - t)[:, None] * x0) / t[:, None]
    torch.testing.assert_close(drift, eps - x0)                                 # u = z - x0 for alpha = 1 - t


# ------------------------------------------------------------------------------------------ losses
def test_flow_matching_loss_is_the_velocity_mse():
    loss = flow_matching_loss()
    x0 = GM.sample(64, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = loss.sample_t(64, dtype=F64, generator=torch.Generator().manual_seed(2))
    z = torch.randn(64, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    fake = lambda x, tt: -x / (1 + tt[:, None])                               # noqa: E731  an arbitrary score
    got = loss(fake, x0, t=t, noise=z)
    sde = loss.sde
    xt = (1 - t)[:, None] * x0 + t[:, None] * z
    u_hat, _ = sde.reverse(fake, probability_flow=True).sde(xt, t)
    torch.testing.assert_close(got, (u_hat - (z - x0)).square().sum(1), rtol=1e-9, atol=1e-9)
    assert float(t.min()) >= sde.training_eps and float(t.max()) <= sde.T


@pytest.mark.parametrize("weighting", ["sigma2", "likelihood", "none", "flow"])
def test_losses_with_the_exact_score_on_every_schedule(sde, weighting):
    # with the exact score of p_t the DSM loss equals its irreducible part; it is finite and positive, and
    # lower than with a wrong score
    loss = DSMLoss(sde, weighting=weighting, time_sampling="importance" if weighting == "likelihood" else "uniform")
    x0 = GM.sample(256, generator=torch.Generator().manual_seed(0), dtype=F64)
    g = torch.Generator().manual_seed(1)
    exact = loss(GM.score_fn(sde), x0, generator=g)
    g = torch.Generator().manual_seed(1)
    wrong = loss(lambda x, t: 1.3 * GM.score(x, t, sde), x0, generator=g)
    assert bool(torch.isfinite(exact).all()) and float(exact.mean()) > 0
    assert float(exact.mean()) < float(wrong.mean())


# ------------------------------------------------------------------------------------------ every solver
MEAN = torch.tensor([1.0, -0.5], dtype=F64)
COV = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=F64)
GAUSS = score_sde.Gaussian(MEAN, COV)

# one configuration per solver: (method, options, steps, grid)
SOLVER_CASES = [
    ("euler_maruyama", {}, 200, "log_snr"),
    ("reverse_diffusion", {}, 100, "log_snr"),
    ("ancestral", {}, 100, "log_snr"),
    ("pc", {"corrector": "annealed_langevin", "snr": 0.05}, 100, "log_snr"),
    ("ddpm", {}, 100, None),
    ("euler", {}, 200, "log_snr"),
    ("ddim", {}, 50, None),
    ("heun", {}, 30, None),
    ("dpmpp_2m", {}, 15, None),
    ("dpmpp_3m", {}, 15, None),
    ("dpmpp_2m_sde", {}, 40, None),
    ("ode", {}, None, None),
    ("sdeint", {}, 150, None),
    ("unipc", {}, 15, None),
    ("deis", {}, 15, None),
    ("dpm_solver_2s", {}, 20, None),
    ("dpm_solver_3s", {}, 8, None),
    ("dpmpp_2s", {}, 10, None),
    ("edm", {}, 30, None),
]


def test_every_solver_is_covered():
    assert {c[0] for c in SOLVER_CASES} == set(SOLVERS)


@pytest.mark.parametrize("method,opts,steps,grid", SOLVER_CASES, ids=[c[0] for c in SOLVER_CASES])
def test_every_solver_on_every_schedule_matches_the_exact_gaussian(sde, method, opts, steps, grid):
    kw = {} if grid is None else {"grid": grid}
    cov_tol = 0.08
    if isinstance(sde, EDMSDE):
        # t = sigma in [0.002, 80]: grids uniform or quadratic in t are poor there (docs/sde.md)
        if grid is None and method not in ("ddpm", "ode", "sdeint"):
            kw = {"grid": "log_snr"}
        if method == "pc":
            steps = 200
        if method == "ddpm":       # DDPM's grid is uniform in t = sigma: every step, still coarse at small sigma
            steps, cov_tol = sde.N, 0.12
        if method == "sdeint":     # uniform in t as well: let torchsde adapt the step
            opts = {"sde_method": "euler", "adaptive": True, "rtol": 0.05, "atol": 0.05, "dt_min": 1e-4}
            steps = None
    out = sample(sde, GAUSS.score_fn(sde), (1500, 2), method=method, steps=steps,
                 generator=torch.Generator().manual_seed(0), dtype=F64, **opts, **kw)
    x = out.samples
    assert bool(torch.isfinite(x).all())
    mean_err = float((x.mean(0) - MEAN).abs().max())
    cov_err = float((torch.cov(x.T) - COV).abs().max())
    # Monte Carlo error of 1500 samples: ~0.018 (mean), ~0.02 (cov); VP meets these bounds at these steps
    assert mean_err < 0.05 and cov_err < cov_tol, (mean_err, cov_err)


# ------------------------------------------------------------------------------------------ likelihood
def test_probability_flow_likelihood_matches_the_exact_density(sde):
    gm = score_sde.GaussianMixture.random(dim=2, n_components=3, seed=2, scale_range=(0.3, 0.6))
    x = gm.sample(64, generator=torch.Generator().manual_seed(5), dtype=F64)
    eps = sde.likelihood_eps
    res = score_sde.log_likelihood(sde, gm.score_fn(sde), x, eps=eps, rtol=1e-6, atol=1e-6)
    exact = gm.log_prob(x, torch.full((64,), eps, dtype=F64), sde)
    # the model's likelihood uses the prior N(0, sigma(T)^2) in place of p_T; the bound of prior_mismatch_bpd
    gap_bpd = float((exact - res.logp).mean()) / (2 * math.log(2))
    assert abs(gap_bpd) < 2e-3, gap_bpd


# ------------------------------------------------------------------------------------------ bad input
def test_bad_schedules_raise_clear_errors():
    with pytest.raises(ValueError, match="strictly decreasing"):
        ScheduleSDE(lambda t: torch.exp(-0.1 * t), lambda t: 0.5 + 0.1 * torch.sin(20 * t))
    with pytest.raises(ValueError, match="alpha.*positive"):
        ScheduleSDE(lambda t: 1 - t, lambda t: t, T=1.0)
    with pytest.raises(ValueError, match="sigma.*positive"):
        ScheduleSDE(lambda t: 1 - 0.5 * t, lambda t: t - 0.5)
    with pytest.raises(ValueError, match="T must be < 1"):
        CosineVPSDE(T=1.0)
    with pytest.raises(ValueError, match="T must be < 1"):
        LinearInterpolantSDE(T=1.0)
    with pytest.raises(ValueError, match="sigma_min must be < sigma_max"):
        EDMSDE(sigma_min=1.0, sigma_max=0.5)
    for bad in ([0.1, 0.0, 0.2], [0.1, 1.0], [0.5, -0.1], [0.1, float("nan")]):
        with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\)"):
            DiscreteVPSDE(bad)
    with pytest.raises(ValueError, match="1-D"):
        DiscreteVPSDE(torch.full((2, 3), 0.1))


def test_configs_select_every_schedule():
    from score_sde import config as B

    for name, cls in (("cosine", CosineVPSDE), ("edm", EDMSDE), ("rectified_flow", LinearInterpolantSDE),
                      ("discrete", DiscreteVPSDE)):
        cfg = B.default_config()
        cfg.sde.name = name
        assert type(B.build_sde(cfg)) is cls
    cfg = B.default_config()
    cfg.sde.name, cfg.sde.betas = "discrete", "iddpm_cosine"
    assert B.build_sde(cfg).betas()[-1] == pytest.approx(0.999)


def test_docs_example_runs():
    text = (ROOT / "docs" / "sde.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    example = [b for b in blocks if "same analytic mixture" in b]
    assert example, "docs/sde.md lost its schedules example"
    exec(compile(example[0], "docs/sde.md", "exec"), {})

"""The SDE layer against closed forms, Monte Carlo solves of the forward SDE and the DDPM/SMLD
formulas."""
import math

import pytest
import torch
import torchsde

from score_sde import VESDE, VPSDE, Gaussian, subVPSDE

SDES = {
    "vp": lambda **kw: VPSDE(beta_min=0.1, beta_max=20.0, **kw),
    "subvp": lambda **kw: subVPSDE(beta_min=0.1, beta_max=20.0, **kw),
    "ve": lambda **kw: VESDE(sigma_min=0.01, sigma_max=50.0, **kw),
}
SHAPES = [(6, 3), (6, 2, 5), (6, 2, 4, 4)]  # ranks 2, 3, 4


@pytest.fixture(params=list(SDES))
def sde(request):
    return SDES[request.param]()


class _ForwardSDE(torch.nn.Module):
    """torchsde wrapper of our forward SDE (diagonal noise)."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, sde):
        super().__init__()
        self.s = sde

    def f(self, t, y):
        return self.s.f(t) * y

    def g(self, t, y):
        return self.s.diffusion(t).expand_as(y)


@pytest.mark.parametrize("name", list(SDES))
def test_marginal_matches_monte_carlo_solve(name):
    # VE with a smaller sigma_max keeps the Monte Carlo error of the variance comparable.
    sde = VESDE(0.01, 5.0) if name == "ve" else SDES[name]()
    torch.manual_seed(0)
    n = 8000
    x0 = torch.tensor([1.5, -0.7], dtype=torch.float64)
    y0 = x0.repeat(n // 2).reshape(n // 2, 2).reshape(n, 1)
    ts = torch.tensor([0.0, 0.1, 0.5, 1.0], dtype=torch.float64)
    # torchsde draws the Brownian motion's seed from numpy's global RNG unless given one: fix it, so
    # that the result does not depend on which tests ran before in the same process
    bm = torchsde.BrownianInterval(0.0, 1.0, size=y0.shape, dtype=y0.dtype, entropy=0)
    ys = torchsde.sdeint(_ForwardSDE(sde), y0, ts, method="euler", dt=1e-3, bm=bm)
    for k in range(1, len(ts)):
        y = ys[k].reshape(n // 2, 2)
        mean, std = sde.marginal_prob(x0[None].expand(1, 2), float(ts[k]))
        sd = float(std[0])
        # mean within 5 standard errors (+ Euler bias), std within 4% (MC error ~1.1% + Euler bias)
        assert torch.allclose(y.mean(0), mean[0], atol=5 * sd / math.sqrt(n // 2) + 5e-3)
        assert torch.allclose(y.std(0), torch.full((2,), sd, dtype=torch.float64), rtol=0.04)


@pytest.mark.parametrize("cls", [VPSDE, subVPSDE])
def test_float32_std_near_zero(cls):
    sde = cls()
    for t in [1e-5, 1e-4, 1e-3]:
        s32 = sde.sigma(torch.tensor([t], dtype=torch.float32)).double()
        s64 = sde.sigma(torch.tensor([t], dtype=torch.float64))
        assert float(((s32 - s64) / s64).abs()) < 1e-5
    # the naive formula loses ~1% at t=1e-5 in float32: make sure we are not computing that
    t = torch.tensor([1e-5])
    la = sde.log_alpha(t)
    naive = torch.sqrt(1 - torch.exp(2 * la)) if cls is VPSDE else 1 - torch.exp(2 * la)
    exact = sde.sigma(t.double())
    assert float(((naive.double() - exact) / exact).abs()) > 1e-3


def test_ve_std_is_exact_integral():
    sde = VESDE(0.01, 50.0)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    # sigma(t)^2 = int_0^t g(s)^2 ds (alpha = 1): integrate numerically
    fine = torch.linspace(0, 1, 200001, dtype=torch.float64)
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(sde.g2(fine), fine)])
    assert torch.allclose(sde.sigma(t) ** 2, cum[::2000], rtol=1e-6, atol=1e-12)
    assert float(sde.sigma(torch.tensor(0.0))) == 0.0


def test_vp_subvp_relations():
    t = torch.linspace(0, 1, 50, dtype=torch.float64)
    vp, svp = VPSDE(), subVPSDE()
    assert torch.allclose(vp.alpha(t) ** 2 + vp.sigma(t) ** 2, torch.ones_like(t))
    assert torch.allclose(svp.sigma(t), 1 - svp.alpha(t) ** 2)
    # g^2 = d sigma^2/dt - 2 f sigma^2 for every SDE (linear SDE variance ODE)
    for sde in (vp, svp, VESDE()):
        tt = torch.linspace(0.01, 0.99, 30, dtype=torch.float64, requires_grad=True)
        s2 = sde.sigma(tt) ** 2
        (ds2,) = torch.autograd.grad(s2.sum(), tt)
        assert torch.allclose(sde.g2(tt), ds2 - 2 * sde.f(tt) * s2, rtol=1e-6)
        la = sde.log_alpha(tt)
        if la.requires_grad:
            (dla,) = torch.autograd.grad(la.sum(), tt)
            assert torch.allclose(sde.f(tt), dla)
        else:  # constant mean coefficient (VE)
            assert torch.equal(sde.f(tt), torch.zeros_like(tt)) and torch.equal(la, torch.zeros_like(tt))


def test_schedule_view_inverse(sde):
    for dtype in (torch.float32, torch.float64):
        t = torch.tensor([1e-5, 1e-3, 0.1, 0.5, 0.9, 1.0], dtype=dtype)
        lam = sde.log_snr(t)
        assert (lam[1:] < lam[:-1]).all(), "log-SNR must decrease"
        back = sde.t_from_log_snr(lam)
        assert back.dtype == dtype
        assert torch.allclose(back, t, rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_any_rank_device_dtype(sde, shape):
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(shape, dtype=dtype)
        t = torch.rand(shape[0], dtype=dtype) * 0.9 + 0.05
        mean, std = sde.marginal_prob(x, t)
        assert mean.shape == x.shape and std.shape == (shape[0],) and mean.dtype == dtype
        drift, diff = sde.sde(x, t)
        assert drift.shape == x.shape and diff.shape == (shape[0],)
        f, G = sde.discretize(x, t)
        assert f.shape == x.shape and G.shape == (shape[0],)
        a = sde.alpha(t).reshape(-1, *[1] * (len(shape) - 1))
        assert torch.allclose(mean, a * x)
        z = sde.prior_sampling(shape, dtype=dtype)
        assert z.shape == x.shape and sde.prior_logp(z).shape == (shape[0],)
        for pf in (False, True):
            rd, rg = sde.reverse(lambda y, s: -y, probability_flow=pf).sde(x, t)
            assert rd.shape == x.shape and rg.shape == (shape[0],) and isinstance(rg, torch.Tensor)


def test_scalar_time_broadcasts(sde):
    x = torch.randn(4, 3)
    m1, s1 = sde.marginal_prob(x, 0.3)
    m2, s2 = sde.marginal_prob(x, torch.full((4,), 0.3))
    assert torch.equal(m1, m2) and torch.equal(s1, s2)


def test_prior_logp_is_normal_density(sde):
    z = sde.prior_sampling((5, 2, 3), generator=torch.Generator().manual_seed(0)).double()
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z).reshape(5, -1).sum(1)
    assert torch.allclose(sde.prior_logp(z), ref)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(sde.prior_sampling((4, 2), generator=g1), sde.prior_sampling((4, 2), generator=g2))


def test_ddpm_discretisation():
    N = 1000
    sde = VPSDE(0.1, 20.0, N=N)
    betas, abar = sde.betas(), sde.alphas_cumprod()
    # alpha-bar is the cumulative product of (1 - beta), exactly
    assert torch.allclose(torch.cumprod(1 - betas, 0), abar, rtol=1e-10)
    # and close to DDPM's linear schedule beta_i = beta_min/N + i (beta_max - beta_min) / (N (N-1))
    # (ours integrates beta(t) over [t_{i-1}, t_i] instead of sampling it at one end)
    ddpm = torch.linspace(0.1 / N, 20.0 / N, N, dtype=torch.float64)
    # (and 1 - exp(-x) instead of x): within 1.5% of the largest beta, alpha-bar within 1e-3
    assert (betas - ddpm).abs().max() < 0.015 * ddpm.max()
    assert (abar - torch.cumprod(1 - ddpm, 0)).abs().max() < 1e-3
    # the discretised step is DDPM's: x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z
    x = torch.randn(N, 3, dtype=torch.float64)
    t = sde.discrete_times()
    f, G = sde.discretize(x, t)
    assert torch.allclose(f, (torch.sqrt(1 - betas)[:, None] - 1) * x)
    assert torch.allclose(G, torch.sqrt(betas))
    # timestep <-> t mapping
    i = torch.arange(N)
    assert torch.allclose(sde.t_to_timestep(sde.timestep_to_t(i)), i.to(torch.get_default_dtype()), atol=1e-4)
    assert torch.allclose(sde.timestep_to_t(i).double(), t, rtol=1e-6)


@pytest.mark.parametrize("N", [1, 5, 10, 20])
def test_few_step_tables_stay_valid(N):
    for make in SDES.values():
        sde = make(N=N)
        b = sde.betas()
        assert torch.isfinite(b).all() and (b >= 0).all() and (b < 1).all()
        x = torch.randn(N, 2, dtype=torch.float64)
        f, G = sde.discretize(x, sde.discrete_times())
        assert torch.isfinite(f).all() and torch.isfinite(G).all()


def test_smld_discretisation():
    sde = VESDE(0.01, 50.0, N=100)
    sig = sde.discrete_sigmas()
    x = torch.randn(100, 3, dtype=torch.float64)
    f, G = sde.discretize(x, sde.discrete_times())
    prev = torch.cat([torch.zeros(1, dtype=torch.float64), sig[:-1]])
    assert torch.equal(f, torch.zeros_like(f))
    assert torch.allclose(G, torch.sqrt(sig ** 2 - prev ** 2))
    # the paper's noise levels sigma_min (sigma_max/sigma_min)^t are geometric: sigma_i^2 + sigma_min^2
    levels = torch.sqrt(sig ** 2 + 0.01 ** 2)
    ratios = levels[1:] / levels[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))
    assert math.isclose(float(levels[-1]), 50.0, rel_tol=1e-12)


def test_discretize_composes_to_marginal(sde):
    # var(t_i) = ratio^2 var(t_{i-1}) + G_i^2 and mean ratios multiply: the steps are exact
    t = sde.discrete_times()[:: 50]
    x = torch.ones(len(t), 1, dtype=torch.float64)
    for dt in (sde.T / sde.N, 0.05):
        f, G = sde.discretize(x, t, dt=dt)
        s = (t - dt).clamp_min(0)
        ratio = (f[:, 0] + 1)
        assert torch.allclose(ratio, sde.alpha(t) / sde.alpha(s))
        assert torch.allclose(sde.sigma(t) ** 2, ratio ** 2 * sde.sigma(s) ** 2 + G ** 2, rtol=1e-9, atol=1e-14)


def test_posterior_is_consistent(sde):
    # x_t ~ q(x_t | x0) then x_s ~ q(x_s | x_t, x0) must be distributed as q(x_s | x0)
    g = torch.Generator().manual_seed(0)
    n = 80000
    x0 = torch.full((n, 1), 0.8, dtype=torch.float64)
    t, s = 0.6, 0.3
    x_t, _ = sde.perturb(x0, t, generator=g)
    mean, std = sde.posterior(x_t, x0, t, s)
    x_s = mean + std[:, None] * torch.randn(n, 1, generator=g, dtype=torch.float64)
    m_ref, s_ref = sde.marginal_prob(x0[:1], s)
    assert abs(float(x_s.mean() - m_ref[0, 0])) < 5 * float(s_ref[0]) / math.sqrt(n)
    assert abs(float(x_s.std() / s_ref[0]) - 1) < 0.01


def test_reverse_drifts_match_hand_derived(sde):
    # data N(0, s0^2 I): p_t = N(0, v_t I) with v_t = alpha^2 s0^2 + sigma^2, score = -x / v_t
    s0 = 0.7
    gauss = Gaussian(torch.zeros(3), s0 ** 2)
    x = torch.randn(8, 3, dtype=torch.float64)
    t = torch.linspace(0.05, 1.0, 8, dtype=torch.float64)
    v = sde.alpha(t) ** 2 * s0 ** 2 + sde.sigma(t) ** 2
    f, g2 = sde.f(t)[:, None], sde.g2(t)[:, None]
    score_fn = gauss.score_fn(sde)
    drift, diff = sde.reverse(score_fn).sde(x, t)
    assert torch.allclose(drift, f * x + g2 * x / v[:, None])
    assert torch.allclose(diff, g2[:, 0].sqrt())
    drift, diff = sde.reverse(score_fn, probability_flow=True).sde(x, t)
    assert torch.allclose(drift, f * x + 0.5 * g2 * x / v[:, None])
    assert torch.equal(diff, torch.zeros(8, dtype=torch.float64))
    # reverse diffusion discretisation
    rf, rG = sde.reverse(score_fn).discretize(x, t)
    fd, Gd = sde.discretize(x, t)
    assert torch.allclose(rf, fd + Gd[:, None] ** 2 * x / v[:, None]) and torch.allclose(rG, Gd)


def test_x0_from_score_is_tweedie(sde):
    gauss = Gaussian(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.2]))
    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.full((6,), 0.4, dtype=torch.float64)
    a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    var0 = torch.tensor([0.5, 0.2], dtype=torch.float64)
    mu0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    # Gaussian posterior mean of x0 given x_t = a x0 + s z
    expected = mu0 + a * var0 / (a ** 2 * var0 + s ** 2) * (x - a * mu0)
    assert torch.allclose(gauss.denoise(x, t, sde), expected)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: VPSDE(beta_min=20.0, beta_max=0.1), "beta_min must be < beta_max"),
        (lambda: VPSDE(beta_min=-1.0), "beta_min"),
        (lambda: subVPSDE(beta_max=0.0), "beta_max"),
        (lambda: VESDE(sigma_min=1.0, sigma_max=0.5), "sigma_min must be < sigma_max"),
        (lambda: VESDE(sigma_min=0.0), "sigma_min"),
        (lambda: VPSDE(N=0), "N"),
        (lambda: VESDE(N=2.5), "N"),
        (lambda: VPSDE(T=-1.0), "T"),
    ],
)
def test_bad_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_times(sde):
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"\[0, T\]"):
        sde.marginal_prob(x, torch.full((4,), 1.5))
    with pytest.raises(ValueError, match=r"\[0, T\]"):
        sde.sde(x, -0.1)
    with pytest.raises(ValueError, match="one time per sample"):
        sde.marginal_prob(x, torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="one time per sample"):
        sde.discretize(x, torch.full((4, 1), 0.5))

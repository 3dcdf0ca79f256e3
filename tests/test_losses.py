"""DSM losses at the exact score against their analytic values."""
import math

import pytest
import torch

from score_sde import DSMLoss, Gaussian, VESDE, VPSDE, ddpm_loss, smld_loss, subVPSDE

SDES = [VPSDE(), subVPSDE(), VESDE(0.01, 10.0)]
IDS = ["vp", "subvp", "ve"]

# Gaussian data N(mu, diag(var)); at the exact score E_z ||sigma s + z||^2 = D - sigma^2 tr(Sigma_t^{-1})
MU = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
VAR = torch.tensor([0.3, 1.0, 0.05], dtype=torch.float64)


def _expected_sq(sde, t):
    t = torch.as_tensor(t, dtype=torch.float64)
    a2, s2 = sde.alpha(t) ** 2, sde.sigma(t) ** 2
    return (a2[..., None] * VAR / (a2[..., None] * VAR + s2[..., None])).sum(-1)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_dsm_at_exact_score_fixed_t(sde):
    gauss = Gaussian(MU, VAR)
    g = torch.Generator().manual_seed(0)
    x0 = gauss.sample(100000, generator=g, dtype=torch.float64)
    for t in (0.01, 0.3, 0.9):
        for weighting in ("sigma2", "likelihood", "none"):
            loss = DSMLoss(sde, weighting=weighting)
            per = loss(gauss.score_fn(sde), x0, t=torch.full((x0.shape[0],), t, dtype=torch.float64), generator=g)
            assert per.shape == (x0.shape[0],)
            tt = torch.tensor(t, dtype=torch.float64)
            w = {"sigma2": 1.0, "likelihood": float(sde.g2(tt) / sde.sigma(tt) ** 2),
                 "none": float(1 / sde.sigma(tt) ** 2)}[weighting]
            expected = w * float(_expected_sq(sde, t))
            se = float(per.std()) / math.sqrt(len(per))
            assert abs(float(per.mean()) - expected) < 5 * se + 1e-9, (t, weighting)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_importance_sampling_is_unbiased_for_likelihood_weighting(sde):
    gauss = Gaussian(MU, VAR)
    eps = 1e-5
    # E_{t ~ U[eps, T]} g^2 / sigma^2 * E||sigma s + z||^2 by quadrature in log t
    u = torch.linspace(math.log(eps), 0.0, 200001, dtype=torch.float64)
    t = u.exp()
    integrand = sde.g2(t) / sde.sigma(t) ** 2 * _expected_sq(sde, t) * t
    expected = float(torch.trapezoid(integrand, u)) / (1 - eps)
    g = torch.Generator().manual_seed(1)
    loss = DSMLoss(sde, weighting="likelihood", time_sampling="importance", eps=eps)
    x0 = gauss.sample(200000, generator=g, dtype=torch.float64)
    per = loss(gauss.score_fn(sde), x0, generator=g)
    se = float(per.std()) / math.sqrt(len(per))
    assert abs(float(per.mean()) - expected) < 5 * se
    # the importance distribution is q(t) ~ g^2/sigma^2: compare its CDF at a few points
    ts = loss.sample_t(200000, dtype=torch.float64, generator=g)
    assert float(ts.min()) >= eps * (1 - 1e-9) and float(ts.max()) <= 1.0
    for q in (1e-3, 1e-2, 0.1, 0.5):
        mask = t <= q
        cdf = float(torch.trapezoid((sde.g2(t) / sde.sigma(t) ** 2 * t)[mask], u[mask])) / float(
            torch.trapezoid(sde.g2(t) / sde.sigma(t) ** 2 * t, u))
        assert abs(float((ts <= q).double().mean()) - cdf) < 0.005


def test_discrete_losses():
    sde = VPSDE(N=10)
    loss = ddpm_loss(sde)
    ts = loss.sample_t(10000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = sde.discrete_times()
    assert torch.isin(ts, grid).all() and len(torch.unique(ts)) == 10
    # DDPM's loss is the noise-prediction MSE: with eps_hat = -sigma * score
    x0 = torch.randn(16, 3, 4, 4)
    net_eps = torch.randn(16, 3, 4, 4)
    t = sde.timestep_to_t(torch.arange(16) % 10).float()
    noise = torch.randn_like(x0)
    per = loss(lambda x, tt: -net_eps / sde.sigma(tt)[:, None, None, None], x0, t=t, noise=noise)
    assert torch.allclose(per, (net_eps - noise).square().mean((1, 2, 3)), rtol=1e-5)
    ve = VESDE(N=10)
    sl = smld_loss(ve)
    per = sl(lambda x, tt: torch.zeros_like(x), x0, t=ve.timestep_to_t(torch.arange(16) % 10).float(), noise=noise)
    assert torch.allclose(per, noise.square().sum((1, 2, 3)))


def test_reduce_and_ranks():
    sde = VPSDE()
    for shape in [(8, 4), (8, 2, 3), (8, 1, 4, 4)]:
        x0 = torch.randn(shape)
        s = DSMLoss(sde, reduce="sum")(lambda x, t: torch.zeros_like(x), x0, t=0.5, noise=torch.ones(shape))
        m = DSMLoss(sde, reduce="mean")(lambda x, t: torch.zeros_like(x), x0, t=0.5, noise=torch.ones(shape))
        d = x0[0].numel()
        assert torch.allclose(s, torch.full((8,), float(d))) and torch.allclose(m, torch.ones(8))


def test_bad_arguments():
    sde = VPSDE()
    with pytest.raises(ValueError, match="weighting"):
        DSMLoss(sde, weighting="foo")
    with pytest.raises(ValueError, match="time_sampling"):
        DSMLoss(sde, time_sampling="foo")
    with pytest.raises(ValueError, match="likelihood"):
        DSMLoss(sde, weighting="sigma2", time_sampling="importance")
    with pytest.raises(ValueError, match="reduce"):
        DSMLoss(sde, reduce="max")
    with pytest.raises(ValueError, match="eps"):
        DSMLoss(sde, eps=2.0)

"""Analytic oracles: densities and scores against torch.distributions and autograd."""
import math

import pytest
import torch

from score_sde import VESDE, VPSDE, Gaussian, GaussianMixture, subVPSDE

SDES = [VPSDE(), subVPSDE(), VESDE(0.01, 10.0)]


def _reference_mixture(gm, sde, t):
    """p_t as a torch.distributions mixture (one t for the batch)."""
    tt = torch.tensor(float(t), dtype=torch.float64)
    a, s = float(sde.alpha(tt)), float(sde.sigma(tt))
    covs = a ** 2 * gm.covariances() + s ** 2 * torch.eye(gm.dim, dtype=torch.float64)
    comp = torch.distributions.MultivariateNormal(a * gm.means, covariance_matrix=covs)
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(gm.weights), comp)


@pytest.mark.parametrize("full_cov", [True, False])
@pytest.mark.parametrize("sde", SDES, ids=["vp", "subvp", "ve"])
def test_log_prob_and_score_match_reference(full_cov, sde):
    gm = GaussianMixture.random(dim=5, n_components=4, seed=1, full_cov=full_cov)
    x = gm.sample(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in [None, 1e-3, 0.3, 1.0]:
        ref = _reference_mixture(gm, sde, 0.0 if t is None else t)
        lp = gm.log_prob(x, t, sde)
        assert torch.allclose(lp, ref.log_prob(x), atol=1e-8)
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(ref.log_prob(xr).sum(), xr)
        assert torch.allclose(gm.score(x, t, sde), grad, atol=1e-7, rtol=1e-6)


def test_per_sample_times_and_image_shapes():
    sde = VPSDE()
    gm = GaussianMixture.random(dim=12, n_components=3, seed=2, event_shape=(3, 2, 2))
    x = gm.sample(6, generator=torch.Generator().manual_seed(1))
    assert x.shape == (6, 3, 2, 2) and x.dtype == torch.float32
    t = torch.linspace(0.1, 0.9, 6)
    s = gm.score(x, t, sde)
    assert s.shape == x.shape and s.dtype == torch.float32
    for i in range(6):
        si = gm.score(x[i:i + 1], t[i:i + 1], sde)
        assert torch.allclose(s[i:i + 1], si, atol=1e-6)
    fn = gm.score_fn(sde)
    assert torch.equal(fn(x, t), s)


def test_sampling_moments():
    gm = GaussianMixture.random(dim=3, n_components=3, seed=4)
    x = gm.sample(200000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(x.mean(0), gm.mean(), atol=0.02)
    assert torch.allclose(torch.cov(x.T), gm.covariance(), atol=0.03)
    sde = VPSDE()
    xt, _ = sde.perturb(x, 0.4, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(torch.cov(xt.T), gm.marginal_covariance(sde, 0.4), atol=0.03)


def test_gaussian_shortcut_and_entropy():
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    g = Gaussian(torch.tensor([0.5, -1.0]), cov)
    x = g.sample(100000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    entropy = 0.5 * math.log(float(torch.linalg.det(2 * math.pi * math.e * cov)))
    assert abs(float(-g.log_prob(x).mean()) - entropy) < 0.02


def test_bad_arguments():
    with pytest.raises(ValueError, match="means"):
        GaussianMixture(torch.zeros(3))
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture(torch.zeros(1, 2), torch.tensor([[[1.0, 2.0], [2.0, 1.0]]]))
    with pytest.raises(ValueError, match="covs must be"):
        GaussianMixture(torch.zeros(2, 2), torch.ones(3, 2))
    gm = GaussianMixture(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="D=2"):
        gm.log_prob(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="pass the SDE"):
        gm.score(torch.zeros(4, 2), 0.5)

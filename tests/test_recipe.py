"""The EDM training recipe: preconditioning with any sigma_data, its loss weighting and its
log-normal noise-level sampling, for every SDE, against exact answers."""
import math

import pytest
import torch

from score_sde import DSMLoss, GaussianMixture, ScoreModel, VESDE, VPSDE, subVPSDE
from score_sde.utils import append_dims

SDES = [VPSDE(), subVPSDE(), VESDE(0.01, 50.0)]
IDS = ["vp", "subvp", "ve"]


class EDMOracle(torch.nn.Module):
    """The raw output F that makes ScoreModel(output='edm', sigma_data=sd) return the exact denoiser.

    It only sees what the wrapper feeds it (c_in x / alpha and c_noise), and recovers t from c_noise."""

    def __init__(self, gm, sde, sigma_data):
        super().__init__()
        self.gm, self.sde, self.sd = gm, sde, sigma_data

    def forward(self, x_in, c_noise):
        s = torch.exp(4 * c_noise)                              # sigma / alpha
        t = self.sde.t_from_log_snr(-2 * torch.log(s))
        c_in = append_dims(1 / torch.sqrt(s ** 2 + self.sd ** 2), x_in.ndim)
        x_scaled = x_in / c_in                                  # x / alpha
        d = self.gm.denoise(x_scaled * append_dims(self.sde.alpha(t), x_in.ndim), t, self.sde)
        c_skip = self.sd ** 2 / (s ** 2 + self.sd ** 2)
        c_out = s * self.sd * c_in.flatten()
        return (d - append_dims(c_skip, x_in.ndim) * x_scaled) / append_dims(c_out, x_in.ndim)


@pytest.mark.parametrize("sigma_data", [0.71, 2.0])
@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_edm_output_with_any_sigma_data_gives_the_exact_score(sde, sigma_data):
    gm = GaussianMixture.random(dim=4, n_components=3, seed=1, event_shape=(1, 2, 2))
    model = ScoreModel(EDMOracle(gm, sde, sigma_data), sde, output="edm", sigma_data=sigma_data)
    x0 = gm.sample(12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.logspace(-4, 0, 12, dtype=torch.float64)            # from sigma/alpha ~ 1e-3 to the prior
    xt, _ = sde.perturb(x0, t, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(model.denoise(xt, t), gm.denoise(xt, t, sde), rtol=1e-6, atol=1e-7)
    assert torch.allclose(model(xt, t), gm.score(xt, t, sde), rtol=1e-5, atol=1e-6)
    # a wrong sigma_data in the wrapper breaks it (the test can fail)
    wrong = ScoreModel(EDMOracle(gm, sde, sigma_data), sde, output="edm", sigma_data=0.5)
    assert not torch.allclose(wrong.denoise(xt, t), gm.denoise(xt, t, sde), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_edm_weighting_is_unit_weight_on_the_preconditioned_output(sde):
    """weight(t) * ||sigma s + z||^2 == ||F - F_target||^2 with F_target the raw output the EDM
    wrapper would need to return x0 exactly (EDM's effective training target)."""
    sd = 0.71
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 4)).double()
    model = ScoreModel(_Lin(net), sde, output="edm", sigma_data=sd)
    loss = DSMLoss(sde, weighting="edm", time_sampling="lognormal", sigma_data=sd, reduce="sum")
    x0 = torch.randn(64, 1, 2, 2, generator=g, dtype=torch.float64) * sd
    t = loss.sample_t(64, dtype=torch.float64, generator=g)
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    per = loss(model, x0, t=t, noise=z)
    alpha, sigma = append_dims(sde.alpha(t), 4), append_dims(sde.sigma(t), 4)
    s = sigma / alpha
    x_scaled = (alpha * x0 + sigma * z) / alpha
    c_in = 1 / torch.sqrt(s ** 2 + sd ** 2)
    c_skip, c_out = sd ** 2 / (s ** 2 + sd ** 2), s * sd * c_in
    F = net(x_scaled * c_in).reshape(x0.shape)
    target = (x0 - c_skip * x_scaled) / c_out
    assert torch.allclose(per, (F - target).square().flatten(1).sum(1), rtol=1e-8, atol=1e-10)


class _Lin(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.inner = net

    def forward(self, x, labels):
        return self.inner(x).reshape(x.shape)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_lognormal_noise_levels_for_every_sde(sde):
    """log(sigma/alpha) of the drawn t is N(p_mean, p_std^2) truncated to the levels of [eps, T]."""
    p_mean, p_std, eps = -1.2, 1.2, 1e-5
    loss = DSMLoss(sde, weighting="edm", time_sampling="lognormal", eps=eps, p_mean=p_mean, p_std=p_std)
    t = loss.sample_t(200000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert float(t.min()) >= eps and float(t.max()) <= sde.T
    log_s = -0.5 * sde.log_snr(t)
    ends = -0.5 * sde.log_snr(torch.tensor([eps, sde.T], dtype=torch.float64))
    normal = torch.distributions.Normal(p_mean, p_std)
    lo, hi = normal.cdf(ends)
    for q in (-4.0, -2.0, -1.2, 0.0, 1.5):
        expected = float((normal.cdf(torch.tensor(q, dtype=torch.float64)).clamp(lo, hi) - lo) / (hi - lo))
        assert abs(float((log_s <= q).double().mean()) - expected) < 0.005, q
    # p_std moves the distribution (the check above can fail)
    wide = DSMLoss(sde, weighting="edm", time_sampling="lognormal", eps=eps, p_mean=p_mean, p_std=2.4)
    tw = wide.sample_t(200000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert float((-0.5 * sde.log_snr(tw)).std()) > 1.3 * float(log_s.std())


def test_recipe_arguments_checked():
    sde = VPSDE()
    with pytest.raises(ValueError, match="sigma_data"):
        DSMLoss(sde, weighting="edm", sigma_data=0.0)
    with pytest.raises(ValueError, match="p_std"):
        DSMLoss(sde, time_sampling="lognormal", p_std=-1.0)
    with pytest.raises(ValueError, match="time_sampling"):
        DSMLoss(sde, time_sampling="log-normal")


def write_image_folder(root, size=8, channels=1, n_train=12, n_test=4, seed=0):
    """A generated image folder ROOT/train, ROOT/test of random PNGs (grey or RGB); returns ROOT."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size, size) if channels == 1 else (size, size, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_folder_config_reads_sigma_data_from_the_images(tmp_path):
    from score_sde import config as B

    root = write_image_folder(tmp_path, 8, 1)
    cfg = B.load_config("vp/folder", [f"data.root={root}"])
    model, loss = B.build_model(cfg), B.build_loss(cfg)
    x = B.build_data(cfg).preprocess(B.build_data(cfg).raw("train").float(), train=False, dequantize=False)
    assert model.sigma_data == pytest.approx(float(x.std()), abs=1e-3)
    if cfg.training.weighting == "edm":     # the loss needs sigma_data only for the EDM weighting
        assert loss.sigma_data == model.sigma_data
    assert 0.45 < model.sigma_data < 0.7                    # uniform grey levels: std ~ 0.58, not EDM's 0.5
    assert model.output == "edm" and (loss.weighting, loss.time_sampling) == (cfg.training.weighting,
                                                                             cfg.training.time_sampling)
    per = loss(model, x[:4], generator=torch.Generator().manual_seed(0))
    assert per.shape == (4,) and torch.isfinite(per).all()


# ---------------------------------------------------------------------------------------------
# a short training on a 2-D mixture: ODE and SDE samples agree with each other and with the truth
# ---------------------------------------------------------------------------------------------

_STD = 0.1
_MIX = GaussianMixture(torch.tensor([[-1.0, -0.5], [1.0, 0.5], [0.0, 1.0]]), covs=_STD ** 2)


def _train_toy(output, weighting, time_sampling, steps=800):
    from score_sde.models import MLP

    sde = VPSDE()
    torch.manual_seed(0)
    sd = 0.8                                           # about the mixture's std
    model = ScoreModel(MLP(2, hidden=64, num_blocks=2, layer_norm=False), sde, output=output,
                       time_label="edm" if output == "edm" else "t", sigma_data=sd)
    loss = DSMLoss(sde, weighting=weighting, time_sampling=time_sampling, sigma_data=sd)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for i in range(steps):
        for pg in opt.param_groups:
            pg["lr"] = 3e-3 * (1 - i / steps)
        l = loss(model, _MIX.sample(256, generator=g, dtype=torch.float32), generator=g).mean()
        opt.zero_grad()
        l.backward()
        opt.step()
    return sde, model.eval().requires_grad_(False)


def _mode_stats(x):
    """(share farther than 4 std from every mode, rms distance to the nearest mode / std)."""
    d = torch.cdist(x.double(), _MIX.means)
    k = d.argmin(1)
    spread = ((x.double() - _MIX.means[k]).square().sum(1).mean() / 2).sqrt() / _STD
    return float((d.min(1).values > 4 * _STD).double().mean()), float(spread)


def _ode_and_sde(sde, model):
    from score_sde.sampling import sample

    eps = float(sde.t_from_log_snr(torch.tensor(-2 * math.log(0.002))))   # sigma/alpha = 0.002
    out = {}
    for method, steps in (("dpmpp_2m", 49), ("euler_maruyama", 300)):
        x = sample(sde, model, (2000, 2), method=method, steps=steps, eps=eps,
                   generator=torch.Generator().manual_seed(2)).samples
        out[method] = _mode_stats(x)
    return out


def _serves_both(stats):
    (off_o, spr_o), (off_s, spr_s) = stats["dpmpp_2m"], stats["euler_maruyama"]
    return off_o < 0.04 and off_s < 0.04 and 0.9 < spr_o < 1.2 and 0.9 < spr_s < 1.2 and abs(spr_o - spr_s) < 0.15


def test_edm_recipe_serves_ode_and_sde_and_eps_likelihood_does_not():
    sde, model = _train_toy("edm", "edm", "lognormal")
    good = _ode_and_sde(sde, model)
    assert _serves_both(good), good
    sde, model = _train_toy("eps", "likelihood", "importance")
    bad = _ode_and_sde(sde, model)
    assert not _serves_both(bad), bad

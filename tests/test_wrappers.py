"""Parameterisation wrappers: every output type recovers the exact score."""
import pytest
import torch

from score_sde import VESDE, VPSDE, GaussianMixture, ScoreModel, subVPSDE
from score_sde.utils import append_dims

SDES = [VPSDE(), subVPSDE(), VESDE(0.01, 10.0)]


class Oracle(torch.nn.Module):
    """A 'network' that returns the exact quantity its parameterisation asks for."""

    def __init__(self, gm, sde, output):
        super().__init__()
        self.gm, self.sde, self.output = gm, sde, output
        self.sigma_data = 0.5

    def forward(self, x, labels):
        sde = self.sde
        if self.output == "edm":
            s_edm = torch.exp(4 * labels)  # c_noise = log(sigma_edm) / 4
            t = sde.t_from_log_snr(-2 * torch.log(s_edm))
            a = append_dims(sde.alpha(t), x.ndim)
            sd2 = self.sigma_data ** 2
            c_in = 1 / torch.sqrt(s_edm ** 2 + sd2)
            x_scaled = x / append_dims(c_in, x.ndim)            # the wrapper fed c_in * x / alpha
            c_skip = sd2 / (s_edm ** 2 + sd2)
            c_out = s_edm * self.sigma_data * c_in
            d = self.gm.denoise(x_scaled * a, t, sde)
            return (d - append_dims(c_skip, x.ndim) * x_scaled) / append_dims(c_out, x.ndim)
        t = labels
        score = self.gm.score(x, t, sde)
        if self.output == "score":
            return score
        if self.output == "eps":
            return -append_dims(sde.sigma(t), x.ndim) * score
        return self.gm.denoise(x, t, sde)


@pytest.mark.parametrize("output", ["score", "eps", "x0", "edm"])
@pytest.mark.parametrize("sde", SDES, ids=["vp", "subvp", "ve"])
def test_every_output_gives_the_exact_score(output, sde):
    gm = GaussianMixture.random(dim=8, n_components=3, seed=0, event_shape=(2, 2, 2))
    model = ScoreModel(Oracle(gm, sde, output), sde, output=output)
    x = gm.sample(10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.linspace(0.05, 0.95, 10, dtype=torch.float64)
    xt, _ = sde.perturb(x, t, generator=torch.Generator().manual_seed(1))
    exact = gm.score(xt, t, sde)
    assert torch.allclose(model(xt, t), exact, rtol=1e-6, atol=1e-6)
    assert torch.allclose(model.denoise(xt, t), gm.denoise(xt, t, sde), rtol=1e-6, atol=1e-6)
    assert torch.allclose(model.noise(xt, t), -append_dims(sde.sigma(t), 4) * exact, rtol=1e-6, atol=1e-6)


def test_time_labels():
    sde = VPSDE(N=1000)
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x, labels):
            seen["labels"] = labels
            return torch.zeros_like(x)

    t = torch.tensor([0.001, 0.5, 1.0])
    x = torch.zeros(3, 2)
    for label, expected in [("t", t * 999), ("timestep", t * 1000 - 1), ("sigma", sde.sigma(t)),
                            ("log_sigma", sde.sigma(t).log()), (lambda tt: tt + 1, t + 1)]:
        ScoreModel(Spy(), sde, output="eps", time_label=label, label_scale=999)(x, t)
        assert torch.allclose(seen["labels"], expected)
    with pytest.raises(ValueError, match="output"):
        ScoreModel(Spy(), sde, output="velocity")
    with pytest.raises(ValueError, match="time_label"):
        ScoreModel(Spy(), sde, time_label="clock")

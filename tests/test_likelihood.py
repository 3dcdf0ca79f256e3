"""Probability-flow ODE likelihoods against exact log-densities of Gaussians and Gaussian mixtures,
a uniform discrete distribution of known entropy, exact call counts and bad input."""
import importlib.util
import math
import pathlib

import pytest
import torch

import score_sde.likelihood as lk
from score_sde import VESDE, VPSDE, Gaussian, GaussianMixture, subVPSDE
from score_sde.likelihood import Dequantization, decode, dequantize, encode, log_likelihood

SDES = {"vp": VPSDE, "subvp": subVPSDE, "ve": VESDE}
LN2 = math.log(2.0)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _mixture(dim=2, seed=0):
    return GaussianMixture.random(dim=dim, n_components=3, seed=seed)


def _gaussian():
    a = torch.tensor([[0.6, 0.1, 0.0], [0.1, 0.3, 0.05], [0.0, 0.05, 0.4]], dtype=torch.float64)
    return Gaussian(torch.tensor([0.5, -0.3, 0.2], dtype=torch.float64), a @ a.T + 0.05 * torch.eye(3))


def _solver_error(out, x, dist, sde, eps):
    """|integrated divergence - exact (log p_eps(x) - log p_T(z))| per sample (nats): the error of the
    ODE solve alone, without the prior mismatch p_T != prior."""
    z, logp = out.z.double(), out.logp.double()
    delta = logp - sde.prior_logp(z)
    exact = dist.log_prob(x.double(), eps, sde) - dist.log_prob(z, sde.T, sde)
    return (delta - exact).abs()


# ------------------------------------------------------------------ exact divergence vs analytic
@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("dist_name", ["gaussian", "mixture"])
def test_exact_divergence_matches_analytic_density(sde_name, dist_name):
    sde = SDES[sde_name]()
    dist = _gaussian() if dist_name == "gaussian" else _mixture()
    x = dist.sample(16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = log_likelihood(sde, dist.score_fn(sde), x, divergence="exact", rtol=1e-6, atol=1e-6)
    eps = sde.likelihood_eps
    assert out.logp.shape == (16,) and out.bpd.shape == (16,) and out.z.shape == x.shape
    assert float(_solver_error(out, x, dist, sde, eps).max()) < 5e-4
    # against the data density p_0 itself, once the model's prior gap log prior(z) - log p_T(z) is
    # accounted for (only the tiny p_eps - p_0 difference remains)
    gap = sde.prior_logp(out.z) - dist.log_prob(out.z, sde.T, sde)
    assert float((out.logp - dist.log_prob(x) - gap).abs().max()) < 5e-3
    D = x.shape[1]
    torch.testing.assert_close(out.bpd, -out.logp / (D * LN2))


@pytest.mark.parametrize("sde_name", list(SDES))
def test_quality_bar_float32_mean_bpd_and_nfe_vs_reference_algorithm(count_calls, sde_name):
    """Exact score of a mixture, exact divergence, rtol=atol=1e-5, float32 data: mean bits/dim
    within 0.002 of the analytic value (p_eps and p_0), with fewer score calls than the reference
    algorithm (scipy RK45, two calls per evaluation) at the same tolerance."""
    sde = SDES[sde_name]()
    gm = _mixture(2)
    x = gm.sample(128, generator=torch.Generator().manual_seed(3))
    counter = count_calls(gm.score_fn(sde))
    out = log_likelihood(sde, counter, x, divergence="exact", rtol=1e-5, atol=1e-5)
    assert out.logp.dtype == torch.float32 and out.nfe == counter.calls
    for exact in (gm.log_prob(x.double(), sde.likelihood_eps, sde), gm.log_prob(x.double())):
        bias = float((out.bpd.double() + exact / (2 * LN2)).mean())
        assert abs(bias) < 0.002, bias
    # the ODE never leaves [eps, T]
    assert counter.t_min >= sde.likelihood_eps * (1 - 1e-6) and counter.t_max <= sde.T * (1 + 1e-6)

    bench = _load_benchmark()
    ref_counter = count_calls(gm.score_fn(sde))
    ref_logp, _, nfev = bench.reference_likelihood(sde, ref_counter, x, rtol=1e-5, atol=1e-5,
                                                   generator=torch.Generator().manual_seed(0))
    assert ref_counter.calls == 2 * nfev
    assert out.nfe <= ref_counter.calls


def _load_benchmark():
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "likelihood_benchmark.py"
    spec = importlib.util.spec_from_file_location("likelihood_benchmark", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_any_rank_image_shaped_data():
    g = Gaussian(torch.linspace(-0.5, 0.5, 8, dtype=torch.float64), 0.2, event_shape=(2, 2, 2))
    sde = VPSDE()
    x = g.sample(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert x.shape == (8, 2, 2, 2)
    out = log_likelihood(sde, g.score_fn(sde), x, rtol=1e-6, atol=1e-6)   # auto -> exact (D=8)
    assert out.z.shape == x.shape
    assert float(_solver_error(out, x, g, sde, sde.likelihood_eps).max()) < 5e-4


def test_batched_and_looped_vector_jacobian_products_agree(monkeypatch):
    gm = _mixture(3)
    sde = subVPSDE()
    x = gm.sample(8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    res = {}
    for batched in (False, True):
        monkeypatch.setattr(lk, "_BATCHED_VJP", batched)
        ex = log_likelihood(sde, gm.score_fn(sde), x, divergence="exact", method="rk4", options={"step_size": 0.1})
        hu = log_likelihood(sde, gm.score_fn(sde), x, divergence="hutchinson", n_probes=3, method="rk4",
                            options={"step_size": 0.1}, generator=torch.Generator().manual_seed(5))
        res[batched] = (ex.logp, hu.logp)
    torch.testing.assert_close(res[False][0], res[True][0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(res[False][1], res[True][1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("batched", [False, True])
def test_exact_divergence_of_a_network_is_the_jacobian_trace(count_calls, monkeypatch, batched):
    """One score call per evaluation; the divergence equals the trace of the full Jacobian of the
    probability-flow drift (computed sample by sample with torch.autograd.functional.jacobian)."""
    monkeypatch.setattr(lk, "_BATCHED_VJP", batched)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(7, 32), torch.nn.SiLU(), torch.nn.Linear(32, 6)).double()
    sde = subVPSDE()

    def score_fn(x, t):                       # image-shaped x (B, 1, 2, 3)
        return net(torch.cat([x.reshape(x.shape[0], -1), t[:, None]], 1)).reshape(x.shape)

    x = torch.randn(5, 1, 2, 3, dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    flow = lk._ProbabilityFlow(sde, count_calls(score_fn), x.shape, x.dtype, "exact")
    v, div = flow(t, (x.reshape(5, 6), torch.zeros(5, dtype=torch.float64)))
    assert flow.counter.calls == 1
    rsde = sde.reverse(score_fn, probability_flow=True)
    for i in range(5):
        def drift_i(xi):
            return rsde.sde(xi.reshape(1, 1, 2, 3), t.expand(1))[0].reshape(6)
        jac = torch.autograd.functional.jacobian(drift_i, x[i].reshape(6))
        torch.testing.assert_close(div[i], torch.trace(jac))
        torch.testing.assert_close(v[i], drift_i(x[i].reshape(6)))


# ------------------------------------------------------------------ Hutchinson
@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe):
    """Many probes for ONE data point (replicated over the batch, one probe per copy): their mean is
    within a few standard errors of the exact-divergence value; 4 probes cut the variance ~4x."""
    sde = VPSDE()
    gm = _mixture(3, seed=1)
    x = gm.sample(1, generator=torch.Generator().manual_seed(4), dtype=torch.float64).expand(300, 3).clone()
    opts = dict(method="rk4", options={"step_size": 0.1})   # same fixed grid for every run
    exact = log_likelihood(sde, gm.score_fn(sde), x[:1], divergence="exact", **opts).logp[0]
    h1 = log_likelihood(sde, gm.score_fn(sde), x, divergence="hutchinson", probe=probe,
                        generator=torch.Generator().manual_seed(0), **opts).logp
    h4 = log_likelihood(sde, gm.score_fn(sde), x, divergence="hutchinson", probe=probe, n_probes=4,
                        generator=torch.Generator().manual_seed(1), **opts).logp
    for h in (h1, h4):
        se = h.std() / math.sqrt(len(h))
        assert h.std() > 0
        assert abs(float(h.mean() - exact)) < 4 * float(se)
    assert 0.1 < float(h4.var() / h1.var()) < 0.5


def test_auto_divergence_switches_to_hutchinson_above_64_dims():
    sde = VPSDE()
    opts = dict(method="euler", options={"step_size": 0.5})
    for D, expected in ((64, "exact"), (65, "hutchinson")):
        g = Gaussian(torch.zeros(D, dtype=torch.float64), torch.linspace(0.1, 1.0, D, dtype=torch.float64))
        x = g.sample(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        auto = log_likelihood(sde, g.score_fn(sde), x, generator=torch.Generator().manual_seed(1), **opts)
        ref = log_likelihood(sde, g.score_fn(sde), x, divergence=expected, generator=torch.Generator().manual_seed(1),
                             **opts)
        assert torch.equal(auto.logp, ref.logp)


def test_hutchinson_probe_fixed_and_reproducible():
    sde, gm = VESDE(), _mixture(2)
    x = gm.sample(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = log_likelihood(sde, gm.score_fn(sde), x, divergence="hutchinson", generator=torch.Generator().manual_seed(7))
    b = log_likelihood(sde, gm.score_fn(sde), x, divergence="hutchinson", generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.logp, b.logp) and a.nfe == b.nfe


# ------------------------------------------------------------------ encode / decode, NFE
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_decode_inverts_encode(count_calls, sde_name):
    sde, gm = SDES[sde_name](), _mixture(2)
    x = gm.sample(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fn = count_calls(gm.score_fn(sde))
    z, nfe_enc = encode(sde, fn, x, rtol=1e-6, atol=1e-6, return_nfe=True)
    assert nfe_enc == fn.calls
    # the latent is (nearly) a prior sample in scale and differs from x
    assert z.shape == x.shape and float((z - x).abs().max()) > 0.1
    x_rec = decode(sde, gm.score_fn(sde), z, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x_rec, x, rtol=0, atol=1e-4)
    # the likelihood solve reaches the same latent (up to its tolerance)
    out = log_likelihood(sde, gm.score_fn(sde), x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.z, z, rtol=0, atol=1e-4 * sde.prior_std)


@pytest.mark.parametrize("method,evals_per_step", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_nfe_counts_score_calls_exactly(count_calls, method, evals_per_step, divergence):
    sde, gm = VPSDE(), _mixture(2)
    x = gm.sample(4, generator=torch.Generator().manual_seed(0))
    fn = count_calls(gm.score_fn(sde))
    out = log_likelihood(sde, fn, x, method=method, options={"step_size": 0.1}, divergence=divergence)
    # grid eps, eps + 0.1, ..., 1: 10 steps, each calling the score evals_per_step times
    assert out.nfe == fn.calls == 10 * evals_per_step
    fn2 = count_calls(gm.score_fn(sde))
    _, nfe = decode(sde, fn2, out.z, method=method, options={"step_size": 0.1}, return_nfe=True)
    assert nfe == fn2.calls == 10 * evals_per_step


def test_adaptive_nfe_is_one_call_per_evaluation(count_calls):
    """dopri5 with FSAL: 2 calls for the initial step + 6 per step; counted calls match exactly."""
    sde, gm = subVPSDE(), _mixture(2)
    x = gm.sample(8, generator=torch.Generator().manual_seed(0))
    fn = count_calls(gm.score_fn(sde))
    out = log_likelihood(sde, fn, x, rtol=1e-4, atol=1e-4)
    assert out.nfe == fn.calls and (out.nfe - 2) % 6 == 0


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "dopri8"])
def test_adaptive_solvers_never_evaluate_the_score_outside_eps_T(count_calls, method):
    """torchdiffeq steps past the end time and interpolates back unless told otherwise; the score
    must only be called on [eps, T], in both directions (VE: large initial-step trial)."""
    sde, gm = VESDE(), _mixture(2)
    x = gm.sample(4, generator=torch.Generator().manual_seed(0))
    eps = sde.likelihood_eps
    for direction in ("encode", "decode"):
        fn = count_calls(gm.score_fn(sde))
        # the solver's own times (before the clamp that guards the initial-step trial)
        flow = lk._ProbabilityFlow(sde, fn, x.shape, x.dtype, "exact" if direction == "encode" else None)
        if direction == "encode":
            y0, t0, t1 = (x, torch.zeros(4)), eps, sde.T
        else:
            y0, t0, t1 = sde.prior_sampling(x.shape, generator=torch.Generator().manual_seed(1)), sde.T, eps
        lk._solve(flow, y0, t0, t1, method, 1e-3, 1e-3, {}, x.device)
        assert eps * (1 - 1e-6) <= fn.t_min and fn.t_max <= sde.T * (1 + 1e-12)
        assert int(flow.clamped) <= 1                  # at most torchdiffeq's initial-step trial
    fn = count_calls(gm.score_fn(sde))
    assert log_likelihood(sde, fn, x, method=method, rtol=1e-3, atol=1e-3).nfe == fn.calls


# ------------------------------------------------------------------ discrete data
class SmoothedUniform:
    """x_0 ~ U[lo, hi]^D; exact score and log-density of p_t = law of alpha x_0 + sigma z."""

    def __init__(self, lo, hi, dim):
        self.lo, self.hi, self.dim = lo, hi, dim

    def _ab(self, x, t, sde):
        tt = t.to(torch.float64)
        a = sde.alpha(tt)[:, None]
        s = sde.sigma(tt)[:, None]
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        return (xf - a * self.lo) / s, (xf - a * self.hi) / s, a, s

    @staticmethod
    def _log_diff_ndtr(u, v):
        """log(Phi(u) - Phi(v)) for u > v, evaluated on the side where the tails are accurate."""
        flip = (u + v) > 0
        u2, v2 = torch.where(flip, -v, u), torch.where(flip, -u, v)
        lu, lv = torch.special.log_ndtr(u2), torch.special.log_ndtr(v2)
        return lu + torch.log(-torch.expm1(lv - lu))

    def log_prob(self, x, t, sde):
        u, v, a, s = self._ab(x, t, sde)
        return (self._log_diff_ndtr(u, v) - torch.log(a * (self.hi - self.lo))).sum(1)

    def score_fn(self, sde):
        def score(x, t):
            u, v, a, s = self._ab(x, t, sde)
            log_norm = self._log_diff_ndtr(u, v)
            log_phi = lambda w: -0.5 * w ** 2 - 0.5 * math.log(2 * math.pi)  # noqa: E731
            sc = (torch.exp(log_phi(u) - log_norm) - torch.exp(log_phi(v) - log_norm)) / s
            return sc.reshape(x.shape).to(x.dtype)
        return score


@pytest.mark.parametrize("levels,data_range", [(4, (-1.0, 1.0)), (16, (0.0, 1.0))])
def test_bits_per_dim_of_uniform_discrete_data_equals_entropy(levels, data_range):
    """Codes uniform over `levels` values: entropy log2(levels) bits/dim. After dequantisation the
    data is uniform on [lo, hi]^D, whose smoothed score is known in closed form."""
    D, B = 2, 48
    sde = VPSDE()
    model = SmoothedUniform(*data_range, D)
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, levels, (B, D), generator=g)
    lo, hi = data_range
    x = lo + (hi - lo) * codes.double() / (levels - 1)          # on the data grid
    deq = Dequantization(levels, data_range)
    out = log_likelihood(sde, model.score_fn(sde), x, dequantization=deq, divergence="exact",
                         generator=torch.Generator().manual_seed(1))
    # a point within ~sigma(eps) of a cell-range edge has a lower p_eps (rare): the median is exact,
    # the mean within a small smoothing excess
    assert abs(float(out.bpd.median()) - math.log2(levels)) < 1e-3
    assert abs(float(out.bpd.mean()) - math.log2(levels)) < 0.02
    # per sample: logp = log p_eps(y) + D log(cell width), y the dequantised data (same generator)
    y = deq.dequantize(x, generator=torch.Generator().manual_seed(1))
    assert float(y.min()) >= lo and float(y.max()) <= hi
    eps = torch.full((B,), sde.likelihood_eps, dtype=torch.float64)
    exact = model.log_prob(y, eps, sde) + D * math.log((hi - lo) / levels)
    assert float((out.logp - exact).abs().max()) < 0.05
    # integer codes dequantise exactly like their grid values (same generator, same dtype)
    y_codes = deq.dequantize(codes, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(y_codes, y, rtol=0, atol=1e-12)


def test_dequantization_given_as_object_dict_or_tuple():
    sde, model = VPSDE(), SmoothedUniform(0.0, 1.0, 3)
    x = torch.randint(0, 8, (5, 3), generator=torch.Generator().manual_seed(0))
    res = [log_likelihood(sde, model.score_fn(sde), x, dequantization=dq, method="euler", options={"step_size": 0.5},
                          generator=torch.Generator().manual_seed(2)).bpd
           for dq in (Dequantization(8, (0, 1)), {"levels": 8, "data_range": (0, 1)}, (8, (0.0, 1.0)))]
    assert torch.equal(res[0], res[1]) and torch.equal(res[0], res[2])


def test_dequantization_offsets_and_helper():
    assert Dequantization(256, (-1, 1)).bits_offset == pytest.approx(7.0)
    assert Dequantization(256, (0, 1)).bits_offset == pytest.approx(8.0)
    assert Dequantization(256, (0, 256)).bits_offset == pytest.approx(0.0)
    assert Dequantization(256, (0, 255)).bits_offset == pytest.approx(-math.log2(255 / 256))
    d = Dequantization(32, (-2.0, 3.0))
    assert d.log_cell_volume(10) == pytest.approx(10 * math.log(5.0 / 32))
    k = torch.arange(32).repeat(100, 1)
    y = dequantize(k, 32, (-2.0, 3.0), generator=torch.Generator().manual_seed(0))
    assert y.dtype == torch.get_default_dtype() and y.shape == k.shape
    # every value lies in its own code's cell: floor((y - lo) / w) == k
    assert torch.equal(torch.floor((y.double() + 2.0) / d.cell_width).long(), k)
    # grid floats map back to their codes
    grid = -2.0 + 5.0 * k.double() / 31
    assert torch.equal(d.codes(grid), k)
    # uniform noise: the offsets within a cell are ~U[0,1)
    u = (y.double() + 2.0) / d.cell_width - k
    assert abs(float(u.mean()) - 0.5) < 0.02


# ------------------------------------------------------------------ bad input
def test_bad_input_raises_value_error():
    sde, gm = VPSDE(), _mixture(2)
    sf = gm.score_fn(sde)
    x = gm.sample(4, generator=torch.Generator().manual_seed(0))
    bad = x.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        log_likelihood(sde, sf, bad)
    bad[1, 0] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        encode(sde, sf, bad)
    with pytest.raises(ValueError, match="levels"):
        Dequantization(1, (0, 1))
    with pytest.raises(ValueError, match="levels"):
        log_likelihood(sde, sf, x, dequantization={"levels": 1})
    with pytest.raises(ValueError, match="dequantization must be"):
        log_likelihood(sde, sf, x, dequantization=256)
    with pytest.raises(ValueError, match="levels"):
        Dequantization(2.5, (0, 1))
    with pytest.raises(ValueError, match="data_range"):
        Dequantization(256, (1, 0))
    with pytest.raises(ValueError, match=r"outside the declared data_range.*\[0, 1\]"):
        log_likelihood(sde, sf, x.abs() + 1.5, dequantization=Dequantization(256, (0, 1)))
    with pytest.raises(ValueError, match="not on the grid"):
        Dequantization(4, (0, 1)).codes(torch.tensor([[0.5, 0.0]]))
    with pytest.raises(ValueError, match="codes must lie in"):
        Dequantization(4, (0, 1)).codes(torch.tensor([[0, 4]]))
    with pytest.raises(ValueError, match="floating point"):
        log_likelihood(sde, sf, torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="method"):
        log_likelihood(sde, sf, x, method="rk45")
    with pytest.raises(ValueError, match="divergence"):
        log_likelihood(sde, sf, x, divergence="trace")
    with pytest.raises(ValueError, match="probe"):
        log_likelihood(sde, sf, x, divergence="hutchinson", probe="normal")
    with pytest.raises(ValueError, match="n_probes"):
        log_likelihood(sde, sf, x, n_probes=0)
    with pytest.raises(ValueError, match="eps"):
        log_likelihood(sde, sf, x, eps=0.0)
    with pytest.raises(ValueError, match="rtol"):
        log_likelihood(sde, sf, x, rtol=-1e-5)
    with pytest.raises(ValueError, match=r"\(B, \*event_shape\)"):
        log_likelihood(sde, sf, x[0])

    def detached(x, t):
        with torch.no_grad():
            return sf(x, t)
    with pytest.raises(ValueError, match="no_grad"):
        log_likelihood(sde, detached, x)

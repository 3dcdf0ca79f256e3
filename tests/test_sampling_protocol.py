"""The solver protocol: metadata enforced, presets, after_step, no host sync per step, the shared
score wrapper and torchdiffeq table, and the docs' "adding a solver / an SDE" examples."""
import math
import re
from pathlib import Path

import pytest
import torch

import score_sde
from score_sde import likelihood
from score_sde.sampling import SOLVERS, NonFiniteError, Solver, base, defaults, sample, supporting_after_step
from score_sde.sampling.ode import ADAPTIVE_METHODS, FIXED_METHODS
from score_sde.sde import CountingScoreFn, torchdiffeq_methods

torch.set_num_threads(1)
DOCS = Path(__file__).resolve().parents[1] / "docs"
GAUSS = score_sde.Gaussian(torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64),
                           torch.diag(torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)))


# ------------------------------------------------------------------------------------------ metadata
def test_registry_is_built_from_the_classes():
    for key, cls in SOLVERS.items():
        assert issubclass(cls, Solver) and cls.name == key


@pytest.mark.parametrize("method", sorted(SOLVERS))
def test_evals_per_step_matches_counted_calls_for_every_method(method, count_calls):
    sde = score_sde.VPSDE()
    score = count_calls(GAUSS.score_fn(sde))
    solver = SOLVERS[method](sde)
    steps = None if (method == "ode" and solver.evals_per_step is None) else 5
    out = sample(sde, score, (8, 3), method=method, steps=steps, generator=torch.Generator().manual_seed(0))
    assert out.nfe == score.calls
    if solver.evals_per_step is not None:
        if method == "ddpm":        # `steps` grid points: steps - 1 ancestral steps + the posterior step
            assert out.nfe == (steps - 1) * solver.evals_per_step + 1
        else:
            assert out.nfe == steps * solver.evals_per_step + 1


@pytest.mark.parametrize("method", sorted(m for m, c in SOLVERS.items() if c.ode))
def test_a_corrector_on_an_ode_solver_is_refused_by_metadata(method, count_calls):
    """ODE solvers refuse a (Langevin) corrector; those that declare an ODE corrector of their
    own (UniC) refuse every other value of the option."""
    sde = score_sde.VPSDE()
    score = count_calls(GAUSS.score_fn(sde))
    own = "corrector" in SOLVERS[method].options
    with pytest.raises(ValueError, match=r"corrector must be .*'unic'" if own else r"ode=True.*no corrector"):
        sample(sde, score, (4, 3), method=method, corrector="langevin")
    assert score.calls == 0


def test_presets_fix_their_option_and_accept_the_rest():
    sde = score_sde.VPSDE()
    with pytest.raises(ValueError, match="fixes predictor='euler_maruyama'"):
        sample(sde, GAUSS.score_fn(sde), (4, 3), method="euler_maruyama", predictor="ancestral", steps=3)
    with pytest.raises(ValueError, match=r"'ddpm' fixes snr=0.16.*'pc'"):
        sample(sde, GAUSS.score_fn(sde), (4, 3), method="ddpm", snr=0.1)
    with pytest.raises(ValueError, match=r"does not accept option\(s\) \['eta'\]; they belong to \['ddim'"):
        sample(sde, GAUSS.score_fn(sde), (4, 3), method="euler_maruyama", eta=0.1)
    # a preset is the base class with its options fixed: the same samples as 'pc'
    a = sample(sde, GAUSS.score_fn(sde), (4, 3), method="ancestral", steps=4, corrector="langevin", snr=0.05,
               generator=torch.Generator().manual_seed(0))
    b = sample(sde, GAUSS.score_fn(sde), (4, 3), method="pc", steps=4, predictor="ancestral",
               corrector="langevin", snr=0.05, generator=torch.Generator().manual_seed(0))
    assert a.nfe == b.nfe == 9 and torch.equal(a.samples, b.samples)


def test_hooks_are_declared_on_the_base_class():
    for hook in ("validate", "default_eps", "prepare", "init_state", "step", "solve"):
        assert callable(getattr(Solver, hook))
    sde = score_sde.VESDE()
    assert SOLVERS["heun"](sde).default_eps() == defaults.eps_at_noise_level(sde, defaults.END_SIGMA)
    assert SOLVERS["ddpm"](sde).default_eps() == sde.T / sde.N


def test_a_deterministic_solver_may_not_draw_noise():
    class Noisy(Solver):
        name = "noisy_test"

        def step(self, m, x, t, s, state):
            return x + m.randn_like(x)
    SOLVERS["noisy_test"] = Noisy
    try:
        with pytest.raises(RuntimeError, match="stochastic=False"):
            sample(score_sde.VPSDE(), lambda x, t: -x, (4, 3), method="noisy_test", steps=2)
    finally:
        SOLVERS.pop("noisy_test")


# ------------------------------------------------------------------------------------------ after_step
@pytest.mark.parametrize("method,opts,per_step", [
    ("euler_maruyama", {}, 1), ("heun", {}, 1), ("ddim", {"eta": 0.5}, 1),
    ("pc", {"snr": 0.05, "n_steps": 2}, 3), ("pc", {"snr": 0.05, "order": "corrector_first"}, 2)])
def test_after_step_is_applied_and_the_solver_continues_from_it(method, opts, per_step):
    sde = score_sde.VPSDE()
    seen, states = [], []

    def clamp(x, t):
        assert isinstance(t, float)
        seen.append(t)
        return x.clamp(-0.1, 0.1)
    out = sample(sde, GAUSS.score_fn(sde), (64, 3), method=method, steps=5, after_step=clamp, grid="uniform_t",
                 final_step="none", callback=lambda d: states.append(d["x"]),
                 generator=torch.Generator().manual_seed(0), **opts)
    assert len(seen) == 5 * per_step
    lim = 0.1 + 1e-6
    assert len(states) == 5 and all(float(x.abs().max()) <= lim for x in states)  # the state is the clamped one
    assert float(out.samples.abs().max()) <= lim
    free = sample(sde, GAUSS.score_fn(sde), (64, 3), method=method, steps=5, final_step="none",
                  generator=torch.Generator().manual_seed(0), **opts)
    assert float(free.samples.abs().max()) > 0.2                       # so the clamp did something
    grid = score_sde.sampling.grids.uniform_t(sde, 5, defaults.resolve_eps(sde, None)).tolist()
    assert seen[-1] == grid[-1] and set(seen) <= set(grid)


@pytest.mark.parametrize("method", ["dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "ode", "sdeint"])
def test_after_step_is_refused_where_the_solver_cannot_take_it(method, count_calls):
    sde = score_sde.VPSDE()
    score = count_calls(GAUSS.score_fn(sde))
    with pytest.raises(ValueError, match=r"does not support after_step.*'euler_maruyama'.*'heun'"):
        sample(sde, score, (4, 3), method=method, after_step=lambda x, t: x)
    assert score.calls == 0
    assert method not in supporting_after_step()


# ------------------------------------------------------------------------------------------ host syncs
class Tracked(torch.Tensor):
    """A tensor that counts the host reads made on it (and on every tensor computed from it)."""
    reads = 0

    def __bool__(self):
        Tracked.reads += 1
        return super().__bool__()

    def item(self):
        Tracked.reads += 1
        return super().item()

    def __float__(self):
        Tracked.reads += 1
        return super().__float__()

    def __int__(self):
        Tracked.reads += 1
        return super().__int__()

    def tolist(self):
        Tracked.reads += 1
        return super().tolist()


@pytest.mark.parametrize("method,opts", [("dpmpp_2m", {}), ("heun", {}), ("euler", {}), ("ddim", {}),
                                         ("pc", {"snr": 0.05}), ("ancestral", {})])
def test_no_host_sync_per_step_for_fixed_grid_solvers(method, opts):
    sde = score_sde.VPSDE()
    reads = []
    for steps in (8, 40):
        Tracked.reads = 0
        x0 = torch.randn(16, 3, generator=torch.Generator().manual_seed(0)).as_subclass(Tracked)
        out = sample(sde, lambda x, t: -x, x_init=x0, method=method, steps=steps, **opts)
        assert isinstance(out.samples, Tracked)
        reads.append(Tracked.reads)
    assert reads[0] == reads[1] <= 2, reads        # independent of the number of steps


def test_non_finite_values_are_reported_at_the_first_bad_step():
    sde = score_sde.VPSDE()
    good = GAUSS.score_fn(sde)
    # uniform grid of 10 steps: the first score time below 0.5 is t_6 = 0.4000, used by step 6
    bad = lambda x, t: good(x, t) * (float("nan") if float(t[0]) < 0.5 else 1.0)  # noqa: E731
    with pytest.raises(NonFiniteError, match=r"step 6 \(from t=0\.4000"):
        sample(sde, bad, (4, 3), method="euler_maruyama", steps=10, grid="uniform_t")
    # and beyond the periodic host check: a NaN at step 70 of 100 is named too
    late = lambda x, t: good(x, t) * (float("nan") if float(t[0]) < 0.3 else 1.0)  # noqa: E731
    grid = score_sde.sampling.grids.uniform_t(sde, 100, sde.sampling_eps).tolist()
    first = next(i for i, t in enumerate(grid) if t < 0.3)
    assert first > base.FINITE_CHECK_EVERY
    with pytest.raises(NonFiniteError, match=rf"step {first} "):
        sample(sde, late, (4, 3), method="euler_maruyama", steps=100, grid="uniform_t", eps="paper")


# ------------------------------------------------------------------------------------------ shared pieces
@pytest.mark.parametrize("bad", [lambda x, t: torch.zeros(x.shape, dtype=torch.complex64),
                                 lambda x, t: torch.zeros(x.shape, dtype=torch.int64),
                                 lambda x, t: torch.zeros(x.shape, dtype=torch.bool)])
def test_non_floating_score_output_is_an_error_in_sampling_and_likelihood(bad):
    sde = score_sde.VPSDE()
    with pytest.raises(ValueError, match="real floating-point"):
        sample(sde, bad, (4, 3), method="dpmpp_2m", steps=2)
    with pytest.raises(ValueError, match="real floating-point"):
        likelihood.log_likelihood(sde, bad, torch.zeros(4, 3))


def test_counting_wrapper_counts_and_casts():
    c = CountingScoreFn(lambda x, t: x.double())
    out = c(torch.ones(2, 3), torch.ones(2))
    assert c.calls == c.nfe == 1 and out.dtype == torch.float32
    with pytest.raises(ValueError, match="shaped like x"):
        CountingScoreFn(lambda x, t: x[:, :1])(torch.ones(2, 3), torch.ones(2))


def test_one_torchdiffeq_table_for_sampling_and_likelihood(count_calls):
    table = torchdiffeq_methods()
    assert set(likelihood.ODE_METHODS) == set(ADAPTIVE_METHODS) | set(FIXED_METHODS) == set(table)
    assert "dopri5" in ADAPTIVE_METHODS and {"rk4", "heun2"} <= set(FIXED_METHODS)
    assert table["rk4"].evals_per_step == 4 and table["dopri5"].evals_per_step is None
    sde = score_sde.VPSDE()
    score = count_calls(GAUSS.score_fn(sde))     # heun2 was accepted only by the likelihood before
    out = sample(sde, score, (8, 3), method="ode", ode_method="heun2", steps=5)
    assert out.nfe == score.calls == 5 * 2 + 1


def test_shared_formulas_agree_between_tensor_and_scalar_views():
    sde = score_sde.subVPSDE()
    sch = sde.scalars()
    x, x0, sc = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64), \
        torch.randn(5, 3, dtype=torch.float64)
    t, s = 0.6, 0.35
    mean, std = sde.posterior(x, x0, t, s)
    assert torch.allclose(mean, sch.posterior_mean(x, x0, t, s), rtol=1e-12, atol=1e-12)
    assert math.isclose(float(std[0]), sch.posterior_std(t, s), rel_tol=1e-12)
    assert torch.allclose(sde.x0_from_score(x, torch.full((5,), t, dtype=torch.float64), sc),
                          sch.denoise(x, t, sc), rtol=1e-12)
    drift, _ = sde.reverse(lambda y, tt: sc, probability_flow=True).sde(x, t)
    assert torch.allclose(drift, sch.reverse_drift(x, t, sc, probability_flow=True), rtol=1e-12)


# ------------------------------------------------------------------------------------------ docs examples
def _section_code(path: Path, heading: str) -> str:
    text = path.read_text()
    start = text.index(heading)
    nxt = re.search(r"^## ", text[start + len(heading):], flags=re.M)
    section = text[start:start + len(heading) + (nxt.start() if nxt else len(text))]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, f"no python block under {heading!r} in {path.name}"
    return "\n".join(blocks)


@pytest.mark.parametrize("doc,heading", [("sampling.md", "## Adding a solver"), ("sde.md", "## Adding an SDE")])
def test_docs_adding_examples_run(doc, heading):
    before = dict(SOLVERS)
    exec(compile(_section_code(DOCS / doc, heading), f"{doc}:{heading}", "exec"), {"__name__": "docs_example"})
    assert SOLVERS == before

"""Per-step cost of our sampling loop against k-diffusion's, at equal NFE, with a trivial model.

What it measures: the time of the loop itself (argument checks, grid, schedule coefficients,
state updates, the non-finite record, the final step) with a model so cheap that the loop is
all there is. Both sides get the exact model of N(0, I) data, one operation on x and
two or three on the ``(B,)`` noise levels (ours: ``score_fn(x, t) = -x / (1 + sigma(t)^2)``;
k-diffusion's: ``denoiser(x, sigma) = x / (1 + sigma^2)``), the same number of model calls and the same
Karras noise levels (VE SDE, sigma from 80 to 0.002; k-diffusion then steps to 0, we take the
final denoising step: the same NFE). Cases: DPM-Solver++(2M) against ``sample_dpmpp_2m``, Heun
against ``sample_heun``, Euler against ``sample_euler``; data 64x2 and 64x3x32x32; 20 and 100
model calls (Heun: 2x-1). Runs are interleaved (ours and theirs in turn, the order alternating
between repeats, each case warmed up once untimed) in one process on one
thread and the script prints the median (and the minimum) of each and the ratio ours / k-diffusion.

k-diffusion is a benchmark-only dependency (not in any install requirement)::

    pip install k-diffusion --no-deps       # its sampling.py needs only torch, scipy, torchsde, torchdiffeq
    PYTHONPATH=. python benchmarks/loop_overhead.py [--repeats 9] [--quick]

Its package ``__init__`` imports training libraries, so ``k_diffusion/sampling.py`` is loaded by
file, with a two-function stand-in for ``k_diffusion/utils.py`` (``append_dims``) and, if tqdm
is missing, for ``tqdm.auto.trange``.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import types
from pathlib import Path

import torch

import score_sde
from score_sde.sampling import sample

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def load_k_diffusion_sampling():
    """``k_diffusion/sampling.py`` loaded by file (its package __init__ pulls training libraries)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("k-diffusion is not installed: pip install k-diffusion --no-deps")
    path = Path(list(spec.submodule_search_locations)[0]) / "sampling.py"
    pkg = types.ModuleType("_kdiff_bench")
    pkg.__path__ = []
    utils = types.ModuleType("_kdiff_bench.utils")

    def append_dims(x, target_dims):
        return x[(...,) + (None,) * (target_dims - x.ndim)]
    utils.append_dims = append_dims
    pkg.utils = utils
    sys.modules["_kdiff_bench"], sys.modules["_kdiff_bench.utils"] = pkg, utils
    try:
        import tqdm.auto  # noqa: F401
    except ImportError:
        tq = types.ModuleType("tqdm")
        auto = types.ModuleType("tqdm.auto")
        auto.trange = lambda n, disable=None: range(n)
        auto.tqdm = lambda it=None, disable=None, **kw: it
        tq.auto = auto
        sys.modules.setdefault("tqdm", tq)
        sys.modules.setdefault("tqdm.auto", auto)
    mspec = importlib.util.spec_from_file_location("_kdiff_bench.sampling", path)
    mod = importlib.util.module_from_spec(mspec)
    sys.modules["_kdiff_bench.sampling"] = mod
    mspec.loader.exec_module(mod)
    return mod


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=9, help="interleaved runs per case (median reported)")
    p.add_argument("--quick", action="store_true", help="only 20-call cases")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    K = load_k_diffusion_sampling()
    sde = score_sde.VESDE(sigma_min=SIGMA_MIN / 10, sigma_max=SIGMA_MAX)

    k = 2.0 * sde._log_ratio / sde.T

    def score_fn(x, t):              # exact score of N(0, I) data: -x / (1 + sigma(t)^2)
        s2 = torch.expm1(k * t) * sde.sigma_min ** 2
        return x / -(1.0 + s2).reshape((-1,) + (1,) * (x.ndim - 1))

    def denoiser(x, sigma):          # exact denoiser of N(0, I) data: x / (1 + sigma^2)
        return x / (1.0 + sigma ** 2).reshape((-1,) + (1,) * (x.ndim - 1))

    # equal noise levels: our grid in t is k-diffusion's Karras sigmas mapped through the SDE
    def our_grid(n):
        sig = K.get_sigmas_karras(n, SIGMA_MIN, SIGMA_MAX).to(torch.float64)[:-1]     # drop the final 0
        t = sde.t_from_log_snr(-2.0 * torch.log(sig))
        t[0] = sde.T
        return t

    cases = []
    for shape in ((64, 2), (64, 3, 32, 32)):
        for nfe in ((20,) if a.quick else (20, 100)):
            for ours, theirs in (("dpmpp_2m", "sample_dpmpp_2m"), ("heun", "sample_heun"),
                                 ("euler", "sample_euler")):
                cases.append((shape, nfe, ours, theirs))
    times = {c: ([], []) for c in cases}
    for rep in range(a.repeats):
        for c in cases:
            shape, nfe, ours, theirs = c
            grid = our_grid(nfe)                                  # nfe sigmas > 0: nfe - 1 steps + final
            sig_k = K.get_sigmas_karras(nfe, SIGMA_MIN, SIGMA_MAX)
            x0 = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * SIGMA_MAX

            def run_ours():
                return sample(sde, score_fn, x_init=x0, method=ours, grid=grid, eps=float(grid[-1]))

            def run_theirs():
                return K.__dict__[theirs](denoiser, x0, sig_k, disable=True)

            # one untimed call of each (fresh buffers of this size), then both timed, in an order
            # that alternates between repeats so that neither side always runs first
            run_ours(), run_theirs()
            order = ((0, run_ours), (1, run_theirs)) if rep % 2 == 0 else ((1, run_theirs), (0, run_ours))
            for side, fn in order:
                t0 = time.perf_counter()
                out = fn()
                times[c][side].append(time.perf_counter() - t0)
                if side == 0:
                    assert out.nfe == (2 * nfe - 1 if ours == "heun" else nfe), (c, out.nfe)
    print("medians (and minima, the steadier figure on a loaded machine) of the interleaved runs")
    print(f"{'data':>14} {'method':>9} {'NFE':>4} {'ours ms':>9} {'k-diff ms':>9} {'ratio':>6} "
          f"{'min ours':>9} {'min k-diff':>10} {'ratio':>6}")
    for c in cases:
        shape, nfe, ours, theirs = c
        mo, mk = statistics.median(times[c][0]), statistics.median(times[c][1])
        lo, lk = min(times[c][0]), min(times[c][1])
        n_calls = 2 * nfe - 1 if ours == "heun" else nfe
        print(f"{'x'.join(map(str, shape)):>14} {ours:>9} {n_calls:>4} {1e3 * mo:9.2f} {1e3 * mk:9.2f} {mo / mk:6.2f} "
              f"{1e3 * lo:9.2f} {1e3 * lk:10.2f} {lo / lk:6.2f}")


if __name__ == "__main__":
    main()

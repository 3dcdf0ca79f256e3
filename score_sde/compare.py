"""``score-sde compare``: one trained model, many solvers, many budgets (application layer).

For each solver of a list and each budget of a list (score-network evaluations, NFE), draw ``n``
samples from the same prior noise (the same seed for every row) and measure them:

* the data set's metric (:meth:`score_sde.data.Dataset.evaluation_kwargs` picks the feature space:
  the Digits FD for the digits, FID (and KID) for other images when the Inception weights file is
  present, the raw-coordinate Frechet distance and sliced Wasserstein distance for toy data), on
  clipped samples as the standard metric computes it and again without clipping (images), beside
  its *floor*: the same metric between two disjoint real sets of the same size;
* the share of values more than one quantisation level outside the data range, and the samples'
  pixel standard deviation (beside the real data's);
* the NFE actually used and the seconds taken.

A budget is turned into steps per solver from the solver's own count (``nfe(steps)`` is affine in
the steps, measured once on a dummy score): the largest number of steps whose NFE, the final
denoising call included, fits in the budget. Adaptive solvers (``"ode"``) ignore the budgets and
enter once, with the NFE they used.

Outputs under ``OUT`` (default ``WORKDIR/compare``): ``compare.json``, ``compare.md`` (the
table), ``compare_<metric>.png`` (metric against NFE per solver, log-scale NFE, the floor as a
dashed line) and ``grid_<solver>.png`` (one row of samples per budget; toy data: a scatter plot
of the largest budget's samples)::

    from score_sde.compare import run_compare
    res = run_compare(None, "runs/demo", solvers=["ddpm", "dpmpp_2m", "ode"], budgets=[20, 100], n=500)
    print(res["markdown"])
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from ml_collections import ConfigDict

from . import config as config_lib
from . import experiment as ex
from .evaluation import evaluate_samples
from .io import save_image_grid, save_metric_plot, save_visual, write_json, write_text
from .safe_pickle import WeightsFileError
from .sampling import SOLVERS, NonFiniteError, sample

__all__ = ["DEFAULT_SOLVERS", "DEFAULT_BUDGETS", "steps_for_budget", "sample_stats", "run_compare", "markdown_table",
           "parse_list"]

#: discrete DDPM ancestral, Euler-Maruyama, predictor-corrector, DDIM, Heun, DPM-Solver++(2M), adaptive ODE
DEFAULT_SOLVERS = ("ddpm", "euler_maruyama", "pc", "ddim", "heun", "dpmpp_2m", "ode")
#: score-network evaluations per sample
DEFAULT_BUDGETS = (10, 20, 50, 100, 1000)
#: samples per row drawn in the image grids
GRID_SAMPLES = 10


def _is_adaptive(sde, method: str) -> bool:
    return SOLVERS[method](sde).evals_per_step is None


def _probe_nfe(sde, method: str, steps: int) -> int:
    """NFE of ``steps`` steps of ``method``, final denoising call included, on a zero score."""
    out = sample(sde, lambda x, t: torch.zeros_like(x), (1, 1), method=method, steps=steps,
                 generator=torch.Generator().manual_seed(0), check_finite=False)
    return int(out.nfe)


def steps_for_budget(sde, method: str, budget: int) -> Optional[int]:
    """The most steps of ``method`` whose NFE (final denoising call included) is at most
    ``budget``; None for an adaptive solver or a budget below the solver's smallest run."""
    if method not in SOLVERS:
        raise ValueError(f"unknown method {method!r}; available methods: {sorted(SOLVERS)}")
    if _is_adaptive(sde, method):
        return None
    n2, n3 = _probe_nfe(sde, method, 2), _probe_nfe(sde, method, 3)
    per_step, offset = n3 - n2, n2 - 2 * (n3 - n2)
    if per_step <= 0:
        raise ValueError(f"method {method!r}: NFE does not grow with the steps ({n2} at 2, {n3} at 3)")
    steps = (int(budget) - offset) // per_step
    if steps < 2 and _probe_nfe(sde, method, 1) <= budget:
        return 1
    return steps if steps >= 2 else None


def sample_stats(x: torch.Tensor, ds) -> Dict[str, Optional[float]]:
    """``out_of_range``: share of values more than one quantisation level outside the data range
    (None for continuous data); ``pixel_std``: the standard deviation of all values."""
    x = x.detach().double()
    out = {"pixel_std": float(x.std()), "out_of_range": None}
    if ds.levels is not None:
        lo, hi = ds.data_range
        level = (hi - lo) / ds.levels
        out["out_of_range"] = float(((x < lo - level) | (x > hi + level)).double().mean())
    return out


def _fd_key(metrics: Dict) -> Optional[str]:
    for k in ("digits_fd", "fid", "raw_fd", "fd"):
        if k in metrics:
            return k
    return None


def _metrics(x: torch.Tensor, ds, cfg: ConfigDict, workdir, seed: int, device, clip: bool) -> Dict:
    kw = ds.evaluation_kwargs(x.shape[0], seed, workdir, split=cfg.eval.split)
    if kw["features"] != "raw":
        kw["device"] = device
    return evaluate_samples(x, seed=seed, clip=clip, **kw)


def _safe_metrics(x, ds, cfg, workdir, seed, device, clip) -> Dict:
    try:
        return _metrics(x, ds, cfg, workdir, seed, device, clip)
    except (FileNotFoundError, WeightsFileError) as e:   # no (usable) Inception weights file: no metric
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0]}


def markdown_table(res: Dict) -> str:
    """The comparison as a Markdown table (what ``compare.md`` holds)."""
    name = res["metric"] or "metric"
    floor = res.get("floor", {}).get(name)
    lines = [f"Model: {res['checkpoint']} (step {res['step']}); {res['n']} samples per row, seed {res['seed']}.",
             f"Metric: {name} (clipped to the data range, as standard; also unclipped); its floor between two "
             f"disjoint real sets of {res.get('floor', {}).get('n', '?')}: "
             + (f"{floor:.4g}" if isinstance(floor, float) else "n/a")
             + (f"; real data pixel std {res['data_pixel_std']:.3f}." if res.get("data_pixel_std") else "."),
             *([f"No metric: {res['floor']['error']}"] if res.get("floor", {}).get("error") else []),
             "",
             f"| solver | steps | NFE | {name} | {name} unclipped | out of range | pixel std | seconds |",
             "|---|---|---|---|---|---|---|---|"]

    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    for r in res["rows"]:
        if r.get("error"):
            lines.append(f"| {r['solver']} | {r['steps'] if r['steps'] is not None else 'adaptive'} | n/a | "
                         f"failed: {r['error']} | | | | {r['seconds']:.1f} |")
            continue
        lines.append(f"| {r['solver']} | {r['steps'] if r['steps'] is not None else 'adaptive'} | {r['nfe']} | "
                     f"{f(r['metric'], '.3f')} | {f(r['metric_unclipped'], '.3f')} | "
                     f"{'n/a' if r['out_of_range'] is None else format(100 * r['out_of_range'], '.2f') + '%'} | "
                     f"{r['pixel_std']:.3f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:   # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc="compare", dynamic_ncols=True)


def run_compare(cfg: Optional[ConfigDict], workdir, solvers: Sequence[str] = DEFAULT_SOLVERS,
                budgets: Sequence[int] = DEFAULT_BUDGETS, n: int = 1000, seed: int = 0, device=None,
                checkpoint: Optional[str] = None, run: Optional["ex.TrainedRun"] = None, out_dir=None,
                progress: bool = True, unclipped: bool = True,
                budgets_for: Optional[Dict[str, Sequence[int]]] = None) -> Dict:
    """Sample the run's model with every solver at every budget and measure each row (module doc).

    Args:
        cfg: the run's config (None: ``WORKDIR/config.json``).
        workdir: the run directory (its newest checkpoint unless ``checkpoint``).
        solvers: method names of :data:`score_sde.sampling.SOLVERS`.
        budgets: NFE budgets (positive ints); adaptive solvers enter once.
        n: samples per row. seed: the prior noise of every row (batch ``i``: ``seed * 1_000_003 + i``).
        run: an already loaded :class:`score_sde.experiment.TrainedRun` to reuse.
        out_dir: where the files go (default ``WORKDIR/compare``).
        unclipped: also compute the metric without clipping (images).
        budgets_for: ``{solver: budgets}`` replacing ``budgets`` for those solvers (e.g. the
            stochastic solvers at larger budgets than the ODE solvers).

    Returns the dict written to ``compare.json``: ``rows`` (``solver``, ``steps``, ``nfe``,
    ``budget``, ``metric``, ``metric_unclipped``, ``metrics`` (everything the evaluation
    returned), ``out_of_range``, ``pixel_std``, ``seconds``; a solver that diverged (non-finite values) has
    ``error`` and None values), ``metric`` (its name), ``floor``,
    ``data_pixel_std``, ``files`` and ``markdown``.
    """
    solvers = list(solvers)
    budgets = sorted({int(b) for b in budgets})
    if not solvers or not budgets or min(budgets) < 1:
        raise ValueError(f"need at least one solver and budgets >= 1, got solvers={solvers}, budgets={budgets}")
    unknown = [m for m in solvers if m not in SOLVERS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available methods: {sorted(SOLVERS)}")
    if int(n) < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    workdir = Path(workdir)
    run = run if run is not None else ex.load_trained(workdir, cfg, device, checkpoint)
    cfg, ds, dev = run.cfg, run.data, run.device
    out_dir = Path(out_dir) if out_dir else workdir / "compare"
    eps = config_lib.sampler_kwargs(cfg, solvers[0], 1).get("eps")

    plan = []   # (solver, steps, budget)
    for m in solvers:
        if _is_adaptive(run.sde, m):
            plan.append((m, None, None))
            continue
        seen = set()
        for b in sorted({int(v) for v in (budgets_for or {}).get(m, budgets)}):
            s = steps_for_budget(run.sde, m, b)
            if s is not None and s not in seen:
                seen.add(s)
                plan.append((m, s, b))

    # the floor: the same metric between a real set of n and the metric's reference
    floor_split = "train" if cfg.eval.split == "test" else "test"
    real = ds.eval_data(floor_split, int(n), generator=torch.Generator().manual_seed(seed))
    floor = _safe_metrics(real, ds, cfg, workdir, seed, dev, clip=True)
    name = _fd_key(floor)
    floor_out = {"n": int(real.shape[0]), "split": floor_split if ds.levels is not None else "fresh samples"}
    if name:
        floor_out[name] = floor[name]
    if "error" in floor:
        floor_out["error"] = floor["error"]

    rows: List[Dict] = []
    shown: Dict[str, List[torch.Tensor]] = {}
    bar = _progress(len(plan), progress)
    for m, steps, b in plan:
        t0 = time.perf_counter()
        try:
            x, nfe = ex.draw_samples(run.sde, run.model, ds.event_shape, int(n), m, steps, seed, dev,
                                     cfg.sampling.batch_size, eps=eps, **config_lib.solver_options(cfg, m))
        except NonFiniteError as e:     # a diverging solver is a result of the comparison, not a crash
            rows.append({"solver": m, "steps": steps, "budget": b, "nfe": None, "metric": None,
                         "metric_unclipped": None, "out_of_range": None, "pixel_std": None,
                         "seconds": time.perf_counter() - t0, "error": str(e).splitlines()[0]})
            if bar is not None:
                bar.update(1)
            continue
        secs = time.perf_counter() - t0
        met = _safe_metrics(x, ds, cfg, workdir, seed, dev, clip=True)
        key = _fd_key(met)
        unc = None
        if unclipped and ds.levels is not None and key:
            um = _safe_metrics(x, ds, cfg, workdir, seed, dev, clip=False)
            unc = um.get(key)
        row = {"solver": m, "steps": steps, "budget": b, "nfe": int(nfe), "metric": met.get(key) if key else None,
               "metric_unclipped": unc, **sample_stats(x, ds), "seconds": secs,
               "metrics": {k: v for k, v in met.items() if isinstance(v, (int, float, str)) or v is None}}
        rows.append(row)
        shown.setdefault(m, []).append(x[:GRID_SAMPLES].cpu() if ds.kind == "image" else x.cpu())
        if bar is not None:
            v = row["metric"]
            bar.set_postfix_str(f"{m} NFE {nfe}: {name}={v if v is None else round(v, 3)}")
            bar.update(1)
    if bar is not None:
        bar.close()

    res = {"workdir": str(workdir), "checkpoint": str(run.checkpoint), "step": run.step, "n": int(n),
           "seed": int(seed), "solvers": solvers, "budgets": budgets,
           "budgets_for": {k: list(v) for k, v in (budgets_for or {}).items()}, "eps": eps, "metric": name,
           "floor": floor_out, "data_pixel_std": float(real.double().std()), "rows": rows}

    files = {}
    series = {m: [(r["nfe"], r["metric"]) for r in rows if r["solver"] == m and r["nfe"] is not None]
              for m in solvers}
    if name and any(r["metric"] is not None for r in rows):
        files["plot"] = str(save_metric_plot(series, out_dir / f"compare_{name}.png", xlabel="NFE (log scale)",
                                             ylabel=f"{name} (clipped)", title=f"{ds.name}: {name} against NFE",
                                             hlines={f"floor (real vs real, n={floor_out['n']})": floor_out.get(name)}))
    for m, xs in shown.items():
        if ds.kind == "image":
            kind, imgs, scale = ds.visual(torch.cat(xs))
            files[f"grid_{m}"] = str(save_image_grid(imgs, out_dir / f"grid_{m}.png", nrow=GRID_SAMPLES, scale=scale))
        else:
            files[f"grid_{m}"] = str(save_visual(ds.visual(xs[-1]), out_dir / f"grid_{m}.png", title=m))
    res["files"] = files
    res["markdown"] = markdown_table(res)
    files["markdown"] = str(write_text(out_dir / "compare.md", res["markdown"]))
    files["json"] = str(out_dir / "compare.json")
    write_json(out_dir / "compare.json", res)
    return res


def parse_list(text: Optional[str], cast=str) -> Optional[List]:
    """``"a,b,c"`` -> ``[cast(a), ...]`` (None stays None)."""
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise ValueError(f"expected a comma-separated list of {cast.__name__} values, got {text!r}") from None

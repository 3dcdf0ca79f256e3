"""The ``score-sde`` command line (also ``python -m score_sde``).

Subcommands (``score-sde <cmd> -h`` for every option)::

    score-sde train      --config configs/vp/digits.py --workdir runs/digits [--config.training.n_iters=2000]
    score-sde sample     --workdir runs/digits --method dpmpp_2m --steps 50 --n 64 --seed 0
    score-sde likelihood --workdir runs/digits --split test
    score-sde evaluate   --workdir runs/digits --method dpmpp_2m --steps 50
    score-sde demo       --workdir runs/demo          # the main job: train, sample, bits/dim, metrics
    score-sde configs                                 # list the shipped configs

``train`` writes ``WORKDIR/config.json``, ``log.jsonl``, ``checkpoints/`` and sample snapshots, and
resumes from the newest good checkpoint when run again. The other commands read the config from
``WORKDIR/config.json`` (``--config`` and ``--config.*`` overrides change it) and the EMA weights
of the newest checkpoint. Outputs: PNG grids for images, scatter plots for 2-D data, ``.npz``
arrays, metrics as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from ml_collections import ConfigDict

from . import builders
from . import data as data_lib

__all__ = ["main", "run_train", "run_sample", "run_likelihood", "run_evaluate", "load_trained",
           "load_run_config", "save_image_grid", "save_scatter", "save_samples", "write_json", "evaluate_model_samples"]


# ---------------------------------------------------------------------------------------------
# small output helpers
# ---------------------------------------------------------------------------------------------

def write_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON (atomically: temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def save_image_grid(images: torch.Tensor, path, nrow: Optional[int] = None, scale: int = 1, pad: int = 2) -> Path:
    """Save uint8 images ``(B, C, H, W)`` (C = 1 or 3) as one PNG grid, each upscaled ``scale`` times."""
    from PIL import Image

    images = images.detach().cpu()
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be uint8 (B, 1|3, H, W), got {images.dtype} {tuple(images.shape)}")
    B, C, H, W = images.shape
    nrow = nrow or int(math.ceil(math.sqrt(B)))
    ncol = int(math.ceil(B / nrow))
    h, w = H * scale, W * scale
    grid = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, C), 128, dtype=np.uint8)  # grey separators
    arr = images.permute(0, 2, 3, 1).numpy()
    if scale > 1:
        arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
    for i in range(B):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = arr[i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[:, :, 0] if C == 1 else grid).save(path)
    return path


def save_scatter(points: torch.Tensor, path, title: str = "", lim: float = 3.0, reference: Optional[torch.Tensor] = None
                 ) -> Path:
    """Scatter plot of 2-D points ``(B, 2)`` as PNG (matplotlib if installed, else drawn with PIL)."""
    pts = points.detach().cpu().float().numpy()
    ref = reference.detach().cpu().float().numpy() if reference is not None else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
    if plt is not None:
        ncols = 2 if ref is not None else 1
        fig, axes = plt.subplots(1, ncols, figsize=(4 * ncols, 4), squeeze=False)
        panels = [(pts, title or "samples")] + ([(ref, "data")] if ref is not None else [])
        for ax, (p, name) in zip(axes[0], panels):
            ax.scatter(p[:, 0], p[:, 1], s=1, alpha=0.5)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_title(name)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
    from PIL import Image, ImageDraw

    size = 400
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    xy = (pts + lim) / (2 * lim) * (size - 1)
    for x, y in xy:
        if 0 <= x < size and 0 <= y < size:
            draw.point((float(x), float(size - 1 - y)), fill=(31, 119, 180))
    img.save(path)
    return path


def save_samples(samples: torch.Tensor, ds: data_lib.Dataset, out_stem, title: str = "") -> Dict[str, str]:
    """Write ``out_stem.npz`` and ``out_stem.png`` (grid or scatter) for model-space samples."""
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"samples": samples.detach().cpu().float().numpy()}
    if ds.kind == "image":
        levels = data_lib.to_levels(samples.detach().cpu(), ds.levels, centered=ds.centered)
        arrays["levels"] = levels.numpy()
        n = min(samples.shape[0], 100)
        vis = levels[:n]
        if ds.levels != 256:   # stretch e.g. 17 grey levels to 0..255 for viewing
            vis = (vis.float() * (255.0 / (ds.levels - 1))).round().to(torch.uint8)
        png = save_image_grid(vis, out_stem.with_suffix(".png"), scale=max(1, 64 // ds.event_shape[-1]))
    else:
        png = save_scatter(samples, out_stem.with_suffix(".png"), title=title)
    npz = out_stem.with_suffix(".npz")
    np.savez_compressed(npz, **arrays)
    return {"png": str(png), "npz": str(npz)}


# ---------------------------------------------------------------------------------------------
# configs of runs, trained models
# ---------------------------------------------------------------------------------------------

def _tuples(v):
    if isinstance(v, dict):
        return {k: _tuples(x) for k, x in v.items()}
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    return v


def load_run_config(workdir, config: Optional[str] = None, overrides: Sequence[str] = ()) -> ConfigDict:
    """The config of a run: ``--config`` if given, else ``WORKDIR/config.json``; then overrides."""
    if config:
        return builders.load_config(config, overrides)
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train first (score-sde train --config ... --workdir {workdir}) "
                                f"or pass --config")
    try:
        saved = _tuples(json.loads(path.read_text()))
    except ValueError as e:
        raise ValueError(f"{path} is not a valid JSON config: {e}") from None
    # keys added to the defaults since the run was trained take their default values
    merged = builders.default_config().to_dict()
    for k, v in saved.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict) and k != "model":
            merged[k].update(v)
        else:
            merged[k] = v
    return builders.apply_overrides(ConfigDict(merged), overrides)


def _device(name: Optional[str]) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_trained(workdir, cfg: ConfigDict, device=None, checkpoint: Optional[str] = None):
    """``(sde, score model with EMA weights in eval mode, checkpoint path, step)`` of a run."""
    from .training import load_checkpoint, latest_checkpoint, load_model

    path = Path(checkpoint) if checkpoint else latest_checkpoint(Path(workdir) / "checkpoints")
    if path is None:
        raise FileNotFoundError(f"no checkpoint under {Path(workdir) / 'checkpoints'}: train first with "
                                f"score-sde train --workdir {workdir}")
    sde = builders.build_sde(cfg)
    model = builders.build_model(cfg, sde)
    load_model(path, model, ema=True)
    step = int(load_checkpoint(path)["step"])
    model.to(device).eval().requires_grad_(False)
    return sde, model, path, step


def _draw(sde, model, ds, n, method, steps, seed, device, batch_size, eps=None, **options):
    """``n`` samples in batches; per-batch generators seeded from (seed, batch index)."""
    from .sampling import sample

    out, nfe = [], 0
    for i, start in enumerate(range(0, n, batch_size)):
        b = min(batch_size, n - start)
        g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + i)
        kw = {} if eps is None else {"eps": eps}
        with torch.no_grad():
            res = sample(sde, model, (b, *ds.event_shape), method=method, steps=steps, generator=g, device=device,
                         **kw, **options)
        out.append(res.samples.float())
        nfe = res.nfe
    return torch.cat(out), nfe


# ---------------------------------------------------------------------------------------------
# the commands as functions
# ---------------------------------------------------------------------------------------------

def _train_data(ds: data_lib.Dataset):
    """``(data, transform)`` for :func:`score_sde.training.train`."""
    if ds.kind == "points":
        return (lambda n, generator=None: ds.sample(n, generator=generator)), None
    raw = ds.raw("train")
    data = raw.float() if raw.numel() <= 50_000_000 else data_lib.LevelsDataset(raw)
    return data, (lambda x, generator: ds.preprocess(x, generator=generator, train=True))


def run_train(cfg: ConfigDict, workdir, device=None, progress: bool = True):
    """Train the model of ``cfg`` in ``workdir`` (resuming); returns the TrainResult."""
    from .training import train

    workdir = Path(workdir)
    sde = builders.build_sde(cfg)
    ds = builders.build_data(cfg)
    model = builders.build_model(cfg, sde)
    loss_fn = builders.build_loss(cfg, sde)
    data, transform = _train_data(ds)
    s = cfg.sampling
    kw = builders.sampler_kwargs(cfg)

    def snapshot(ema_model, step, wd):
        was = ema_model.training
        ema_model.eval()
        dev = next(ema_model.parameters()).device
        x, _ = _draw(sde, ema_model, ds, min(s.n, 2000 if ds.kind == "points" else 64), kw["method"], kw["steps"],
                     seed=step, device=dev, batch_size=s.batch_size, eps=kw.get("eps"))
        save_samples(x, ds, Path(wd) / "snapshots" / f"samples_{step:08d}", title=f"step {step}")
        ema_model.train(was)

    return train(model, loss_fn, data, workdir=workdir, transform=transform, config=cfg.to_dict(),
                 snapshot_fn=snapshot, device=device, progress=progress, **builders.train_kwargs(cfg))


def _sample_trained(cfg, workdir, method, steps, n, seed, device, checkpoint, **options):
    """Load the run's model and draw ``n`` samples; returns (ds, sampler kwargs, x, nfe, seconds,
    checkpoint path, step)."""
    sde, model, path, step = load_trained(workdir, cfg, device, checkpoint)
    ds = builders.build_data(cfg)
    kw = builders.sampler_kwargs(cfg, method, steps)
    t0 = time.perf_counter()
    x, nfe = _draw(sde, model, ds, n, kw["method"], kw["steps"], seed, device, cfg.sampling.batch_size,
                   eps=kw.get("eps"), **options)
    return ds, kw, x, nfe, time.perf_counter() - t0, path, step


def run_sample(cfg: ConfigDict, workdir, method: Optional[str] = None, steps: Optional[int] = None,
               n: Optional[int] = None, seed: int = 0, device=None, out: Optional[str] = None,
               checkpoint: Optional[str] = None, **options) -> Dict:
    """Sample ``n`` points/images with ``method``; writes npz + png and returns a summary dict."""
    device = _device(device)
    n = int(n or cfg.sampling.n)
    ds, kw, x, nfe, secs, path, step = _sample_trained(cfg, workdir, method, steps, n, seed, device, checkpoint,
                                                       **options)
    stem = Path(out) if out else Path(workdir) / "samples" / f"{kw['method']}_{kw['steps']}steps_seed{seed}"
    files = save_samples(x, ds, stem, title=f"{kw['method']}, {kw['steps']} steps, NFE {nfe}")
    summary = {"method": kw["method"], "steps": kw["steps"], "nfe": nfe, "n": n, "seed": seed, "seconds": secs,
               "checkpoint": str(path), "step": step, **files}
    if ds.kind == "points" and ds.name == "checkerboard":
        summary["fraction_on_board"] = float(torch.isfinite(data_lib.checkerboard_log_prob(x)).float().mean())
    return summary


def run_likelihood(cfg: ConfigDict, workdir, split: Optional[str] = None, n: Optional[int] = None, seed: int = 0,
                   device=None, checkpoint: Optional[str] = None) -> Dict:
    """Negative log-likelihood through the probability-flow ODE.

    Images: bits/dim of the ``split`` (discrete data, uniform dequantisation). Toy data: NLL in
    nats of ``n`` fresh points (for the checkerboard compared with its entropy log 8).
    The density is that of the data at t = eps (``sde.likelihood_eps``).
    """
    from .likelihood import log_likelihood

    device = _device(device)
    sde, model, path, step = load_trained(workdir, cfg, device, checkpoint)
    ds = builders.build_data(cfg)
    e = cfg.eval
    split = split or e.split
    g = torch.Generator(device=device).manual_seed(seed)
    if ds.kind == "points":
        x = ds.sample(int(n or e.num_points), generator=torch.Generator().manual_seed(seed))
        deq = None
    else:
        x = ds.raw(split)
        x = x[: int(n)] if n else x
        deq = ds.dequantization
    logps, nfes = [], []
    t0 = time.perf_counter()
    for start in range(0, x.shape[0], e.batch_size):
        xb = x[start:start + e.batch_size].to(device)
        res = log_likelihood(sde, model, xb, rtol=e.rtol, atol=e.atol, generator=g, dequantization=deq,
                             divergence=e.divergence, n_probes=e.n_probes)
        logps.append(res.logp.detach().double().cpu())
        nfes.append(res.nfe)
    logp = torch.cat(logps)
    D = ds.dim
    out = {"split": split if ds.kind == "image" else "fresh samples", "n": int(logp.numel()),
           "nll_nats": float(-logp.mean()), "nll_nats_stderr": float(logp.std() / math.sqrt(logp.numel())),
           "bits_per_dim": float(-logp.mean() / (D * math.log(2))),
           "bits_per_dim_stderr": float(logp.std() / math.sqrt(logp.numel()) / (D * math.log(2))),
           "nfe_mean": float(np.mean(nfes)), "rtol": e.rtol, "atol": e.atol, "t_eps": sde.likelihood_eps,
           "seconds": time.perf_counter() - t0, "checkpoint": str(path), "step": step}
    if ds.kind == "points" and ds.name == "checkerboard":
        out["true_entropy_nats"] = data_lib.CHECKERBOARD_ENTROPY
        out["gap_nats"] = out["nll_nats"] - data_lib.CHECKERBOARD_ENTROPY
    return out


def run_evaluate(cfg: ConfigDict, workdir, method: Optional[str] = None, steps: Optional[int] = None,
                 n: Optional[int] = None, seed: int = 0, device=None, checkpoint: Optional[str] = None) -> Dict:
    """Sample-quality metrics of the run's model against its data (see :func:`evaluate_model_samples`)."""
    device = _device(device)
    n = int(n or cfg.eval.num_samples)
    ds, kw, x, nfe, secs, path, step = _sample_trained(cfg, workdir, method, steps, n, seed, device, checkpoint)
    metrics = evaluate_model_samples(x, ds, cfg, workdir, seed=seed, device=device)
    return {"method": kw["method"], "steps": kw["steps"], "nfe": nfe, "n": n, "sampling_seconds": secs,
            "checkpoint": str(path), "step": step, "metrics": metrics}


def evaluate_model_samples(x: torch.Tensor, ds: data_lib.Dataset, cfg: ConfigDict, workdir, seed: int = 0,
                           device=None) -> Dict:
    """Metrics of model-space samples ``x`` against the data (score_sde.evaluation).

    Digits: the digits-classifier Frechet distance / KID / classifier score against the test
    split. Other images: FID / IS / KID against the ``config.eval.split`` split (Inception
    weights needed; statistics cached in WORKDIR). Toy data: raw Frechet distance and sliced
    Wasserstein against fresh data points (and, for the checkerboard, the fraction on the board).
    """
    from .evaluation import evaluate_samples, level_range

    if ds.kind == "points":
        ref = ds.sample(x.shape[0], generator=torch.Generator().manual_seed(10_000 + seed))
        out = evaluate_samples(x, features="raw", reference=ref, seed=seed)
        if ds.name == "checkerboard":
            out["fraction_on_board"] = float(torch.isfinite(data_lib.checkerboard_log_prob(x.cpu())).float().mean())
        return out
    rng = level_range(ds.levels, ds.centered)
    if ds.name == "digits":
        cache = Path(workdir) / "digits_classifier.pt"
        return evaluate_samples(x, features="digits", data_range=rng, seed=seed, device=device,
                                digits_classifier=str(cache))
    split = cfg.eval.split
    ref = ds.raw(split)
    return evaluate_samples(x, features="inception", reference=ref, data_range=rng, seed=seed, device=device,
                            reference_cache=str(Path(workdir) / f"inception_stats_{ds.name}_{split}.npz"))


# ---------------------------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="score-sde", description="Score-based generative models through SDEs: train, "
                                "sample, likelihood, evaluate. Config overrides: --config.SECTION.KEY=VALUE.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp, config_required=False):
        sp.add_argument("--workdir", required=True, help="run directory (checkpoints, config.json, outputs)")
        sp.add_argument("--config", required=config_required, default=None,
                        help="config file (a path or a shipped name such as vp/digits)"
                        + ("" if config_required else "; default: WORKDIR/config.json"))
        sp.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")

    sp = sub.add_parser("train", help="train (or resume) a model from a config")
    common(sp, config_required=False)
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")

    for name, hlp in (("sample", "draw samples with any solver of score_sde.sampling.SOLVERS"),
                      ("evaluate", "sample and compute metrics (JSON)")):
        sp = sub.add_parser(name, help=hlp)
        common(sp)
        sp.add_argument("--method", default=None, help="solver name (default: config.sampling.method)")
        sp.add_argument("--steps", type=int, default=None, help="solver steps (default: config.sampling.steps)")
        sp.add_argument("--n", type=int, default=None, help="number of samples")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--checkpoint", default=None, help="a checkpoint file (default: the newest in WORKDIR)")
        if name == "sample":
            sp.add_argument("--out", default=None, help="output path stem (default WORKDIR/samples/...)")

    sp = sub.add_parser("likelihood", help="bits/dim (images) or NLL (toy data) through the probability-flow ODE")
    common(sp)
    sp.add_argument("--split", default=None, choices=["train", "test"], help="data split (default config.eval.split)")
    sp.add_argument("--n", type=int, default=None, help="number of examples (default: the whole split)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--checkpoint", default=None)

    sp = sub.add_parser("demo", help="the main job: train on digits, sample with two solvers, test bits/dim")
    sp.add_argument("--workdir", default="runs/demo")
    sp.add_argument("--config", default=None, help="another config to run the demo with (default: embedded digits)")
    sp.add_argument("--device", default=None)
    sp.add_argument("--quick", action="store_true", help="a 1-minute smoke run (few steps, small test subset)")
    sp.add_argument("--no-progress", action="store_true")

    sub.add_parser("configs", help="list the shipped config files")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``score-sde`` / ``python -m score_sde``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        overrides, rest = builders.parse_override_args(argv)
    except ValueError as e:
        parser.error(str(e))
    args = parser.parse_args(rest)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return _dispatch(args, overrides)
    except (ValueError, FileNotFoundError) as e:
        print(f"score-sde {args.command}: error: {e}", file=sys.stderr)
        return 1


def _dispatch(args, overrides: List[str]) -> int:
    if args.command == "configs":
        for name in builders.list_configs():
            print(name)
        return 0
    if args.command == "demo":
        from .main_job import run_demo

        res = run_demo(args.workdir, config=args.config, overrides=overrides, device=args.device, quick=args.quick,
                       progress=not args.no_progress)
        print(json.dumps(res["summary"], indent=2))
        return 0
    workdir = Path(args.workdir)
    if args.command == "train":
        if args.config is None and not (workdir / "config.json").is_file():
            raise ValueError("train needs --config (a file or a shipped name; see `score-sde configs`), or a "
                             "WORKDIR with config.json to resume")
        cfg = load_run_config(workdir, args.config, overrides)
        res = run_train(cfg, workdir, device=args.device, progress=not args.no_progress)
        print(json.dumps({"step": res.step, "checkpoint": str(res.checkpoint), "workdir": str(workdir)}))
        return 0
    cfg = load_run_config(workdir, args.config, overrides)
    if args.command == "sample":
        res = run_sample(cfg, workdir, args.method, args.steps, args.n, args.seed, args.device, args.out,
                         args.checkpoint)
        write_json(Path(res["npz"]).with_suffix(".json"), res)
    elif args.command == "likelihood":
        res = run_likelihood(cfg, workdir, args.split, args.n, args.seed, args.device, args.checkpoint)
        write_json(workdir / f"likelihood_{res['split'].replace(' ', '_')}.json", res)
    elif args.command == "evaluate":
        res = run_evaluate(cfg, workdir, args.method, args.steps, args.n, args.seed, args.device, args.checkpoint)
        write_json(workdir / f"metrics_{res['method']}_{res['steps']}steps.json", res)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``score-sde`` command line (also ``python -m score_sde``).

Subcommands (``score-sde <cmd> -h`` for every option)::

    score-sde train      --config configs/vp/digits.py --workdir runs/digits [--config.training.n_iters=2000]
    score-sde sample     --workdir runs/digits --method dpmpp_2m --steps 50 --n 64 --seed 0
    score-sde likelihood --workdir runs/digits --split test
    score-sde evaluate   --workdir runs/digits --method dpmpp_2m --steps 50
    score-sde compare    --workdir runs/digits [--solvers ddpm,dpmpp_2m,ode] [--budgets 10,20,50] [--n 1000]
    score-sde demo       --workdir runs/demo          # the main job: train, sample, bits/dim, metrics
    score-sde convert    SRC.pth DST.pt --config ddpmpp_cifar10   # a released checkpoint of the paper
    score-sde configs                                 # list the shipped configs

``train`` writes ``WORKDIR/config.json``, ``log.jsonl``, ``checkpoints/`` and sample snapshots, and
resumes from the newest good checkpoint when run again. The other commands read the config from
``WORKDIR/config.json`` (``--config`` and ``--config.*`` overrides change it) and the EMA weights
of the newest checkpoint. Outputs: PNG grids for images, scatter plots for 2-D data, ``.npz``
arrays, metrics as JSON.

This module only parses arguments and dispatches: the operations are in
:mod:`score_sde.experiment`, the demo in :mod:`score_sde.demo`, conversion in
:mod:`score_sde.interop`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from . import experiment as ex
from .compare import DEFAULT_BUDGETS, DEFAULT_SOLVERS, parse_list, run_compare
from .config import list_configs, load_run_config, parse_override_args
from .io import write_json

__all__ = ["main"]


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

    sp = sub.add_parser("convert", help="convert a released checkpoint of the paper's code (checkpoint_N.pth of "
                        "yang-song/score_sde_pytorch) into this package's checkpoint format")
    sp.add_argument("src", help="the released checkpoint_N.pth")
    sp.add_argument("dst", help="where to write the converted checkpoint")
    sp.add_argument("--config", required=True, help="a reference config name (e.g. vp_cifar10_ddpmpp_continuous, "
                    "ncsnpp_cifar10; see score_sde.config.reference_names()) or a config file defining get_config()")

    sp = sub.add_parser("compare", help="sample the trained model with many solvers at many NFE budgets: table "
                        "(JSON, Markdown), metric-against-NFE plot, one image grid per solver")
    common(sp)
    sp.add_argument("--solvers", default=None, help="comma-separated methods (default: "
                    + ",".join(DEFAULT_SOLVERS) + ")")
    sp.add_argument("--budgets", default=None, help="comma-separated NFE budgets (default: "
                    + ",".join(map(str, DEFAULT_BUDGETS)) + "); adaptive solvers enter once")
    sp.add_argument("--n", type=int, default=1000, help="samples per solver and budget")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--checkpoint", default=None)
    sp.add_argument("--out", default=None, help="output folder (default WORKDIR/compare)")
    sp.add_argument("--no-progress", action="store_true")

    sub.add_parser("configs", help="list the shipped config files")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``score-sde`` / ``python -m score_sde``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        overrides, rest = parse_override_args(argv)
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
        for name in list_configs():
            print(name)
        return 0
    if args.command == "convert":
        print(f"wrote {ex.convert_checkpoint(args.src, args.dst, args.config)}")
        return 0
    if args.command == "demo":
        from .demo import run_demo

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
        res = ex.run_train(cfg, workdir, device=args.device, progress=not args.no_progress)
        print(json.dumps({"step": res.step, "checkpoint": str(res.checkpoint), "workdir": str(workdir)}))
        return 0
    cfg = load_run_config(workdir, args.config, overrides)
    if args.command == "compare":
        res = run_compare(cfg, workdir, solvers=parse_list(args.solvers) or DEFAULT_SOLVERS,
                          budgets=parse_list(args.budgets, int) or DEFAULT_BUDGETS, n=args.n, seed=args.seed,
                          device=args.device, checkpoint=args.checkpoint, out_dir=args.out,
                          progress=not args.no_progress)
        print(res["markdown"], end="")
        print(json.dumps(res["files"], indent=2))
        return 0
    if args.command == "sample":
        res = ex.run_sample(cfg, workdir, args.method, args.steps, args.n, args.seed, args.device, args.out,
                         args.checkpoint)
        write_json(Path(res["npz"]).with_suffix(".json"), res)
    elif args.command == "likelihood":
        res = ex.run_likelihood(cfg, workdir, args.split, args.n, args.seed, args.device, args.checkpoint)
        write_json(workdir / f"likelihood_{res['split'].replace(' ', '_')}.json", res)
    elif args.command == "evaluate":
        res = ex.run_evaluate(cfg, workdir, args.method, args.steps, args.n, args.seed, args.device, args.checkpoint)
        write_json(workdir / f"metrics_{res['method']}_{res['steps']}steps.json", res)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

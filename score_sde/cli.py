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
    score-sde inpaint    --workdir runs/digits --mask half        # fill in the lower half of test digits
    score-sde colorize   --workdir runs/cifar                     # RGB data: colour the grey test images
    score-sde train-classifier --workdir runs/digits              # noise-conditional classifier for guidance
    score-sde sample     --workdir runs/digits --label 3 --guidance 2   # class-conditional / guided samples

``train`` writes ``WORKDIR/config.json``, ``log.jsonl``, ``checkpoints/`` and sample snapshots, and
resumes from the newest good checkpoint when run again. The other commands read the config from
``WORKDIR/config.json`` (``--config`` and ``--config.*`` overrides change it) and the EMA weights
of the newest checkpoint. Outputs: PNG grids for images, scatter plots for 2-D data, ``.npz``
arrays, metrics as JSON.

Errors: bad input or a bad environment (a missing or corrupt file, an unknown config key, a
checkpoint trained under another config, an absent device, a full or read-only disk, a busy run
directory, diverged training: :data:`score_sde.experiment.USER_ERRORS`) print one line
``score-sde COMMAND: error: ...`` and exit 1; ``--debug`` (anywhere on the line) or the
environment variable ``SCORE_SDE_DEBUG=1`` shows the full traceback instead. Any other exception
is a bug and shows its traceback. ``--config`` takes a Python config file (code: it runs, so use
only files you trust), a shipped name, or a JSON config such as a run's ``config.json`` (data:
nothing runs). ``--allow-config-mismatch`` loads (or resumes) a checkpoint under a config that
differs from the one it was trained with in what defines the model.

This module only parses arguments and dispatches: the operations are in
:mod:`score_sde.experiment`, the demo in :mod:`score_sde.demo`, conversion in
:mod:`score_sde.interop`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional, Sequence

from . import experiment as ex
from .compare import DEFAULT_BUDGETS, DEFAULT_SOLVERS, parse_list, run_compare
from .config import list_configs, load_run_config, parse_override_args
from .io import write_json

__all__ = ["main", "DEBUG_ENV"]

#: environment variable that turns on ``--debug`` (full tracebacks) when set to 1/true/yes
DEBUG_ENV = "SCORE_SDE_DEBUG"


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {v}")
    return v


def _allow_mismatch(sp):
    sp.add_argument("--allow-config-mismatch", action="store_true",
                    help="use a checkpoint even if it was trained under another SDE, network or data shape than "
                         "the config (default: an error naming the differing keys)")


# ---------------------------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (``score-sde sample: error: ... (see -h)``)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} -h)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="score-sde",
                description="Score-based generative models through SDEs: train, sample, likelihood, evaluate. "
                            "Config overrides: --config.SECTION.KEY=VALUE.",
                epilog=f"Errors print one line; --debug (anywhere) or {DEBUG_ENV}=1 shows the traceback. A "
                       "--config Python file is code (it runs): use only files you trust; a .json config (a run's "
                       "config.json) is read as data.")
    p.add_argument("--debug", action="store_true", help=f"show full tracebacks (also {DEBUG_ENV}=1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp, config_required=False):
        sp.add_argument("--workdir", required=True, help="run directory (checkpoints, config.json, outputs)")
        sp.add_argument("--config", required=config_required, default=None,
                        help="config: a Python file (code, runs: trust it), a shipped name such as vp/digits, or a "
                             "JSON config such as a run's config.json (data)"
                        + ("" if config_required else "; default: WORKDIR/config.json"))
        sp.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")

    sp = sub.add_parser("train", help="train (or resume) a model from a config")
    common(sp, config_required=False)
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    _allow_mismatch(sp)

    for name, hlp in (("sample", "draw samples with any solver of score_sde.sampling.SOLVERS"),
                      ("evaluate", "sample and compute metrics (JSON)")):
        sp = sub.add_parser(name, help=hlp)
        common(sp)
        sp.add_argument("--method", default=None, help="solver name (default: config.sampling.method)")
        sp.add_argument("--steps", type=_positive_int, default=None,
                        help="solver steps (default: config.sampling.steps for fixed-step solvers; adaptive ones "
                             "such as --method ode choose their own)")
        sp.add_argument("--n", type=_positive_int, default=None, help="number of samples")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--checkpoint", default=None, help="a checkpoint file (default: the newest in WORKDIR)")
        _allow_mismatch(sp)
        if name == "sample":
            sp.add_argument("--out", default=None, help="output path stem (default WORKDIR/samples/...)")
            _add_label_args(sp)

    sp = sub.add_parser("likelihood", help="bits/dim (images) or NLL (toy data) through the probability-flow ODE")
    common(sp)
    sp.add_argument("--split", default=None, choices=["train", "test"], help="data split (default config.eval.split)")
    sp.add_argument("--n", type=_positive_int, default=None, help="number of examples (default: the whole split)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--checkpoint", default=None)
    _allow_mismatch(sp)

    sp = sub.add_parser("demo", help="the main job: train on digits, compare discrete with continuous sampling, test bits/dim")
    sp.add_argument("--workdir", default="runs/demo")
    sp.add_argument("--config", default=None, help="another config to run the demo with (default: embedded digits)")
    sp.add_argument("--device", default=None)
    sp.add_argument("--quick", action="store_true", help="a 1-minute smoke run (few steps, small test subset)")
    sp.add_argument("--no-progress", action="store_true")
    _allow_mismatch(sp)

    sp = sub.add_parser("convert", help="convert a released checkpoint of the paper's code (checkpoint_N.pth of "
                        "yang-song/score_sde_pytorch) into this package's checkpoint format")
    sp.add_argument("src", help="the released checkpoint_N.pth")
    sp.add_argument("dst", help="where to write the converted checkpoint")
    sp.add_argument("--config", required=True, help="a reference config name (e.g. vp_cifar10_ddpmpp_continuous, "
                    "ncsnpp_cifar10; see score_sde.config.reference_names()) or a config file defining get_config()")
    _allow_mismatch(sp)

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
    _add_conditional_commands(sub, common)
    return p


def _one_line_warning(message, category, filename, lineno, line=None):
    return f"score-sde: {category.__name__}: {' '.join(str(message).split())}\n"


def _add_label_args(sp):
    from .controllable import GUIDANCE_SCALES

    sp.add_argument("--label", type=int, default=None, help="class to sample (a class-conditional model: "
                    "classifier-free guidance; an unconditional one: classifier guidance)")
    sp.add_argument("--guidance", type=float, default=None, help="guidance scale >= 0 (1: the plain conditional "
                    "score; >1 sharper towards the class; default: the documented scale, "
                    f"{GUIDANCE_SCALES['classifier-free']:g} for classifier-free and "
                    f"{GUIDANCE_SCALES['classifier']:g} for classifier guidance)")
    sp.add_argument("--classifier", default=None, help="classifier file for classifier guidance (default: "
                    "WORKDIR/classifier.pt when the model is unconditional)")


def _add_conditional_commands(sub, common):
    """The controllable-generation subcommands (score_sde.controllable)."""
    from .controllable import INPAINT_GUIDANCE, INPAINT_RESAMPLE

    def sampler_args(sp):
        sp.add_argument("--method", default=None, help="solver that supports after_step (default: config.sampling)")
        sp.add_argument("--steps", type=_positive_int, default=None, help="solver steps (default: config.sampling.steps)")
        sp.add_argument("--n", type=_positive_int, default=8, help="test images to complete (default 8)")
        sp.add_argument("--samples-per", type=_positive_int, default=4, help="completions per image (default 4)")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--split", default="test", choices=["train", "test"], help="observations from this split")
        sp.add_argument("--checkpoint", default=None)
        sp.add_argument("--out", default=None, help="output path stem")

    sp = sub.add_parser("inpaint", help="fill in masked pixels of test images (replacement method, RePaint)")
    common(sp)
    sp.add_argument("--mask", default="half", help="half | centre | random[:P] | a .png (white = observed) | "
                    "a .npy of booleans (default: half, the lower half filled in)")
    sp.add_argument("--resample", type=_positive_int, default=None,
                    help="RePaint resampling steps per step (1: plain replacement; default "
                    f"{INPAINT_RESAMPLE}, the measured choice, docs/conditional.md)")
    sp.add_argument("--guidance", type=float, default=None, help="reconstruction-guidance scale added to the "
                    f"replacement (0 with --resample 1: the paper's replacement alone; default {INPAINT_GUIDANCE:g})")
    sampler_args(sp)
    sp = sub.add_parser("colorize", help="colour the grey versions of test images (RGB data)")
    common(sp)
    sampler_args(sp)
    sp = sub.add_parser("train-classifier", help="train a noise-conditional classifier for classifier guidance "
                        "(writes WORKDIR/classifier.pt)")
    common(sp)
    sp.add_argument("--steps", type=_positive_int, default=2000, help="training steps (default 2000)")
    sp.add_argument("--batch-size", type=_positive_int, default=128)
    sp.add_argument("--lr", type=float, default=1e-3)
    sp.add_argument("--seed", type=int, default=0)


def _dispatch_conditional(args, cfg, workdir) -> Optional[dict]:
    from . import controllable as ctl

    if args.command == "inpaint":
        return ctl.run_inpaint(cfg, workdir, args.mask, args.n, args.samples_per, args.seed, args.method, args.steps,
                               args.resample, args.split, args.device, args.out, args.checkpoint,
                               guidance=args.guidance)
    if args.command == "colorize":
        return ctl.run_colorize(cfg, workdir, args.n, args.samples_per, args.seed, args.method, args.steps,
                                args.split, args.device, args.out, args.checkpoint)
    if args.command == "train-classifier":
        return ctl.run_train_classifier(cfg, workdir, n_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                        seed=args.seed, device=args.device)
    if args.command == "sample" and args.label is not None:
        res = ctl.run_sample_label(cfg, workdir, args.label, args.guidance, args.classifier, args.method, args.steps,
                                   args.n, args.seed, args.device, args.out, args.checkpoint)
        write_json(Path(res["npz"]).with_suffix(".json"), res)
        return res
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``score-sde`` / ``python -m score_sde``; returns the exit status.

    User errors (:data:`score_sde.experiment.USER_ERRORS`) print one line and return 1 (130 on
    Ctrl-C); with ``--debug`` or ``SCORE_SDE_DEBUG=1`` they propagate with their traceback. Other
    exceptions (bugs) always propagate."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    argv = [a for a in argv if a != "--debug"]
    parser = _parser()
    try:
        overrides, rest = parse_override_args(argv)
    except ValueError as e:
        print(f"score-sde: error: {e}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(rest)
    except SystemExit as e:          # -h, or a usage error already printed on one line
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        print("score-sde: error: give a command (see score-sde -h)", file=sys.stderr)
        return 2
    fmt = warnings.formatwarning
    if not debug:
        warnings.formatwarning = _one_line_warning
    try:
        return _dispatch(args, overrides)
    except ex.USER_ERRORS as e:
        if debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"score-sde {args.command}: error: {msg} (--debug for the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"score-sde {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = fmt


def _dispatch(args, overrides: List[str]) -> int:
    if args.command == "configs":
        for name in list_configs():
            print(name)
        return 0
    if args.command == "convert":
        print(f"wrote {ex.convert_checkpoint(args.src, args.dst, args.config, args.allow_config_mismatch)}")
        return 0
    if args.command == "demo":
        from .demo import run_demo

        res = run_demo(args.workdir, config=args.config, overrides=overrides, device=args.device, quick=args.quick,
                       progress=not args.no_progress, allow_config_mismatch=args.allow_config_mismatch)
        print(json.dumps(res["summary"], indent=2))
        return 0
    workdir = Path(args.workdir)
    if args.command == "train":
        if args.config is None and not (workdir / "config.json").is_file():
            raise ValueError("train needs --config (a file or a shipped name; see `score-sde configs`), or a "
                             "WORKDIR with config.json to resume")
        cfg = load_run_config(workdir, args.config, overrides)
        res = ex.run_train(cfg, workdir, device=args.device, progress=not args.no_progress,
                           allow_config_mismatch=args.allow_config_mismatch)
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
    res = _dispatch_conditional(args, cfg, workdir)
    if res is not None:
        print(json.dumps(res, indent=2))
        return 0
    if args.command == "sample" and (args.guidance is not None or args.classifier):
        raise ValueError("--guidance and --classifier need --label C (the class to sample)")
    if args.command == "sample":
        res = ex.run_sample(cfg, workdir, args.method, args.steps, args.n, args.seed, args.device, args.out,
                            args.checkpoint, allow_config_mismatch=args.allow_config_mismatch)
        write_json(Path(res["npz"]).with_suffix(".json"), res)
    elif args.command == "likelihood":
        res = ex.run_likelihood(cfg, workdir, args.split, args.n, args.seed, args.device, args.checkpoint,
                                allow_config_mismatch=args.allow_config_mismatch)
        write_json(workdir / f"likelihood_{res['split'].replace(' ', '_')}.json", res)
    elif args.command == "evaluate":
        res = ex.run_evaluate(cfg, workdir, args.method, args.steps, args.n, args.seed, args.device, args.checkpoint,
                              allow_config_mismatch=args.allow_config_mismatch)
        steps = "adaptive" if res["steps"] is None else f"{res['steps']}steps"
        write_json(workdir / f"metrics_{res['method']}_{steps}.json", res)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Rectified flow against VP on the 2-D checkerboard at the same training budget (issue 16).

Trains ``configs/vp/checkerboard.py`` (VP, eps-prediction, likelihood weighting, importance t) and
``configs/rectified_flow/checkerboard.py`` (linear interpolant, flow-velocity network, flow-matching
loss, uniform t) for the same number of steps, batch, model and optimiser, then measures the NLL
(nats) of the same fresh checkerboard points through each model's probability-flow ODE
(``score_sde.cli.run_likelihood``; the checkerboard's entropy is log 8 = 2.0794).

    OMP_NUM_THREADS=1 python benchmarks/rectified_flow_checkerboard.py --root runs/rf --steps 4000

Writes ROOT/rectified_flow_checkerboard.json. The stderr of each NLL is over points; the two runs
differ also by training noise (one seed each), which this script does not measure.
"""
import argparse
import json
import sys
import time
from pathlib import Path


from score_sde import cli

RUNS = {"vp": "vp/checkerboard", "rectified_flow": "rectified_flow/checkerboard"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="runs/rf")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--n-points", type=int, default=4000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--only", choices=sorted(RUNS), default=None)
    args = p.parse_args(argv)
    root = Path(args.root)
    out = {"steps": args.steps}
    for name, config in RUNS.items():
        if args.only and name != args.only:
            continue
        wd = root / name
        t0 = time.perf_counter()
        rc = cli.main(["train", "--config", config, "--workdir", str(wd), "--no-progress",
                       f"--config.training.n_iters={args.steps}", f"--config.training.snapshot_freq={args.steps}",
                       "--config.training.snapshot_sampling=false"])
        train_s = time.perf_counter() - t0
        cfg = cli.load_run_config(wd)
        res = cli.run_likelihood(cfg, wd, n=args.n_points, seed=args.seed)
        res.update(train_seconds=train_s, exit=rc, config=config)
        out[name] = res
        print(json.dumps({name: res}, indent=2), flush=True)
    if "vp" in out and "rectified_flow" in out:
        a, b = out["vp"], out["rectified_flow"]
        diff = b["nll_nats"] - a["nll_nats"]
        se = (a["nll_nats_stderr"] ** 2 + b["nll_nats_stderr"] ** 2) ** 0.5
        out["difference_nats"] = {"rf_minus_vp": diff, "stderr_points": se}
        print(json.dumps(out["difference_nats"]), flush=True)
    cli.write_json(root / "rectified_flow_checkerboard.json", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

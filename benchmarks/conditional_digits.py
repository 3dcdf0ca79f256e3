"""Class-conditional, guided and inpainted digits, judged by an independent classifier.

Two trained runs (``configs/vp/digits_conditional.py``: EDM-preconditioned MLP on the VP SDE):

* ``--cond W``: the class-conditional model (label dropout 0.2) -> classifier-free guidance;
* ``--uncond W``: the unconditional model with a noise-conditional classifier in ``W/classifier.pt``
  (``score-sde train-classifier``) -> classifier guidance.

For each guidance scale, ``--n`` samples of each class 0..9; the **evaluation** classifier is the
Digits FD network (:mod:`score_sde.evaluation.digits_features`: a clean-image MLP 64-256-64-10 trained
separately on the same training split, ~97.8% test accuracy), independent of the guidance classifier
(a noise-conditional residual MLP with LayerNorm and a time embedding, other seed). Reported per scale:
the mean and the worst per-class accuracy, and the Digits FD of the pooled samples (10 x n) against
the 360 test digits. Then inpainting: the lower half of every test digit masked, one completion each
(replacement; RePaint resampling r; replacement plus reconstruction guidance of scale w), the largest
change of an observed pixel and the evaluation classifier's accuracy against the originals' labels.

Run:  OMP_NUM_THREADS=2 python benchmarks/conditional_digits.py --cond runs/cond --uncond runs/uncond
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from score_sde import controllable as ctl
from score_sde import experiment as ex


def _samples(run, score_fn, n, method, steps, seed):
    x, nfe, _ = ctl._draw(run, score_fn, n, method, steps, seed)
    return x, nfe


def guided_table(run, kind, scales, n, method, steps, seed):
    rows = []
    for w in scales:
        t0 = time.perf_counter()
        xs, accs = [], []
        for c in range(10):
            if kind == "classifier-free":
                score_fn, _ = ctl.guided_score(run, c, w)
            else:
                score_fn, _ = ctl.guided_score(run, c, w, classifier=str(ctl.classifier_path(run.workdir)))
            x, nfe = _samples(run, score_fn, n, method, steps, seed + c)
            accs.append(ctl.digits_label_accuracy(x, run.data, torch.full((n,), c), run.workdir))
            xs.append(x)
        fd = ex.evaluate_model_samples(torch.cat(xs), run.data, run.cfg, run.workdir, seed=seed, device=run.device)
        rows.append({"kind": kind, "scale": w, "accuracy": sum(accs) / 10, "worst_class": min(accs),
                     "per_class": [round(a, 3) for a in accs], "digits_fd": fd["digits_fd"],
                     "nfe": nfe, "seconds": time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def inpaint_table(run, name, settings, method, steps, seed):
    rows = []
    n = run.data.raw("test").shape[0]
    for r, w in settings:
        res = ctl.run_inpaint(run.cfg, run.workdir, "half", n=n, samples_per=1, seed=seed, method=method, steps=steps,
                              resample=r, guidance=w, run=run,
                              out=str(run.workdir / "inpaint" / f"bench_half_r{r}_g{w:g}"))
        row = {"model": name, "resample": r, "reconstruction_guidance": w, "label_accuracy": res["label_accuracy"],
               "max_observed_change": res["max_observed_change"], "rmse_unobserved": res["rmse_unobserved"],
               "nfe": res["nfe"], "seconds": res["seconds"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cond", required=True, help="run directory of the class-conditional model")
    p.add_argument("--uncond", required=True, help="run directory of the unconditional model (+ classifier.pt)")
    p.add_argument("--scales", default="0,1,2,3")
    p.add_argument("--n", type=int, default=50, help="samples per class")
    p.add_argument("--method", default="euler_maruyama")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--inpaint", default="1:0,4:0,1:5,1:10",
                   help="inpainting settings RESAMPLE:GUIDANCE (RePaint resampling, reconstruction guidance)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the tables as JSON here")
    p.add_argument("--only", default="classifier-free,classifier,inpaint",
                   help="parts to run: classifier-free, classifier, inpaint (comma-separated)")
    p.add_argument("--inpaint-models", default="uncond,cond", help="which runs to inpaint with")
    args = p.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    settings = [(int(a), float(b)) for a, b in (s.split(":") for s in args.inpaint.split(","))]
    cond_run, uncond_run = ex.load_trained(args.cond), ex.load_trained(args.uncond)
    parts = args.only.split(",")
    out = {"args": vars(args)}
    if "classifier-free" in parts:
        out["classifier_free"] = guided_table(cond_run, "classifier-free", scales, args.n, args.method, args.steps,
                                              args.seed)
    if "classifier" in parts:
        out["classifier"] = guided_table(uncond_run, "classifier", scales, args.n, args.method, args.steps, args.seed)
    if "inpaint" in parts:
        runs = {"uncond": (uncond_run, "unconditional"), "cond": (cond_run, "conditional (null label)")}
        out["inpaint"] = [row for key in args.inpaint_models.split(",")
                          for row in inpaint_table(runs[key][0], runs[key][1], settings, args.method, args.steps,
                                                   args.seed)]
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()

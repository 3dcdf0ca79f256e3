"""Per-mode metrics of unipc / dpmpp_2m at the defaults (only method and steps named) on sharp 64-D
mixtures, under VP, sub-VP, VE and the schedules of score_sde.schedules, at 10 / 20 / 50 NFE.

Each cell: within-mode spread error, mode-centre error / its Monte Carlo floor, mode-weight TV / its
floor (score_sde.evaluation.modes). Run: ``OMP_NUM_THREADS=1 python benchmarks/schedules_fewstep.py``
(about 2 minutes on one core).
"""
import torch

import score_sde
from score_sde.evaluation import modes
torch.set_num_threads(1)
n = 4096
for seed in (3, 4):
    gm = modes.sharp_mixture(seed)
    fl = modes.mode_metrics_floor(gm, n, repeats=3, generator=torch.Generator().manual_seed(9))["mean"]
    print(f"mixture {seed}: floor spread {100*fl['spread']:.2f}%  centre {fl['centre']:.3f}  weight_tv {fl['weight_tv']:.4f}")
    sdes = {"vp": score_sde.VPSDE(), "subvp": score_sde.subVPSDE(), "ve": score_sde.VESDE(),
            "cosine": score_sde.CosineVPSDE(), "edm": score_sde.EDMSDE(), "rectified_flow": score_sde.LinearInterpolantSDE()}
    for method in ("unipc", "dpmpp_2m"):
        for steps in (10, 20, 50):
            row = []
            for name, sde in sdes.items():
                out = score_sde.sample(sde, gm.score_fn(sde), (n, 1, 8, 8), method=method, steps=steps - 1,
                                       generator=torch.Generator().manual_seed(1))
                m = modes.mode_metrics(gm, out.samples)
                row.append(f"{name} {100*m['spread']:.2f}%/{m['centre']/fl['centre']:.1f}x/{m['weight_tv']/max(fl['weight_tv'],1e-9):.1f}x")
            print(f"  {method} NFE {out.nfe}: " + " | ".join(row))
